"""The unlearning audit as a whole (evaluate/unlearning.py): the per-example attack under the null,
the headline privacy measure against the retrained model, and a verdict that weighs every audit."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from palimpsest.evaluate import mia
from palimpsest.evaluate.audits import overall_verdict
from palimpsest.evaluate.unlearning import audit_from_outputs

AUDITS = SimpleNamespace(population_mia=False, relearn=None, probe=False)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def memorising_signals(n: int, target_saw_forget: bool, seed: int = 0, n_models: int = 4):
    """Correct-class probabilities shaped like a memorising model's (per-example difficulty
    mu ~ N(5, 3), model-to-model noise N(0, 3), +3 on the logit for a model that trained on the
    example): a training set whose first half is the forget set, a test set of the same size,
    reference models each IN for half of the training set (LiRA's balanced masks), and a target
    that trained on the forget set or (the null) on neither forget nor test examples."""
    rng = np.random.default_rng(seed)
    mu_train, mu_test = rng.normal(5, 3, n), rng.normal(5, 3, n)
    forget = np.arange(n // 2)
    masks = mia.membership_masks(n_models, n, seed=seed)
    ref_train = _sigmoid(mu_train + rng.normal(0, 3, (n_models, n)) + 3 * masks)
    ref_test = _sigmoid(mu_test + rng.normal(0, 3, (n_models, n)))
    seen = np.zeros(n, bool)
    seen[forget] = target_saw_forget
    target_train = _sigmoid(mu_train + rng.normal(0, 3, n) + 3 * seen)
    target_test = _sigmoid(mu_test + rng.normal(0, 3, n))
    split = SimpleNamespace(forget=forget, retain=np.arange(n // 2, n), forget_classes=())
    reference_mia = {"forget": ref_train[:, forget], "test": ref_test, "forget_in": masks[:, forget]}
    return split, outputs_from(target_train, target_test), reference_mia


def outputs_from(train_prob, test_prob, train_targets=None, test_targets=None, train_pred=None, test_pred=None):
    """Stored outputs (collect_outputs' keys) of a model with these correct-class probabilities."""
    out = {}
    for part, prob, targets, pred in (("train", train_prob, train_targets, train_pred),
                                      ("test", test_prob, test_targets, test_pred)):
        targets = np.zeros(len(prob), np.int32) if targets is None else np.asarray(targets, np.int32)
        pred = targets if pred is None else np.asarray(pred, np.int32)
        out.update({f"{part}.pred": pred, f"{part}.targets": targets, f"{part}.correct_prob": prob,
                    f"{part}.loss": -np.log(np.maximum(prob, 1e-12)), f"{part}.entropy": np.zeros(len(prob))})
    return out


def test_per_example_attack_is_at_chance_under_the_null():
    """A target that trained on neither the forget nor the test examples: AUC 0.5 within its
    interval. Scoring test examples with all reference models but forget examples with their OUT
    half only (the audit before this fix) puts it at about 0.47, outside the interval."""
    split, outputs, ref = memorising_signals(8000, target_saw_forget=False)
    audit = audit_from_outputs(outputs, split, AUDITS, None, ref, seed=0)
    assert audit["reference_mia_auc_lo"] <= 0.5 <= audit["reference_mia_auc_hi"], audit
    assert audit["reference_mia_auc_hi"] - audit["reference_mia_auc_lo"] < 0.04
    # the defect, kept as a witness: negatives and population averaged over every reference model
    rng = np.random.default_rng(0)
    order = rng.permutation(len(outputs["test.targets"]))
    neg, pop = order[:4000], order[4000:]
    scores = mia.rmia_scores(np.r_[outputs["train.correct_prob"][split.forget], outputs["test.correct_prob"][neg]],
                             np.c_[ref["forget"], ref["test"][:, neg]], outputs["test.correct_prob"][pop],
                             ref["test"][:, pop], ref_x_in=np.c_[ref["forget_in"], np.zeros((4, 4000), bool)])
    unequal = mia.auc_interval(scores[:4000], scores[4000:])
    assert unequal["hi"] < 0.5


def test_per_example_attack_finds_members_and_says_how_sure_it_is():
    split, outputs, ref = memorising_signals(4000, target_saw_forget=True)
    audit = audit_from_outputs(outputs, split, AUDITS, None, ref, seed=0)
    assert audit["reference_mia_auc_lo"] > 0.6
    assert audit["reference_mia_n_positive"] == 2000 and audit["reference_mia_n_negative"] == 2000
    # 2,000 negatives reach an FPR of 1/2000: both low FPRs are resolvable here
    assert audit["reference_mia_tpr_at_1pct_fpr_resolved"] and audit["reference_mia_tpr_at_0.1pct_fpr_resolved"]
    split, outputs, ref = memorising_signals(800, target_saw_forget=True)    # 400 negatives
    audit = audit_from_outputs(outputs, split, AUDITS, None, ref, seed=0)
    assert audit["reference_mia_tpr_at_1pct_fpr_resolved"] and not audit["reference_mia_tpr_at_0.1pct_fpr_resolved"]


def test_privacy_is_two_sided_against_the_retrained_model():
    split, member, ref = memorising_signals(4000, target_saw_forget=True)
    _, null, _ = memorising_signals(4000, target_saw_forget=False)
    retrained = audit_from_outputs(null, split, AUDITS, None, ref, seed=0)
    kept = audit_from_outputs(member, split, AUDITS, retrained, ref, seed=0)
    assert kept["privacy_gap_lo"] > 0 and kept["verdict_privacy"] == "under-forgotten"
    assert kept["verdict"] == "under-forgotten" and kept["verdict_failed"] == ["privacy: under-forgotten"]
    same = audit_from_outputs(null, split, AUDITS, retrained, ref, seed=0)
    assert same["privacy_gap"] == 0 and same["verdict"] == "matches retrain" and same["verdict_failed"] == []
    # Pushed below a model that never saw the data: the forget set looks LESS like members.
    over = dict(null)
    over["train.correct_prob"] = null["train.correct_prob"].copy()
    over["train.correct_prob"][split.forget] *= 0.3
    pushed = audit_from_outputs(over, split, AUDITS, retrained, ref, seed=0)
    assert pushed["privacy_gap_hi"] < 0 and pushed["verdict_privacy"] == "over-forgotten"


def _class_request_outputs(forget_acc: float, relearn_curve, n: int = 1000, seed: int = 0):
    """Outputs of a 10-class model after forgetting class 3, with a given forget accuracy and
    relearning curve; everything else identical to the retrained model's."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 10
    test_targets = np.arange(n) % 10
    pred = targets.copy()
    forget = np.flatnonzero(targets == 3)
    pred[forget[: round((1 - forget_acc) * len(forget))]] = 4
    test_pred = test_targets.copy()
    test_pred[test_targets == 3] = 4
    out = outputs_from(rng.uniform(0.5, 1, n), rng.uniform(0.5, 1, n), targets, test_targets, pred, test_pred)
    out["relearn.accuracy"] = np.asarray(relearn_curve, float)
    split = SimpleNamespace(forget=forget, retain=np.flatnonzero(targets != 3), forget_classes=(3,))
    return split, out


def test_verdict_weighs_relearning_and_names_the_audit_that_failed():
    """SSD's case in the issue: forget accuracy like retraining (avg gap ~0), but ten examples
    bring the class back to 50 % in two steps, against never for the retrained model."""
    audits = SimpleNamespace(population_mia=False, relearn=SimpleNamespace(n_examples=10), probe=False)
    split, retrained_out = _class_request_outputs(0.0, [0.0] * 4 + [0.05] * 17)
    retrained = audit_from_outputs(retrained_out, split, audits)
    _, shallow_out = _class_request_outputs(0.0, [0.0, 0.3, 0.55, 0.7] + [0.8] * 17)
    shallow = audit_from_outputs(shallow_out, split, audits, retrained)
    assert shallow["avg_gap"] == 0 and shallow["verdict_forget_accuracy"] == "matches retrain"
    assert shallow["relearn_steps_to_50pct"] == 2 and shallow["verdict_relearning"] == "under-forgotten"
    assert shallow["verdict"] == "under-forgotten" and shallow["verdict_failed"] == ["relearning: under-forgotten"]
    _, deep_out = _class_request_outputs(0.0, [0.0] * 4 + [0.06] * 17)
    assert audit_from_outputs(deep_out, split, audits, retrained)["verdict"] == "matches retrain"


def test_overall_verdict_by_hand():
    assert overall_verdict({"a": "matches retrain", "b": "undefined", "utility": "above retrain"}) == \
        ("matches retrain", [])
    assert overall_verdict({"a": "over-forgotten", "b": "over-forgotten"}) == \
        ("over-forgotten", ["a: over-forgotten", "b: over-forgotten"])
    assert overall_verdict({"a": "under-forgotten", "b": "over-forgotten"})[0] == "mixed"
    assert overall_verdict({"a": "matches retrain", "utility": "below retrain"}) == \
        ("utility loss", ["utility: below retrain"])
    assert overall_verdict({"a": "undefined"}) == ("undefined", [])


@pytest.mark.parametrize("forget_acc, label", [(0.0, "matches retrain"), (0.5, "under-forgotten")])
def test_forget_accuracy_still_counts(forget_acc, label):
    split, retrained_out = _class_request_outputs(0.0, [0.0])
    retrained = audit_from_outputs(retrained_out, split, AUDITS)
    _, out = _class_request_outputs(forget_acc, [0.0])
    audit = audit_from_outputs(out, split, AUDITS, retrained)
    assert audit["verdict_forget_accuracy"] == label and audit["verdict"] == label
