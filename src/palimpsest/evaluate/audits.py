"""Unlearning audits: model outputs computed once, then pure functions over them.

`model_outputs` runs a model over a set in batches and keeps, per example, everything the audits
read (prediction, loss, confidences, entropies, LiRA's logit-scaled confidence). Every number
below is a pure function of those arrays, so a run stores the outputs and any audit can be
recomputed (the design of evaluate/metrics.py). Membership inference lives in evaluate/mia.py,
relearning in evaluate/relearn.py, linear probes in evaluate/probe.py; docs/METRICS.md
("Unlearning audits") writes each formula once.

Every unlearning number is read next to the model retrained without the forget set (the exact
oracle): `avg_gap` (SalUn's metric) and `compare_to_reference` both take it as the reference.
Forget and retain accuracy are measured on the TRAINING forget / retain sets, never on
validation splits (a trap seen in published code, see ANCHORS.md).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import ConfigError

# Per-example arrays returned by model_outputs (besides "targets").
OUTPUT_KEYS = ("pred", "loss", "confidence", "correct_prob", "entropy", "modified_entropy",
               "scaled_confidence")

# The four terms of SalUn's "avg gap" (Fan et al., "SalUn: Empowering Machine Unlearning via
# Gradient-based Weight Saliency in Both Image Classification and Generation", 2024).
AVG_GAP_KEYS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_score")

LABELS = ("under-forgotten", "matches retrain", "over-forgotten", "undefined")

# Floor for probabilities inside logarithms of the modified entropy (the role of SalUn's 1e-30).
_LOG_FLOOR = 1e-30


# -- model level -------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def model_outputs(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor | np.ndarray,
                  batch_size: int = 2048, device: torch.device | str | None = None,
                  keep_logits: bool = False) -> dict[str, np.ndarray]:
    """Per-example outputs of `model` (in eval mode, without gradients) on (inputs, targets).

    Returns numpy arrays of length N:
      pred               argmax of the logits
      loss               cross-entropy −log p_y
      confidence         top-1 softmax probability max_j p_j
      correct_prob       p_y, the probability of the true class (SalUn's and SCRUB's "confidence"
                         feature, RMIA's signal)
      entropy            −Σ_j p_j log p_j
      modified_entropy   −(1−p_y) log p_y − Σ_{j≠y} p_j log(1−p_j) (Song & Mittal, "Systematic
                         Evaluation of Privacy Risks of Machine Learning Models", 2021)
      scaled_confidence  φ = log(p_y / (1 − p_y)) computed from the logits as
                         z_y − logsumexp_{j≠y} z_j, so it stays finite when p_y rounds to 1
                         (LiRA's statistic; Carlini et al., "Membership Inference Attacks From
                         First Principles", 2022)
      targets            the labels, as int64
      logits             (N, C), only with keep_logits=True
    Probabilities are computed in float64 from the logits. The model's train/eval mode is restored.
    """
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if len(inputs) != len(targets_t):
        raise ConfigError("inputs and targets differ in length", expected="one target per input",
                          got=f"{len(inputs)} inputs, {len(targets_t)} targets")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in OUTPUT_KEYS + ("logits",)}
    try:
        for start in range(0, len(targets_t), batch_size):
            x = inputs[start:start + batch_size].to(device)
            y = targets_t[start:start + batch_size].to(device)
            logits = model(x).double()
            for key, value in _outputs_from_logits(logits, y).items():
                parts[key].append(value.cpu())
            if keep_logits:
                parts["logits"].append(logits.float().cpu())
    finally:
        model.train(was_training)
    out: dict[str, np.ndarray] = {}
    for key in OUTPUT_KEYS:
        dtype = torch.long if key == "pred" else torch.float64
        out[key] = torch.cat(parts[key]).numpy() if parts[key] else torch.zeros(0, dtype=dtype).numpy()
    out["targets"] = targets_t.numpy().astype(np.int64)
    if keep_logits:
        out["logits"] = torch.cat(parts["logits"]).numpy() if parts["logits"] else np.zeros((0, 0), np.float32)
    return out


def _outputs_from_logits(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    rows = torch.arange(len(y), device=logits.device)
    log_py = log_probs[rows, y]
    p_y = probs[rows, y]
    # p log p = 0 where p = 0 (masked classes have logit -1e4, so p underflows to exactly 0).
    plogp = torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs))
    entropy = -plogp.sum(1)
    log_1m = torch.log1p(-probs).clamp_min(np.log(_LOG_FLOOR))
    others = (probs * log_1m).sum(1) - p_y * log_1m[rows, y]
    modified_entropy = -(1 - p_y) * log_py.clamp_min(np.log(_LOG_FLOOR)) - others
    rest = logits.clone()
    rest[rows, y] = float("-inf")
    scaled = logits[rows, y] - torch.logsumexp(rest, dim=1)
    return {"pred": logits.argmax(1), "loss": -log_py, "confidence": probs.max(1).values,
            "correct_prob": p_y, "entropy": entropy, "modified_entropy": modified_entropy,
            "scaled_confidence": scaled}


def subset_outputs(outputs: Mapping[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """The same outputs restricted to `rows` (a boolean mask or indices), e.g. one class."""
    return {k: np.asarray(v)[rows] for k, v in outputs.items()}


# -- accuracies --------------------------------------------------------------------------------


def accuracy(pred, targets) -> float:
    """Fraction of predictions equal to the targets; NaN for an empty set."""
    pred, targets = np.asarray(pred), np.asarray(targets)
    if pred.shape != targets.shape:
        raise ConfigError("predictions and targets differ in shape", expected="one prediction per target",
                          got=f"{pred.shape} vs {targets.shape}")
    return float((pred == targets).mean()) if pred.size else float("nan")


def class_split_accuracy(pred, targets, classes: Sequence[int]) -> tuple[float, float]:
    """(accuracy on examples whose target is in `classes`, accuracy on the others)."""
    pred, targets = np.asarray(pred), np.asarray(targets)
    inside = np.isin(targets, list(classes))
    return accuracy(pred[inside], targets[inside]), accuracy(pred[~inside], targets[~inside])


def unlearning_accuracies(forget_pred, forget_targets, retain_pred, retain_targets, test_pred, test_targets,
                          forget_classes: Sequence[int] = ()) -> dict[str, float]:
    """Forget, retain and test accuracy; with `forget_classes` (class forgetting) also the test
    accuracy on the forgotten classes and on the other classes.

    forget_* / retain_* must be the model's predictions on the TRAINING forget and retain sets.
    Keys: forget_accuracy, retain_accuracy, test_accuracy[, test_forget_class_accuracy,
    test_other_accuracy]. SalUn's "unlearning accuracy" UA is 1 − forget_accuracy.
    """
    out = {"forget_accuracy": accuracy(forget_pred, forget_targets),
           "retain_accuracy": accuracy(retain_pred, retain_targets),
           "test_accuracy": accuracy(test_pred, test_targets)}
    if len(forget_classes):
        inside, other = class_split_accuracy(test_pred, test_targets, forget_classes)
        out["test_forget_class_accuracy"], out["test_other_accuracy"] = inside, other
    return out


# -- against the retrained model ---------------------------------------------------------------


def avg_gap(result: Mapping[str, float], reference: Mapping[str, float],
            keys: Sequence[str] = AVG_GAP_KEYS) -> float:
    """SalUn's average gap: mean over `keys` of |result[k] − reference[k]|, the reference being
    the model retrained without the forget set. Lower is better; 0 means indistinguishable from
    retraining on these four numbers.

    Default keys: forget_accuracy, retain_accuracy, test_accuracy, mia_score (values in [0, 1];
    multiply by 100 for SalUn's points). Using 1 − forget_accuracy (SalUn's UA) or
    mia_efficacy = 1 − mia_score gives the same gap. NaN if any term is NaN: a gap over fewer
    terms would not be comparable.
    """
    missing = [k for k in keys if k not in result or k not in reference]
    if missing:
        raise ConfigError("avg_gap needs every term in both the result and the retrained reference",
                          expected=f"keys {list(keys)}", got=f"missing {missing}",
                          fix="compute the accuracies with unlearning_accuracies and the MIA score with "
                              "mia.population_attack for both models")
    gaps = [abs(float(result[k]) - float(reference[k])) for k in keys]
    return float("nan") if any(np.isnan(gaps)) else float(np.mean(gaps))


def compare_to_reference(value: float, reference_value: float, tolerance: float = 0.02,
                         higher_means_remembered: bool = True) -> str:
    """Label an unlearned model's number against the retrained model's.

    "under-forgotten": the model still looks more like it saw the forget set than the retrained
    model does; "over-forgotten": it looks LESS like a member than a model that never saw the
    data (detectable in itself, e.g. a forget accuracy or MIA score far below retrain's);
    "matches retrain": within `tolerance` (absolute). "undefined" when either value is NaN.

    `higher_means_remembered` is True for forget accuracy, MIA score (fraction predicted member),
    attack AUC and TPR; pass False for SalUn's MIA efficacy or the unlearning accuracy UA.
    """
    if tolerance < 0:
        raise ConfigError("tolerance must be non-negative", expected="tolerance >= 0", got=tolerance)
    if np.isnan(value) or np.isnan(reference_value):
        return "undefined"
    diff = float(value) - float(reference_value)
    if not higher_means_remembered:
        diff = -diff
    if diff > tolerance:
        return "under-forgotten"
    if diff < -tolerance:
        return "over-forgotten"
    return "matches retrain"


def binomial_tolerance(p: float, n: int, z: float = 2.0) -> float:
    """z standard errors of a proportion p measured on n examples: z·sqrt(p(1−p)/n). A tolerance
    for `compare_to_reference` that reflects the size of the forget set (NaN for n = 0)."""
    if n <= 0:
        return float("nan")
    p = min(max(float(p), 0.0), 1.0)
    return float(z * np.sqrt(p * (1 - p) / n))


def compare_interval(low: float, high: float) -> str:
    """Label a difference (unlearned − retrained) from its confidence interval [low, high]:
    "under-forgotten" when the whole interval is above 0, "over-forgotten" when it is below 0,
    "matches retrain" when it holds 0 (a two-sided test: looking LESS like a member than a model
    that never saw the data is detectable too); "undefined" with a NaN bound."""
    if np.isnan(low) or np.isnan(high):
        return "undefined"
    if low > 0:
        return "under-forgotten"
    if high < 0:
        return "over-forgotten"
    return "matches retrain"


UTILITY_LABELS = ("below retrain", "matches retrain", "above retrain", "undefined")


def overall_verdict(verdicts: Mapping[str, str]) -> tuple[str, list[str]]:
    """One verdict over every audit's label ({audit: label}), and the audits that failed.

    "matches retrain" only when every audit matches (an utility above the retrained model's is not
    a failure); otherwise "under-forgotten" / "over-forgotten" when every failing audit says so,
    "utility loss" when only the utility fell below retraining, "mixed" for any other mix.
    Undefined audits (not measurable here) are skipped; "undefined" when none is defined. The
    failures read "<audit>: <label>", in the order given."""
    defined = {k: v for k, v in verdicts.items() if v != "undefined"}
    if not defined:
        return "undefined", []
    failed = {k: v for k, v in defined.items() if v not in ("matches retrain", "above retrain")}
    if not failed:
        return "matches retrain", []
    kinds = set(failed.values())
    verdict = ("utility loss" if kinds == {"below retrain"} else next(iter(kinds)) if len(kinds) == 1 else "mixed")
    return verdict, [f"{k}: {v}" for k, v in failed.items()]


__all__ = [
    "AVG_GAP_KEYS",
    "LABELS",
    "UTILITY_LABELS",
    "OUTPUT_KEYS",
    "accuracy",
    "avg_gap",
    "binomial_tolerance",
    "class_split_accuracy",
    "compare_interval",
    "compare_to_reference",
    "overall_verdict",
    "model_outputs",
    "subset_outputs",
    "unlearning_accuracies",
]
