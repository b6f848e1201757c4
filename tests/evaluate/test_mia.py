"""Membership inference audits: hand-computed ROC / RMIA / LiRA values, and attacks that must rank
an over-fitted model's training examples above held-out ones while a model that never saw them
stays near chance."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from palimpsest.core.errors import ConfigError
from palimpsest.evaluate import mia
from palimpsest.evaluate.audits import binomial_tolerance, compare_to_reference, model_outputs
from palimpsest.learn import TrainingConfig, fit
from palimpsest.models import create_model

# -- ROC by hand -------------------------------------------------------------------------------

POS = np.array([0.9, 0.8, 0.7, 0.3])
NEG = np.array([0.85, 0.5, 0.4, 0.2, 0.1])


def test_roc_metrics_match_hand_computation():
    r = mia.roc_metrics(POS, NEG, fprs=(0.1, 0.2, 0.5))
    # Pairs with positive > negative: 5 + 4 + 4 + 2 = 15 of 20.
    assert r["auc"] == pytest.approx(0.75, abs=1e-12)
    assert r["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(4), np.zeros(5)], np.r_[POS, NEG]), abs=1e-12)
    # Upper envelope of the ROC: (0, .25) -> (.2, .75) -> (.4, .75) -> (.6, 1.0). The TPR is read at a
    # real threshold with FPR <= f, never interpolated between two thresholds.
    assert r["tpr_at_fpr_0.1"] == pytest.approx(0.25, abs=1e-12)
    assert r["tpr_at_fpr_0.2"] == pytest.approx(0.75, abs=1e-12)
    assert r["tpr_at_fpr_0.5"] == pytest.approx(0.75, abs=1e-12)
    assert mia.threshold_at_fpr(POS, NEG, 0.2) == (0.7, 0.2, 0.75)   # "member when score >= 0.7"
    # Five negatives resolve FPR steps of 0.2 only: the 0.1 value is the TPR at FPR 0, flagged.
    assert r["min_resolvable_fpr"] == pytest.approx(0.2)
    assert r["limited_by_sample_size_0.1"] == 1.0 and r["limited_by_sample_size_0.2"] == 0.0
    assert r["n_positive"] == 4 and r["n_negative"] == 5


def test_roc_metrics_default_fprs_and_ties():
    r = mia.roc_metrics([1.0, 1.0], [1.0, 0.0])
    assert r["auc"] == pytest.approx(0.75)                  # one tie counts one half
    assert set(r) >= {"tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "limited_by_sample_size_0.001"}
    assert math.isnan(mia.roc_metrics([], [0.1])["auc"])
    rng = np.random.default_rng(0)                          # many ties: rank formula == sklearn
    pos, neg = rng.integers(0, 4, 37).astype(float), rng.integers(0, 4, 23).astype(float)
    assert mia.roc_metrics(pos, neg)["auc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(37), np.zeros(23)], np.r_[pos, neg]), abs=1e-12)
    with pytest.raises(ConfigError, match="NaN"):
        mia.roc_metrics([np.nan], [0.0])


def test_tpr_at_fpr_takes_the_best_point_of_a_vertical_step():
    fpr, tpr = np.array([0.0, 0.0, 0.5, 0.5, 1.0]), np.array([0.0, 0.4, 0.4, 0.9, 1.0])
    assert mia.tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(0.4)
    assert mia.tpr_at_fpr(fpr, tpr, 0.25) == pytest.approx(0.4)    # no threshold between 0 and 0.5
    assert mia.tpr_at_fpr(fpr, tpr, 0.5) == pytest.approx(0.9)


def test_auc_interval_by_hand_and_its_coverage_under_the_null():
    # DeLong placements of the worked example: positives (1, .8, .8, .4), negatives (.25, .75, .75, 1, 1).
    r = mia.auc_interval(POS, NEG)
    var = np.var([1, .8, .8, .4], ddof=1) / 4 + np.var([.25, .75, .75, 1, 1], ddof=1) / 5
    assert r["auc"] == pytest.approx(0.75) and r["se"] == pytest.approx(math.sqrt(var)) == pytest.approx(0.185966, abs=1e-6)
    assert r["hi"] == 1.0 and r["lo"] == pytest.approx(0.75 - 1.959964 * r["se"], abs=1e-6)
    roc = mia.roc_metrics(POS, NEG)
    assert (roc["auc_se"], roc["auc_lo"], roc["auc_hi"]) == (r["se"], r["lo"], r["hi"])
    # Scores of one distribution on both sides: the 95 % interval covers 0.5 about 95 % of the time.
    rng = np.random.default_rng(0)
    covered = [(lambda i: i["lo"] <= 0.5 <= i["hi"])(mia.auc_interval(rng.normal(size=200), rng.normal(size=300)))
               for _ in range(400)]
    assert 0.92 <= np.mean(covered) <= 0.98


# -- population attack by hand -----------------------------------------------------------------


def test_population_attack_on_separable_features():
    members = np.linspace(0.0, 0.1, 40)             # low loss
    nonmembers = np.linspace(1.0, 2.0, 80)          # high loss
    targets = np.array([0.02, 0.05, 0.08, 1.2, 1.5, 1.8])
    for clf in mia.CLASSIFIERS:
        r = mia.population_attack(members, nonmembers, targets, classifier=clf)
        assert r["mia_score"] == pytest.approx(0.5)
        assert r["mia_efficacy"] == pytest.approx(0.5)
        assert r["heldout_member_rate"] == 0.0 and r["train_accuracy"] == 1.0
        assert r["n_heldout"] == 40 and r["n_train_per_class"] == 40 and r["n_targets"] == 6
        # Three targets outrank every held-out non-member; the other three sit inside their range.
        assert 0.5 < r["auc"] < 1.0
    capped = mia.population_attack(members, nonmembers, targets, max_train_per_class=10)
    assert capped["n_train_per_class"] == 10
    salun = mia.population_attack(members, nonmembers, targets, holdout=0.0)
    assert salun["n_heldout"] == 80 and salun["n_train_per_class"] == 40
    with pytest.raises(ConfigError):
        mia.population_attack(members, nonmembers, targets, classifier="forest")


# -- RMIA and LiRA by hand ---------------------------------------------------------------------


def test_rmia_scores_match_hand_computation():
    target_x, ref_x = np.array([0.9, 0.2]), np.array([[0.3, 0.4], [0.5, 0.4]])
    target_z, ref_z = np.array([0.5, 0.6, 0.1]), np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    # a = 1: p(x) = mean of OUT models -> ratio_x = (2.25, 0.5), ratio_z = (1.0, 2.0, 0.5).
    s = mia.rmia_scores(target_x, ref_x, target_z, ref_z, offline_a=1.0)
    np.testing.assert_allclose(s, [1.0, 0.0])               # 0.5 < 0.5 is false: strict
    s = mia.rmia_scores(target_x, ref_x, target_z, ref_z, offline_a=1.0, gamma=2.0)
    np.testing.assert_allclose(s, [2 / 3, 0.0])              # ratio_z < 1.125: {1.0, 0.5}
    # a = 0.3: p(x) = ½(1.3·p_OUT + 0.7).
    px = 0.5 * (1.3 * 0.4 + 0.7)
    pz = 0.5 * (1.3 * np.array([0.5, 0.3, 0.2]) + 0.7)
    ratio_z = target_z / pz
    expected = [(ratio_z < t / px).mean() for t in target_x]
    np.testing.assert_allclose(mia.rmia_scores(target_x, ref_x, target_z, ref_z), expected)


def test_rmia_online_uses_in_and_out_models():
    target_x, ref_x = np.array([0.6]), np.array([[0.8], [0.2]])
    ref_in = np.array([[True], [False]])
    target_z, ref_z = np.array([0.5, 0.5]), np.array([[0.4, 0.6], [0.4, 0.6]])
    # online: p(x) = ½(0.8 + 0.2) = 0.5 -> ratio 1.2; z ratios (a = 1, all OUT) 1.25 and 0.833.
    online = mia.rmia_scores(target_x, ref_x, target_z, ref_z, ref_x_in=ref_in, online=True, offline_a=1.0)
    np.testing.assert_allclose(online, [0.5])
    # offline: only the OUT model, p(x) = 0.2 -> ratio 3 beats both z.
    offline = mia.rmia_scores(target_x, ref_x, target_z, ref_z, ref_x_in=ref_in, offline_a=1.0)
    np.testing.assert_allclose(offline, [1.0])
    with pytest.raises(ConfigError, match="membership mask"):
        mia.rmia_scores(target_x, ref_x, target_z, ref_z, ref_x_in=np.ones((3, 1), bool))


def test_lira_scores_match_hand_computation():
    ref = np.array([[1.0, 5.0], [3.0, 7.0], [5.0, 1.0], [7.0, 3.0]])
    ref_in = np.array([[False, True], [False, True], [True, False], [True, False]])
    target = np.array([3.0, 5.0])
    # Per example, OUT: example 0 -> (1, 3), example 1 -> (1, 3): mean 2, std 1.
    off = mia.lira_scores(target, ref, ref_in, fix_variance=False)
    np.testing.assert_allclose(off, [np.log(norm.cdf(1.0)), np.log(norm.cdf(3.0))])
    # Online: IN (5, 7) -> mean 6, std 1; log N(x; 6, 1) - log N(x; 2, 1).
    on = mia.lira_scores(target, ref, ref_in, online=True, fix_variance=False)
    np.testing.assert_allclose(on, [-4.5 + 0.5, -0.5 + 4.5])
    # Pooled: residuals (±1, ±1) on 2 degrees of freedom per side -> σ² = 4 / 2.
    assert mia.lira_pooled_std(ref, ~ref_in) == pytest.approx(np.sqrt(2.0))
    np.testing.assert_allclose(mia.lira_scores(target, ref, ref_in), np.log(norm.cdf([1.0, 3.0] / np.sqrt(2))))
    np.testing.assert_allclose(mia.lira_scores(target, ref, ref_in, online=True), np.array(on) / 2)
    np.testing.assert_allclose(mia.lira_scores(target, ref, ref_in, std_out=1.0), off)
    with pytest.raises(ConfigError, match="IN reference model"):
        mia.lira_scores(target, ref, None, online=True)


def test_lira_pooled_variance_ignores_single_model_examples():
    # One OUT model per example: its spread is unknown, so the pooled σ cannot come from it
    # (a zero σ would give every such example an extreme score).
    ref, ref_in = np.array([[1.0, 2.0], [4.0, 8.0]]), np.array([[False, True], [True, False]])
    assert math.isnan(mia.lira_pooled_std(ref, ~ref_in))
    with pytest.raises(ConfigError, match="spread"):
        mia.lira_scores(np.array([1.0, 2.0]), ref, ref_in)
    # OUT means (1, 8): z = ((1 − 1) / 2, (2 − 8) / 2).
    np.testing.assert_allclose(mia.lira_scores(np.array([1.0, 2.0]), ref, ref_in, std_out=2.0),
                               np.log(norm.cdf([0.0, -3.0])))


def test_membership_masks_are_balanced_and_seeded():
    masks = mia.membership_masks(4, 50, seed=3)
    assert masks.shape == (4, 50) and (masks.sum(0) == 2).all()
    np.testing.assert_array_equal(masks, mia.membership_masks(4, 50, seed=3))
    assert not np.array_equal(masks, mia.membership_masks(4, 50, seed=4))
    single = mia.membership_masks(1, 10, seed=0)
    assert single.sum() == 5


def test_train_reference_models_fits_each_model_on_its_mask():
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    seen = []

    def fit_fn(model, xs, ys, seed):
        seen.append((xs.clone(), ys.clone(), seed))

    refs = mia.train_reference_models(lambda: torch.nn.Linear(3, 2), fit_fn, x, y, n_models=4, seed=0)
    assert len(refs) == 4 and refs.masks.shape == (4, 20)
    for k, (xs, ys, _) in enumerate(seen):
        idx = torch.from_numpy(np.flatnonzero(refs.masks[k]))
        assert torch.equal(xs, x[idx]) and torch.equal(ys, y[idx])
    again = mia.train_reference_models(lambda: torch.nn.Linear(3, 2), fit_fn, x, y, n_models=4, seed=0)
    for a, b in zip(refs.models, again.models):
        assert torch.equal(a.weight, b.weight)          # seeded initialisation
    out = mia.reference_outputs(refs, x, y)
    assert out["correct_prob"].shape == (4, 20)


# -- behaviour: an over-fitted MLP on digits ---------------------------------------------------
#
# Digits with fixed Gaussian pixel noise (sigma = 1 in standardised units): on clean digits a
# 300-example MLP generalises so well that held-out examples are nearly as confident as its
# training examples (loss-attack AUC about 0.6); the noise makes memorisation measurable.
# Members of the "original" model: retain (150) + forget (150) examples, trained to 100% training
# accuracy. The "retrained" model saw only the retain examples: for it the forget set is held-out
# data, and every attack must put it near chance.

OVERFIT = TrainingConfig(epochs=200, batch_size=300, lr=1e-3, optimizer="adam")


def _make_mlp():
    model = create_model("mlp", (1, 8, 8), 10, hidden=(128,))
    model.observe_classes(range(10))
    return model


def _fit(model, x, y, seed):
    fit(model, x, y, OVERFIT, seed=seed)


def _train(x, y, seed):
    torch.manual_seed(seed)
    model = _make_mlp()
    _fit(model, x, y, seed)
    return model.eval()


@pytest.fixture(scope="module")
def overfit(digits):
    x = torch.from_numpy(np.concatenate([digits.x_train, digits.x_test]))
    y = torch.from_numpy(np.concatenate([digits.y_train, digits.y_test]))
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    perm = np.random.default_rng(0).permutation(len(y))
    split = {"retain": perm[:150], "forget": perm[150:300], "pool_out": perm[300:600],
             "population": perm[600:1000], "test": perm[1000:]}
    original = _train(x[perm[:300]], y[perm[:300]], seed=1)
    retrained = _train(x[split["retain"]], y[split["retain"]], seed=2)
    # Reference pool: the original's training set plus as many non-members; each reference model
    # trains on a random half (300 examples, like the target).
    pool = np.concatenate([split["retain"], split["forget"], split["pool_out"]])
    refs = mia.train_reference_models(_make_mlp, _fit, x[pool], y[pool], n_models=4, seed=0)
    return {"x": x, "y": y, "split": split, "original": original, "retrained": retrained, "refs": refs,
            "pool": pool}


def _outputs(setup, model):
    x, y = setup["x"], setup["y"]
    return {name: model_outputs(model, x[idx], y[idx]) for name, idx in setup["split"].items()}


def test_the_original_model_overfits(overfit):
    out = _outputs(overfit, overfit["original"])
    assert (out["forget"]["pred"] == out["forget"]["targets"]).mean() == 1.0
    assert (out["test"]["pred"] == out["test"]["targets"]).mean() < 0.85


def test_population_attack_separates_original_from_retrained(overfit):
    results = {}
    for name in ("original", "retrained"):
        out = _outputs(overfit, overfit[name])
        results[name] = mia.population_attacks(out["retain"], out["test"], out["forget"],
                                               classifiers=("logistic", "svc"))
    for key in ("logistic/loss", "logistic/correct_prob", "svc/correct_prob"):
        orig, retr = results["original"][key], results["retrained"][key]
        assert orig["auc"] > 0.68, key
        assert abs(retr["auc"] - 0.5) < 0.1, key
        assert orig["mia_score"] > retr["mia_score"] + 0.3, key
        # A model that never saw the forget set predicts it "member" about as often as held-out data.
        assert abs(retr["mia_score"] - retr["heldout_member_rate"]) < 0.15, key
        label = compare_to_reference(orig["mia_score"], retr["mia_score"],
                                     binomial_tolerance(retr["mia_score"], 150))
        assert label == "under-forgotten"


def _per_example_inputs(setup, model):
    """Target and reference signals for forget (positives) and pool non-members (negatives),
    which both have IN and OUT reference models, and for population samples z."""
    x, y, split, refs = setup["x"], setup["y"], setup["split"], setup["refs"]
    pos_in_pool = {int(i): k for k, i in enumerate(setup["pool"])}
    data = {}
    for name in ("forget", "pool_out", "population"):
        idx = split[name]
        data[name] = {"target": model_outputs(model, x[idx], y[idx]),
                      "ref": mia.reference_outputs(refs, x[idx], y[idx]),
                      "in": refs.masks[:, [pos_in_pool[int(i)] for i in idx]] if name != "population" else None}
    return data


@pytest.mark.parametrize("attack", ["rmia_offline", "rmia_online", "lira_offline", "lira_online"])
def test_per_example_attacks_separate_original_from_retrained(overfit, attack):
    auc, tpr = {}, {}
    for name in ("original", "retrained"):
        d = _per_example_inputs(overfit, overfit[name])
        online = attack.endswith("online")
        if attack.startswith("rmia"):
            z = d["population"]
            scores = [mia.rmia_scores(d[s]["target"]["correct_prob"], d[s]["ref"]["correct_prob"],
                                      z["target"]["correct_prob"], z["ref"]["correct_prob"], ref_x_in=d[s]["in"],
                                      online=online) for s in ("forget", "pool_out")]
        else:
            # One call over positives and negatives, so both share the pooled σ.
            both = [np.concatenate([d[s]["target"]["scaled_confidence"] for s in ("forget", "pool_out")]),
                    np.concatenate([d[s]["ref"]["scaled_confidence"] for s in ("forget", "pool_out")], axis=1),
                    np.concatenate([d[s]["in"] for s in ("forget", "pool_out")], axis=1)]
            joint = mia.lira_scores(*both, online=online)
            n_forget = len(d["forget"]["target"]["scaled_confidence"])
            scores = [joint[:n_forget], joint[n_forget:]]
        r = mia.roc_metrics(*scores)
        auc[name], tpr[name] = r["auc"], r["tpr_at_fpr_0.01"]
        assert r["limited_by_sample_size_0.001"] == 1.0        # 300 negatives cannot resolve 0.1% FPR
    assert auc["original"] > 0.78, auc
    assert abs(auc["retrained"] - 0.5) < 0.1, auc
    assert tpr["original"] > tpr["retrained"] + 0.05, tpr
    assert compare_to_reference(auc["original"], auc["retrained"], 0.05) == "under-forgotten"


def test_gradient_ascent_past_retrain_is_over_forgotten(overfit):
    """Pushing the forget loss far above a held-out example's makes the forget set look LESS like
    members than under the retrained model: over-forgetting, which the comparison must flag."""
    x, y, forget = overfit["x"], overfit["y"], overfit["split"]["forget"]
    ascended = copy.deepcopy(overfit["original"])
    opt = torch.optim.SGD(ascended.parameters(), lr=0.05)
    for _ in range(30):
        loss = -torch.nn.functional.cross_entropy(ascended(x[forget]), y[forget])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ascended.eval()
    scores = {}
    for name, model in (("ascended", ascended), ("retrained", overfit["retrained"])):
        out = _outputs(overfit, model)
        scores[name] = mia.population_attack(out["retain"]["loss"], out["test"]["loss"], out["forget"]["loss"])
    tol = binomial_tolerance(scores["retrained"]["mia_score"], len(forget))
    assert compare_to_reference(scores["ascended"]["mia_score"], scores["retrained"]["mia_score"], tol) \
        == "over-forgotten"
    assert compare_to_reference(scores["ascended"]["mia_efficacy"], scores["retrained"]["mia_efficacy"], tol,
                                higher_means_remembered=False) == "over-forgotten"
