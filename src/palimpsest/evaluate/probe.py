"""Linear-probe audit: do the frozen features still separate the forgotten classes?

A model can stop predicting a class while its penultimate features still encode it (shallow
forgetting: e.g. only the head row was suppressed); a linear probe trained on those features
then recovers the class. A model retrained without the class never learned features for it and
is the reference. The probe is a multinomial logistic regression (scikit-learn) on standardised
features of `model.features(x)`, trained on a probe-training set that contains every class
(the forgotten ones included) and evaluated on held-out data. Linear probes after unlearning:
see "Unforgettable Generalization in Language Models" (Zhang et al., 2024).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from .audits import accuracy, class_split_accuracy


@torch.no_grad()
def model_features(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 2048,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Penultimate features `model.features(x)` in eval mode, as a float64 (N, D) array."""
    if not hasattr(model, "features"):
        raise ConfigError("the model has no `features` method", expected="a palimpsest Classifier "
                          "(create_model) or any module with features(x) -> (N, D)", got=type(model).__name__)
    if device is None:
        device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        parts = [model.features(inputs[s:s + batch_size].to(device)).flatten(1).double().cpu()
                 for s in range(0, len(inputs), batch_size)]
    finally:
        model.train(was)
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0))


def probe_predict(train_features, train_targets, test_features, C: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Fit the probe (standardised features, multinomial logistic regression) on the training pair
    and return its predictions on the test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    probe.fit(np.asarray(train_features), np.asarray(train_targets))
    return probe.predict(np.asarray(test_features))


def probe_from_features(train_features, train_targets, test_features, test_targets,
                        forget_classes: Sequence[int] = (), C: float = 1.0, max_iter: int = 2000) -> dict:
    """Fit the probe on (train_features, train_targets), evaluate on the test pair.

    Returns accuracy, forget_class_accuracy and other_accuracy (NaN without forget_classes),
    per_class_accuracy ({class: accuracy} over the test classes), n_train, n_test."""
    train_targets, test_targets = np.asarray(train_targets), np.asarray(test_targets)
    missing = sorted({int(c) for c in forget_classes} - set(train_targets.tolist()))
    if missing:
        raise ConfigError("the probe-training set lacks the forgotten classes",
                          expected="examples of every forgotten class in train_x / train_y",
                          got=f"no examples of classes {missing}",
                          fix="train the probe on a set that includes the forgotten classes (e.g. the full training set)")
    pred = probe_predict(train_features, train_targets, test_features, C, max_iter)
    out = {"accuracy": accuracy(pred, test_targets), "n_train": len(train_targets), "n_test": len(test_targets),
           "per_class_accuracy": {int(c): accuracy(pred[test_targets == c], test_targets[test_targets == c])
                                  for c in np.unique(test_targets)}}
    if len(forget_classes):
        out["forget_class_accuracy"], out["other_accuracy"] = class_split_accuracy(pred, test_targets, forget_classes)
    else:
        out["forget_class_accuracy"] = out["other_accuracy"] = float("nan")
    return out


def linear_probe(model: torch.nn.Module, train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y,
                 forget_classes: Sequence[int] = (), C: float = 1.0, max_iter: int = 2000,
                 batch_size: int = 2048) -> dict:
    """Linear probe on the frozen features of `model` (see module docstring); `model` is not
    changed. Compare forget_class_accuracy with the retrained model's (whose features never saw
    the class) and the original's: near the original's = the features still encode the class."""
    return probe_from_features(model_features(model, train_x, batch_size), np.asarray(train_y),
                               model_features(model, test_x, batch_size), np.asarray(test_y),
                               forget_classes, C, max_iter)


__all__ = ["linear_probe", "model_features", "probe_from_features", "probe_predict"]
