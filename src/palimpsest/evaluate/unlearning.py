"""The audit of one unlearned model against the retrained reference (used by the unlearning runner).

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

from .audits import avg_gap, binomial_tolerance, compare_to_reference, model_outputs, subset_outputs, unlearning_accuracies
from .mia import ReferenceModels, population_attack, reference_outputs, rmia_scores, roc_metrics

POPULATION_FEATURES = ("loss", "correct_prob", "entropy")


def _features(outputs: dict) -> np.ndarray:
    return np.stack([outputs[k] for k in POPULATION_FEATURES], axis=1)


def audit_model(model, data, split, audits, reference: dict | None = None,
                reference_models: ReferenceModels | None = None, seed: int = 0) -> dict:
    """Numbers for one model; `reference` is the retrained model's audit (None when auditing the
    reference itself). `data` has x_train/y_train/x_test/y_test tensors; `split` the forget and
    retain indices; `audits` the AuditSpec."""
    forget_idx, retain_idx = torch.as_tensor(split.forget), torch.as_tensor(split.retain)
    train_out = model_outputs(model, data.x_train, data.y_train)
    test_out = model_outputs(model, data.x_test, data.y_test)
    forget_out = subset_outputs(train_out, split.forget)
    retain_out = subset_outputs(train_out, split.retain)
    out = unlearning_accuracies(forget_out["pred"], forget_out["targets"], retain_out["pred"], retain_out["targets"],
                                test_out["pred"], test_out["targets"], forget_classes=split.forget_classes)
    if audits.population_mia:
        attack = population_attack(_features(retain_out), _features(test_out), _features(forget_out), seed=seed)
        out["mia_score"], out["mia_auc"] = attack["mia_score"], attack["auc"]
    if reference_models is not None:
        out.update(_reference_attack(model, data, split, reference_models, train_out, test_out, seed))
    if audits.relearn is not None:
        out.update(_relearn(model, data, split, audits.relearn, seed))
    if audits.probe and split.forget_classes:
        from .probe import linear_probe
        probe_rows = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[:5000]
        p = linear_probe(model, data.x_train[probe_rows], data.y_train[probe_rows], data.x_test, data.y_test,
                         forget_classes=split.forget_classes)
        out["probe_accuracy"], out["probe_forget_class_accuracy"] = p["accuracy"], p["forget_class_accuracy"]
    if reference is not None:
        out["avg_gap"] = avg_gap(out, reference, keys=[k for k in ("forget_accuracy", "retain_accuracy",
                                                                   "test_accuracy", "mia_score") if k in out])
        def verdict(key: str) -> str:
            # the tolerance grows with the sampling noise of a proportion over the forget set
            tolerance = max(0.02, binomial_tolerance(reference[key], len(split.forget)))
            return compare_to_reference(out[key], reference[key], tolerance)

        out["verdict_forget_accuracy"] = verdict("forget_accuracy")
        if "mia_score" in out:
            out["verdict_mia"] = verdict("mia_score")
    del forget_idx, retain_idx
    return out


def _reference_attack(model, data, split, refs: ReferenceModels, train_out, test_out, seed) -> dict:
    """Per-example RMIA: positives = the forget set (members of the original training set),
    negatives = half of the test set, population z = the other half.

    When whole classes are forgotten both come from the test examples of those classes (half
    negatives, half z): the attack must tell members from non-members of the same classes.
    Against all-class negatives it would only be telling the forgotten classes from the rest (a
    model retrained without them would score an AUC far below 0.5 instead of ~0.5), and against a
    z of other classes every score of a forgotten-class example would saturate at 0."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y_test))
    if split.forget_classes:
        order = order[np.isin(data.y_test.numpy()[order], list(split.forget_classes))]
    neg, pop = order[: len(order) // 2], order[len(order) // 2:]
    ref_train = reference_outputs(refs, data.x_train[torch.as_tensor(split.forget)],
                                  data.y_train[torch.as_tensor(split.forget)])["correct_prob"]
    ref_test = reference_outputs(refs, data.x_test, data.y_test)["correct_prob"]
    forget_in = refs.masks[:, split.forget]
    target_x = np.concatenate([train_out["correct_prob"][split.forget], test_out["correct_prob"][neg]])
    ref_x = np.concatenate([ref_train, ref_test[:, neg]], axis=1)
    ref_x_in = np.concatenate([forget_in, np.zeros((len(refs.models), len(neg)), bool)], axis=1)
    scores = rmia_scores(target_x, ref_x, test_out["correct_prob"][pop], ref_test[:, pop], ref_x_in=ref_x_in,
                         ref_z_in=np.zeros((len(refs.models), len(pop)), bool), online=False)
    roc = roc_metrics(scores[: len(split.forget)], scores[len(split.forget):])
    return {"reference_mia_auc": roc["auc"], "reference_mia_tpr_at_1pct_fpr": roc["tpr_at_fpr_0.01"],
            "reference_mia_tpr_at_0.1pct_fpr": roc["tpr_at_fpr_0.001"]}


def _relearn(model, data, split, spec, seed) -> dict:
    from .relearn import relearn, steps_to_recover
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
    return {"relearn_curve": [float(a) for a in curve.accuracy],
            "relearn_steps_to_50pct": steps_to_recover(curve, 0.5)}
