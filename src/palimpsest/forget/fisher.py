"""Diagonal (empirical) Fisher information of a model's parameters, computed in batches.

Two estimators of E[(d loss / d theta)^2] with the true labels:

- "batch" (what Selective Synaptic Dampening's code does, "Fast Machine Unlearning Without
  Retraining Through Selective Synaptic Dampening", 2024): walk the data in consecutive mini-batches
  of `batch_size` (no shuffling), square the gradient of each batch's *mean* loss and average the
  squares over the number of batches (the last, possibly shorter, batch counts as one). Its value
  depends on the batch size (the gradient noise shrinks as 1/batch), so two importances are only
  comparable when computed with the same batch size; `DiagonalFisher` carries it for that check.
- "example": the mean over examples of each example's squared gradient (the Fisher of EWC), with
  per-example gradients from `torch.func.vmap` over a chunk of `batch_size` examples at once: one
  vectorised call per chunk, never a Python loop over examples.

`order="by_class"` walks the examples grouped by label (a stable sort by target) instead of in
their stored order, so the "batch" estimator sees batches of one class (except at class
boundaries). SSD's code measured its full-data importance that way (see forget/ssd.py).

The model is put in eval mode while the importance is measured (as SSD's code does: BatchNorm
uses its running statistics and is not updated, dropout is off) and its mode is restored after.
Only parameters with `requires_grad` get an importance. `.grad` fields are not touched.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError

Estimator = Literal["batch", "example"]
Order = Literal["stored", "by_class"]


@dataclass
class DiagonalFisher:
    """Parameter name -> importance tensor (same shape as the parameter), and how it was measured."""

    values: dict[str, torch.Tensor]
    estimator: str
    batch_size: int
    n_examples: int
    order: str = "stored"

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def __iter__(self):
        return iter(self.values)

    def items(self):
        return self.values.items()

    def to(self, device) -> DiagonalFisher:
        return DiagonalFisher({k: v.to(device) for k, v in self.values.items()}, self.estimator, self.batch_size,
                              self.n_examples, self.order)

    def check_matches(self, model: nn.Module, what: str = "importance") -> None:
        """Raise a ConfigError unless there is one tensor of the right shape per trainable parameter."""
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(set(params) - set(self.values))
        extra = sorted(set(self.values) - set(params))
        wrong = sorted(n for n in set(params) & set(self.values) if self.values[n].shape != params[n].shape)
        if missing or extra or wrong:
            raise ConfigError(f"the {what} does not belong to this model",
                              expected="one tensor per trainable parameter, with the parameter's shape",
                              got=f"missing {missing[:5]}, unknown {extra[:5]}, wrong shape {wrong[:5]}",
                              fix="recompute it for this model (the model changed since it was computed?)")


def _check(estimator: str, batch_size: int, n: int, order: str) -> None:
    if estimator not in ("batch", "example"):
        raise ConfigError("unknown Fisher estimator", expected="'batch' or 'example'", got=estimator)
    if order not in ("stored", "by_class"):
        raise ConfigError("unknown example order for the Fisher", expected="'stored' or 'by_class'", got=order)
    if batch_size < 1:
        raise ConfigError("bad batch size for the Fisher", expected="an integer >= 1", got=batch_size)
    if n == 0:
        raise ConfigError("cannot measure the importance of an empty set", expected="at least one example", got=0)


def diagonal_fisher(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 64,
                    estimator: Estimator = "batch", device: torch.device | str | None = None,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    order: Order = "stored") -> DiagonalFisher:
    """The diagonal empirical Fisher of `model` on (inputs, targets); see the module docstring.

    `loss_fn(logits, targets)` defaults to the mean cross-entropy (it must reduce by the mean)."""
    n = len(targets)
    _check(estimator, batch_size, n, order)
    if order == "by_class":
        grouped = torch.argsort(targets, stable=True)
        inputs, targets = inputs[grouped], targets[grouped]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_fn = loss_fn or F.cross_entropy
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    try:
        if estimator == "batch":
            n_batches = 0
            for start in range(0, n, batch_size):
                x = inputs[start:start + batch_size].to(device, non_blocking=True)
                y = targets[start:start + batch_size].to(device, non_blocking=True)
                grads = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc.add_(g.square())
                n_batches += 1
            divisor = n_batches
        else:
            from torch.func import functional_call, grad, vmap
            buffers = dict(model.named_buffers())
            frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}

            def example_loss(trainable: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                logits = functional_call(model, ({**trainable, **frozen}, buffers), (x.unsqueeze(0),))
                return loss_fn(logits, y.unsqueeze(0))

            per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
            detached = {name: p.detach() for name, p in zip(names, params)}
            for start in range(0, n, batch_size):
                x = inputs[start:start + batch_size].to(device, non_blocking=True)
                y = targets[start:start + batch_size].to(device, non_blocking=True)
                grads = per_example(detached, x, y)
                for acc, name in zip(total, names):
                    acc.add_(grads[name].square().sum(0))
            divisor = n
    finally:
        model.train(was_training)
    return DiagonalFisher({name: acc / divisor for name, acc in zip(names, total)}, estimator, batch_size, n, order)


__all__ = ["DiagonalFisher", "diagonal_fisher"]
