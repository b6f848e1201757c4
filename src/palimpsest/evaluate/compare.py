"""Paired comparison of two experiments over seeds: pure functions, no store, no scipy.

Two experiments that ran the same strategy on the same seeds give one value per seed on each side;
the seed is the pairing (same data order, same initial weights when the specs agree on them), so
the differences B − A per seed carry the comparison, not the two means apart.

- `paired(a, b)` pairs {seed: value} mappings by seed and says which seeds were left out (run on
  one side only, or undefined on one side), then summarises the differences:
- the mean difference with a Student t interval: mean ± t_{(1+c)/2, n−1} · s / √n, s the SAMPLE
  standard deviation of the differences (ddof = 1); the classic paired-t interval, as
  `scipy.stats.ttest_rel(b, a).confidence_interval(c)` gives it. Undefined (NaN) with fewer than
  two pairs.
- the exact two-sided sign test: under "B and A are exchangeable" each non-zero difference is
  positive with probability 1/2; p = min(1, 2 · P(Binomial(n', 1/2) ≤ min(#positive, #negative))),
  n' the number of non-zero differences (zero differences, |d| ≤ 1e-12, are ties and are dropped);
  scipy.stats.binomtest's two-sided p for p = 1/2. With n pairs the smallest possible p is 2^(1−n):
  three seeds can never give p < 0.25, however large the difference.
- the paired t-test's p-value (two-sided), for readers who want it beside the interval.

The t quantile and distribution function are computed here (regularised incomplete beta by its
continued fraction, Numerical Recipes §6.4) so the library does not depend on scipy; the tests
check them against scipy.stats where scipy is installed. Formulas: docs/METRICS.md, "Comparing
experiments".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

TIE = 1e-12          # a |difference| at most this is a tie for the sign test
INTERVAL = "t"       # which interval `paired` reports: Student t on the paired differences


# -- the t distribution -------------------------------------------------------------------------

def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_sf`, to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 1.0 - p
    low, high = 0.0, 1.0
    while t_sf(high, df) > target:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_sf(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# -- tests on paired differences --------------------------------------------------------------

def t_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The Student t interval for the mean of `differences` (see the module docstring); (NaN, NaN)
    with fewer than two values."""
    d = np.asarray(differences, dtype=float)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if d.size < 2:
        return float("nan"), float("nan")
    half = t_quantile((1.0 + confidence) / 2.0, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    mean = float(d.mean())
    return mean - half, mean + half


def t_test_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test that the mean difference is 0; NaN with fewer than two
    values, 1 when every difference is 0, 0 when they are all equal and not 0."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return float("nan")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return min(1.0, 2.0 * t_sf(abs(mean) / (sd / math.sqrt(d.size)), d.size - 1))


def sign_test_p(differences: Sequence[float], tie: float = TIE) -> float:
    """Exact two-sided sign test p-value (ties dropped; 1 when every difference is a tie)."""
    d = [float(x) for x in differences]
    positive = sum(x > tie for x in d)
    negative = sum(x < -tie for x in d)
    n = positive + negative
    if n == 0:
        return 1.0
    k = min(positive, negative)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n)


# -- pairing ----------------------------------------------------------------------------------

def _defined(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
        and not math.isnan(float(value))


@dataclass
class Paired:
    """The paired comparison of one quantity: B − A over the seeds both sides have a value for.

    `seeds` are the paired seeds (sorted) and `differences` B − A in that order; `only_a` / `only_b`
    are seeds with a value on one side only, `undefined` seeds present on both sides whose value is
    undefined (NaN) on at least one: all three are skipped. `mean_a` / `mean_b` are over the paired
    seeds only, so mean_b − mean_a = mean_difference."""

    seeds: list[int]
    differences: list[float]
    mean_a: float
    mean_b: float
    mean_difference: float
    sd_difference: float          # sample std (ddof = 1); NaN with fewer than two pairs
    ci_low: float
    ci_high: float
    confidence: float
    p_sign: float
    p_t: float
    only_a: list[int] = field(default_factory=list)
    only_b: list[int] = field(default_factory=list)
    undefined: list[int] = field(default_factory=list)
    interval: str = INTERVAL

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def skipped(self) -> list[int]:
        return sorted({*self.only_a, *self.only_b, *self.undefined})


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None], confidence: float = 0.95) -> Paired:
    """Pair `a` and `b` ({seed: value}) by seed and summarise B − A (see `Paired`). With no pair
    every statistic is NaN (the sign test's p too)."""
    present_a = {s for s, v in a.items() if _defined(v)}
    present_b = {s for s, v in b.items() if _defined(v)}
    seeds = sorted(present_a & present_b)
    only_a = sorted(present_a - set(b))
    only_b = sorted(present_b - set(a))
    undefined = sorted((set(a) | set(b)) - set(seeds) - set(only_a) - set(only_b))
    va = np.asarray([float(a[s]) for s in seeds])
    vb = np.asarray([float(b[s]) for s in seeds])
    d = vb - va
    nan = float("nan")
    low, high = t_interval(d, confidence) if d.size else (nan, nan)
    return Paired(seeds=seeds, differences=d.tolist(),
                  mean_a=float(va.mean()) if d.size else nan, mean_b=float(vb.mean()) if d.size else nan,
                  mean_difference=float(d.mean()) if d.size else nan,
                  sd_difference=float(d.std(ddof=1)) if d.size > 1 else nan,
                  ci_low=low, ci_high=high, confidence=confidence,
                  p_sign=sign_test_p(d) if d.size else nan, p_t=t_test_p(d),
                  only_a=only_a, only_b=only_b, undefined=undefined)


# -- what differs between two settings trees -------------------------------------------------

MISSING = "<absent>"   # the value shown for a field one side does not have


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """{dotted path: leaf value} of nested mappings; lists and other values are leaves."""
    if isinstance(tree, Mapping) and tree:
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree} if prefix else {}


def settings_diff(a: Mapping, b: Mapping) -> list[tuple[str, object, object]]:
    """(path, value in A, value in B) for every leaf that differs, in A's order then B's new paths;
    a path one side lacks shows MISSING on that side."""
    fa, fb = flatten(a), flatten(b)
    paths = list(fa) + [p for p in fb if p not in fa]

    def empty_parent(p: str, mine: dict, other: dict) -> bool:
        # `settings: {}` on one side and `settings.x: 1` on the other is one difference, not two
        return mine.get(p) == {} and p not in other and any(q.startswith(p + ".") for q in other)

    return [(p, fa.get(p, MISSING), fb.get(p, MISSING)) for p in paths
            if (p not in fa or p not in fb or fa[p] != fb[p])
            and not empty_parent(p, fa, fb) and not empty_parent(p, fb, fa)]


__all__ = ["INTERVAL", "MISSING", "Paired", "TIE", "flatten", "paired", "regularized_beta", "settings_diff",
           "sign_test_p", "t_interval", "t_quantile", "t_sf", "t_test_p"]
