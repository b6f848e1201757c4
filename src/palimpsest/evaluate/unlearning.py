"""The audit of one unlearned model against the retrained reference, in two parts:

- `collect_outputs(model, ...)` runs the model once and returns per-example arrays (predictions,
  losses, correct-class probabilities and entropies on the training and test sets), the relearning
  curve and the linear probe's test predictions: the only part that touches the model, stored with
  each ledger entry;
- `audit_from_outputs(outputs, ...)` turns stored arrays into every audit number, a pure function
  (registered in the metrics registry as the unlearning audits), so a stored audit can be recomputed.

Accuracies are measured on the TRAINING forget and retain sets and on the test set (never on a
validation split standing in for them); for class forgetting the test set is also split into the
forgotten classes and the rest. Membership: a population attack (SalUn / SCRUB style: logistic
regression on loss, correct-class probability and entropy, trained on retain vs test, applied to
the forget set) and, when reference models are given, per-example RMIA. Optional: relearning and a
linear probe. Every number is next to the retrained model's, which is the target.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.registry import METRICS
from ..core.seeding import derive_seed
from .audits import avg_gap, binomial_tolerance, compare_to_reference, model_outputs, subset_outputs, unlearning_accuracies
from .mia import ReferenceModels, population_attack, reference_outputs, rmia_scores, roc_metrics

POPULATION_FEATURES = ("loss", "correct_prob", "entropy")
KEPT = ("pred", "loss", "correct_prob", "entropy", "targets")


def _features(outputs: dict) -> np.ndarray:
    return np.stack([outputs[k] for k in POPULATION_FEATURES], axis=1)


def collect_outputs(model, data, split, audits, seed: int = 0) -> dict[str, np.ndarray]:
    """Everything the audits read of `model`, as arrays: "train.<key>" and "test.<key>" for the
    per-example outputs (pred, loss, correct_prob, entropy, targets), "relearn.accuracy" (when the
    spec asks for relearning) and "probe.pred" / "probe.targets" (a linear probe, for class requests)."""
    out = {}
    for part, (x, y) in (("train", (data.x_train, data.y_train)), ("test", (data.x_test, data.y_test))):
        outputs = model_outputs(model, x, y)
        # class ids as int32; probabilities and losses stay float64, so a stored audit recomputes bit for bit
        out.update({f"{part}.{k}": outputs[k].astype(np.int32) if k in ("pred", "targets") else outputs[k]
                    for k in KEPT})
    if audits.relearn is not None:
        out["relearn.accuracy"] = _relearn_curve(model, data, split, audits.relearn, seed)
    if audits.probe and split.forget_classes:
        from .probe import model_features, probe_predict
        rows = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[:5000]
        out["probe.pred"] = probe_predict(model_features(model, data.x_train[rows]), data.y_train[rows],
                                          model_features(model, data.x_test))
        out["probe.targets"] = np.asarray(data.y_test)
    return out


def _part(outputs: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1:]: v for k, v in outputs.items() if k.startswith(prefix + ".")}


def audit_from_outputs(outputs: dict[str, np.ndarray], split, audits, reference: dict | None = None,
                       reference_mia: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
    """Every audit number of one model from its stored outputs (see `collect_outputs`); `reference`
    is the retrained model's audit (None when auditing the reference itself), `reference_mia` the
    reference models' correct-class probabilities on the forget set ("forget", (k, n_forget)) and
    the test set ("test", (k, n_test)) with their membership of the forget set ("forget_in").

    Against the reference, every audit gets a label (`verdict_<audit>`) and `verdict` weighs them
    all (`overall_verdict`), with `verdict_failed` naming the audits that failed: forget accuracy,
    privacy (the per-example attack's AUC minus the retrained model's, two-sided, with its
    interval: the headline privacy measure), relearning, the probe and utility (test accuracy on
    the classes kept). avg gap and the population attack are reported, not weighed."""
    train_out, test_out = _part(outputs, "train"), _part(outputs, "test")
    forget_out = subset_outputs(train_out, split.forget)
    retain_out = subset_outputs(train_out, split.retain)
    out = unlearning_accuracies(forget_out["pred"], forget_out["targets"], retain_out["pred"], retain_out["targets"],
                                test_out["pred"], test_out["targets"], forget_classes=split.forget_classes)
    if audits.population_mia:
        attack = population_attack(_features(retain_out), _features(test_out), _features(forget_out), seed=seed)
        out["mia_score"], out["mia_auc"] = attack["mia_score"], attack["auc"]
    if reference_mia is not None:
        out.update(_reference_attack(train_out, test_out, split, reference_mia, seed))
    if "relearn.accuracy" in outputs:
        from .relearn import steps_to_recover
        out["relearn_curve"] = [float(a) for a in outputs["relearn.accuracy"]]
        out["relearn_steps_to_50pct"] = steps_to_recover(outputs["relearn.accuracy"], 0.5)
    if "probe.pred" in outputs:
        from .audits import accuracy, class_split_accuracy
        pred, targets = outputs["probe.pred"], outputs["probe.targets"]
        out["probe_accuracy"] = accuracy(pred, targets)
        out["probe_forget_class_accuracy"] = class_split_accuracy(pred, targets, split.forget_classes)[0]
    if reference is not None:
        out["avg_gap"] = avg_gap(out, reference, keys=[k for k in ("forget_accuracy", "retain_accuracy",
                                                                   "test_accuracy", "mia_score") if k in out])
        out.update(_verdicts(out, reference, split, audits, test_out["targets"]))
    return out


def _verdicts(out: dict, reference: dict, split, audits, test_targets: np.ndarray) -> dict:
    """Each audit against the retrained model's, and the verdict over all of them."""
    from .audits import compare_interval, overall_verdict
    from .relearn import compare_relearning

    def proportion(key: str, n: int, floor: float = 0.02) -> str:
        # the tolerance grows with the sampling noise of a proportion over n examples
        if key not in out or key not in reference:
            return "undefined"
        return compare_to_reference(out[key], reference[key], max(floor, binomial_tolerance(reference[key], n)))

    n_forget_class_test = int(np.isin(test_targets, list(split.forget_classes)).sum()) if split.forget_classes else 0
    labels: dict[str, str] = {"forget accuracy": proportion("forget_accuracy", len(split.forget))}
    extra: dict = {"verdict_forget_accuracy": labels["forget accuracy"]}
    if "mia_score" in out:
        extra["verdict_mia"] = proportion("mia_score", len(split.forget))   # reported, not weighed
    if "reference_mia_auc" in out and "reference_mia_auc" in reference:
        gap = out["reference_mia_auc"] - reference["reference_mia_auc"]
        # the two AUCs share their negatives, so adding variances over-covers (a conservative interval)
        half = 1.959964 * float(np.hypot(out["reference_mia_auc_se"], reference["reference_mia_auc_se"]))
        extra.update(privacy_gap=gap, privacy_gap_lo=gap - half, privacy_gap_hi=gap + half)
        labels["privacy"] = extra["verdict_privacy"] = compare_interval(gap - half, gap + half)
    if out.get("relearn_curve") and reference.get("relearn_curve") and audits.relearn is not None:
        n_eval = n_forget_class_test if split.forget_classes else len(split.forget) - audits.relearn.n_examples
        compared = compare_relearning(out["relearn_curve"], reference["relearn_curve"], 0.5)
        ref_mean = float(np.mean(reference["relearn_curve"]))
        tolerance = max(0.05, binomial_tolerance(ref_mean, max(n_eval, 1)))
        extra["relearn_gap"] = compared["mean_accuracy_gap"]
        labels["relearning"] = extra["verdict_relearning"] = compare_to_reference(
            compared["mean_accuracy_gap"], 0.0, tolerance)
    if "probe_forget_class_accuracy" in out and "probe_forget_class_accuracy" in reference:
        labels["probe"] = extra["verdict_probe"] = proportion("probe_forget_class_accuracy", n_forget_class_test)
    utility = "test_other_accuracy" if "test_other_accuracy" in out else "test_accuracy"
    n_utility = len(test_targets) - n_forget_class_test
    label = proportion(utility, n_utility, floor=0.01)
    labels["utility"] = extra["verdict_utility"] = {"under-forgotten": "above retrain",
                                                    "over-forgotten": "below retrain"}.get(label, label)
    extra["verdict"], extra["verdict_failed"] = overall_verdict(labels)
    return extra


