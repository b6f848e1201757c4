"""The audit of one unlearned model against the retrained reference (used by the unlearning runner).

Accuracies are measured on the TRAINING forget and retain sets and on the test set (never on a
validation split standing in for them); for class forgetting the test set is also split into the
forgotten classes and the rest. The membership attacks, relearning and probe audits come from
`evaluate.audits`, `evaluate.mia`, `evaluate.relearn` and `evaluate.probe`.
"""
from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predictions(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 2048) -> np.ndarray:
    model.eval()
    return torch.cat([model(inputs[i:i + batch_size]).argmax(1) for i in range(0, len(inputs), batch_size)]
                     ).numpy() if len(inputs) else np.zeros(0, np.int64)


def _acc(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def audit_model(model, data, split, audits, reference: dict | None = None) -> dict:
    """Numbers for one model; `reference` is the retrained model's audit (None for the reference)."""
    x, y = data.x_train, data.y_train.numpy()
    forget, retain = split.forget, split.retain
    test_pred = predictions(model, data.x_test)
    yt = data.y_test.numpy()
    out = {
        "forget_accuracy": _acc(predictions(model, x[torch.as_tensor(forget)]), y[forget]),
        "retain_accuracy": _acc(predictions(model, x[torch.as_tensor(retain)]), y[retain]),
        "test_accuracy": _acc(test_pred, yt),
    }
    if split.forget_classes:
        in_forget = np.isin(yt, split.forget_classes)
        out["test_accuracy_forgotten_classes"] = _acc(test_pred[in_forget], yt[in_forget])
        out["test_accuracy_other_classes"] = _acc(test_pred[~in_forget], yt[~in_forget])
    if reference is not None:
        keys = [k for k in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_score") if k in out]
        out["avg_gap"] = float(np.mean([abs(out[k] - reference[k]) for k in keys]))
    return out
