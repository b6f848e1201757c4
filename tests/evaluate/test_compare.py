"""The statistics of `palimpsest compare` (evaluate/compare.py): hand-computed values, and scipy.stats
where scipy is installed."""
import math

import numpy as np
import pytest

from palimpsest.evaluate.compare import (MISSING, paired, settings_diff, sign_test_p, t_interval, t_quantile, t_sf,
                                         t_test_p)

# Student t quantiles from tables (0.975: the 95% two-sided interval)
T975 = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263, 10: 2.2281388519649385,
        30: 2.0422724563012373}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], rel=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], rel=1e-9)
    assert t_sf(T975[df], df) == pytest.approx(0.025, rel=1e-9)


def test_a_t_interval_by_hand():
    # differences 1, 2, 3: mean 2, sample std 1, half-width t(0.975, 2) / sqrt(3)
    low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert (low, high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    # t = 2 / (1 / sqrt 3) = 2 sqrt 3 with 2 df: P(|T| > t) = 1 - t / sqrt(t^2 + 2) for 2 df
    t = 2 * math.sqrt(3)
    assert t_test_p([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert all(math.isnan(v) for v in t_interval([0.5]))   # one pair: no interval
    assert t_interval([0.1, 0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1))


def test_the_sign_test_by_hand():
    assert sign_test_p([1, 2, 3]) == 0.25                  # 2 * (1/2)^3: the smallest p with 3 pairs
    assert sign_test_p([1, 2, 3, 4, 5, 6, 7, -1]) == pytest.approx(2 * (1 + 8) / 256)
    assert sign_test_p([0.0, 0.0, 1.0]) == 1.0             # ties dropped: one informative pair
    assert sign_test_p([0.0, 0.0]) == 1.0
    assert sign_test_p([1, -1, 1, -1]) == 1.0


def test_pairs_are_made_by_seed_and_the_rest_is_reported():
    a = {0: 0.70, 1: 0.72, 2: float("nan"), 5: 0.8}
    b = {1: 0.75, 2: 0.74, 3: 0.9, 5: 0.82}
    r = paired(a, b)
    assert r.seeds == [1, 5] and r.differences == pytest.approx([0.03, 0.02])
    assert r.only_a == [0] and r.only_b == [3] and r.undefined == [2] and r.skipped == [0, 2, 3]
    assert r.mean_a == pytest.approx(0.76) and r.mean_b == pytest.approx(0.785)
    assert r.mean_b - r.mean_a == pytest.approx(r.mean_difference)
    assert r.sd_difference == pytest.approx(np.std([0.03, 0.02], ddof=1))
    none = paired({0: 0.5}, {1: 0.5})
    assert none.n == 0 and math.isnan(none.mean_difference) and math.isnan(none.p_sign)


def test_the_settings_diff_names_each_differing_leaf():
    a = {"training": {"lr": 0.05, "epochs": 1}, "strategies": {"er": {"settings": {"buffer_size": 200}},
                                                               "naive": {"settings": {}}}, "seeds": [0, 1]}
    b = {"training": {"lr": 0.1, "epochs": 1}, "strategies": {"er": {"settings": {"buffer_size": 500}},
                                                              "naive": {"settings": {"x": 1}}}, "seeds": [0, 1],
         "model": {"name": "mlp"}}
    assert settings_diff(a, b) == [("training.lr", 0.05, 0.1), ("strategies.er.settings.buffer_size", 200, 500),
                                   ("strategies.naive.settings.x", MISSING, 1), ("model.name", MISSING, "mlp")]
    assert settings_diff(a, a) == []


try:
    import scipy.stats as scipy_stats
except ImportError:  # the hand-computed checks above still run
    scipy_stats = None
needs_scipy = pytest.mark.skipif(scipy_stats is None, reason="scipy not installed: checked against hand-computed "
                                 "values only")


@needs_scipy
@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 19, 50, 400])
def test_the_t_distribution_matches_scipy(df):
    for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8)
    for t in (0.0, 0.3, 1.7, 4.0, 25.0):
        assert t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-8, abs=1e-15)


@needs_scipy
@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_paired_matches_scipy(n):
    rng = np.random.default_rng(n)
    a = rng.uniform(0.5, 0.9, n)
    b = a + rng.normal(0.01, 0.02, n)
    r = paired(dict(enumerate(a)), dict(enumerate(b)), confidence=0.9)
    reference = scipy_stats.ttest_rel(b, a)
    ci = reference.confidence_interval(0.9)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    assert r.p_t == pytest.approx(reference.pvalue, rel=1e-9)
    positive = int((b - a > 0).sum())
    assert r.p_sign == pytest.approx(scipy_stats.binomtest(positive, n, 0.5).pvalue)