def reference_mia_outputs(refs: ReferenceModels, data, split) -> dict[str, np.ndarray]:
    """The reference models' correct-class probabilities on the forget set and the test set, and
    which of them trained on each forget example (the arrays `audit_from_outputs` reads)."""
    f = torch.as_tensor(split.forget)
    return {"forget": reference_outputs(refs, data.x_train[f], data.y_train[f])["correct_prob"],
            "test": reference_outputs(refs, data.x_test, data.y_test)["correct_prob"],
            "forget_in": refs.masks[:, split.forget]}


def audit_model(model, data, split, audits, reference: dict | None = None,
                reference_models: ReferenceModels | None = None, seed: int = 0) -> dict:
    """`audit_from_outputs(collect_outputs(model, ...), ...)`: every audit number of one model."""
    mia = reference_mia_outputs(reference_models, data, split) if reference_models is not None else None
    return audit_from_outputs(collect_outputs(model, data, split, audits, seed), split, audits, reference, mia, seed)


def _reference_attack(train_out, test_out, split, ref: dict[str, np.ndarray], seed) -> dict:
    """Per-example RMIA (offline): positives = the forget set (members of the original training
    set), negatives = half of the test set, population z = the other half.

    Members and non-members are scored alike: a forget example was in the training pool of some
    reference models, so only its OUT models estimate p(x); a test example is OUT for every one of
    them. Averaging a test example over all its models while a forget example gets only its OUT
    ones gives the two sides estimates of different noise, which biases the AUC (about −0.03 on a
    memorising MLP under the null; tests/evaluate/test_unlearning_audit.py). So every negative and
    population sample is scored with as many OUT models as a forget example (the count of a
    randomly drawn forget example; the models chosen at random).

    When whole classes are forgotten both come from the test examples of those classes (half
    negatives, half z): the attack must tell members from non-members of the same classes.
    Against all-class negatives it would only be telling the forgotten classes from the rest (a
    model retrained without them would score an AUC far below 0.5 instead of ~0.5), and against a
    z of other classes every score of a forgotten-class example would saturate at 0.

    Keys: reference_mia_auc with its DeLong standard error and 95 % interval (_se, _lo, _hi), TPR
    at 1 % and 0.1 % FPR at a real threshold with `..._resolved` (False when the negatives are
    too few to reach that FPR), n_positive / n_negative."""
    y_test = test_out["targets"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y_test))
    if split.forget_classes:
        order = order[np.isin(y_test[order], list(split.forget_classes))]
    neg, pop = order[: len(order) // 2], order[len(order) // 2:]
    n_forget = len(split.forget)
    forget_in = np.asarray(ref["forget_in"], dtype=bool)
    left_out = _like_members(forget_in, len(neg) + len(pop), np.random.default_rng(derive_seed("like_members", seed)))
    target_x = np.concatenate([train_out["correct_prob"][split.forget], test_out["correct_prob"][neg]])
    ref_x = np.concatenate([ref["forget"], ref["test"][:, neg]], axis=1)
    ref_x_in = np.concatenate([forget_in, left_out[:, :len(neg)]], axis=1)
    scores = rmia_scores(target_x, ref_x, test_out["correct_prob"][pop], ref["test"][:, pop], ref_x_in=ref_x_in,
                         ref_z_in=left_out[:, len(neg):], online=False)
    roc = roc_metrics(scores[:n_forget], scores[n_forget:])
    return {"reference_mia_auc": roc["auc"], "reference_mia_auc_se": roc["auc_se"],
            "reference_mia_auc_lo": roc["auc_lo"], "reference_mia_auc_hi": roc["auc_hi"],
            "reference_mia_tpr_at_1pct_fpr": roc["tpr_at_fpr_0.01"],
            "reference_mia_tpr_at_1pct_fpr_resolved": not roc["limited_by_sample_size_0.01"],
            "reference_mia_tpr_at_0.1pct_fpr": roc["tpr_at_fpr_0.001"],
            "reference_mia_tpr_at_0.1pct_fpr_resolved": not roc["limited_by_sample_size_0.001"],
            "reference_mia_n_positive": int(roc["n_positive"]), "reference_mia_n_negative": int(roc["n_negative"])}


def _like_members(forget_in: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n_models, n) masks that leave out of n non-members as many reference models as a forget
    example is IN for (each copies the count of a random forget example), so both sides are
    scored with the same number of OUT models."""
    n_models = forget_in.shape[0]
    counts = forget_in.sum(0)[rng.integers(0, forget_in.shape[1], size=n)] if forget_in.shape[1] else np.zeros(n, int)
    ranks = rng.random((n_models, n)).argsort(0).argsort(0)
    return ranks < counts[None, :]


def _relearn_curve(model, data, split, spec, seed) -> np.ndarray:
    from .relearn import relearn
    f = torch.as_tensor(split.forget)
    r = torch.as_tensor(split.retain)
    if split.forget_classes:
        in_forget = torch.as_tensor(np.isin(data.y_test.numpy(), split.forget_classes))
        eval_x, eval_y = data.x_test[in_forget], data.y_test[in_forget]
        control_x, control_y = data.x_test[~in_forget][:1000], data.y_test[~in_forget][:1000]
    else:
        # evaluate on the forget examples NOT fine-tuned on (relearn's default), never on the chosen ones
        eval_x, eval_y, control_x, control_y = None, None, data.x_test[:1000], data.y_test[:1000]
    curve = relearn(model, data.x_train[f], data.y_train[f], n_examples=spec.n_examples, steps=spec.steps, lr=spec.lr,
                    eval_x=eval_x, eval_y=eval_y, retain_x=data.x_train[r], retain_y=data.y_train[r],
                    n_retain=spec.n_examples, control_x=control_x, control_y=control_y, seed=seed)
    return np.asarray(curve.accuracy, dtype=float)


METRICS.register("unlearning_audit", summary="forget / retain / test accuracy, population and per-example "
                 "membership attacks, relearning steps, probe accuracy, avg gap and verdicts, from stored outputs",
                 kind="unlearn", needs=("outputs", "split", "reference", "reference_mia"))(audit_from_outputs)

__all__ = ["KEPT", "POPULATION_FEATURES", "audit_from_outputs", "audit_model", "collect_outputs",
           "reference_mia_outputs"]
