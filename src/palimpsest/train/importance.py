"""Diagonal importance of a model's parameters: the one implementation behind EWC's Fisher, MAS's
output sensitivity and SSD's selection (Fisher-forgetting and GS-LoRA will read it too).

Two estimators of E[stat(d loss / d theta)] over a data set:

- per example (`per_example_importance`): the mean over examples of stat(gradient of that example's
  loss), stat = square (the Fisher of EWC; Kirkpatrick et al. 2017) or abs (MAS; Aljundi et al.
  2018). Linear layers applied once to (batch, features) inputs take a shortcut: an example's weight
  gradient is the outer product delta_n x_n^T of its output gradient and input, so
  sum_n stat(delta_n x_n^T) = stat(delta)^T stat(x), one matrix product per chunk. Every other
  parameter gets per-example gradients from torch.func (vmap over grad), never a Python loop.
- per batch (`batch_importance`, what Selective Synaptic Dampening's code does, "Fast Machine
  Unlearning Without Retraining Through Selective Synaptic Dampening", 2024): walk the data in
  consecutive mini-batches of `batch_size` (no shuffling), square the gradient of each batch's mean
  loss and average the squares over the number of batches (a last, shorter batch counts as one).
  Its value depends on the batch size (gradient noise shrinks as 1/batch), so two such importances
  are only comparable when measured with the same batch size; `DiagonalImportance` carries it.

`diagonal_fisher` is the cross-entropy Fisher with the true labels by either estimator.
`order="by_class"` walks the examples grouped by label (a stable sort by target) instead of in their
stored order, so the per-batch estimator sees batches of one class (SSD's class-forgetting loader).

The model is put in eval mode while the importance is measured (BatchNorm uses its running
statistics and is not updated, dropout is off) and its mode is restored after. Only parameters
with `requires_grad` get an importance; `.grad` fields are not touched.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError

Statistic = Literal["square", "abs"]
Estimator = Literal["batch", "example"]
Order = Literal["stored", "by_class"]


@dataclass
class DiagonalImportance:
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

    def to(self, device) -> DiagonalImportance:
        return DiagonalImportance({k: v.to(device) for k, v in self.values.items()}, self.estimator, self.batch_size,
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


DiagonalFisher = DiagonalImportance  # the name SSD's cache and older code use


def _apply(statistic: Statistic, t: torch.Tensor) -> torch.Tensor:
    return t.square() if statistic == "square" else t.abs()


@torch.no_grad()
def _vmap_statistic(model, names, x, aux, task_ids, use_task_ids, example_loss, statistic, totals) -> None:
    """Per-example gradients by torch.func for parameters the linear-layer shortcut cannot cover
    (convolutions, norms, layers called twice); examples of one task at a time, so task routing
    inside the model sees a plain tensor."""
    from torch.func import functional_call, grad, vmap
    frozen = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss_of_one(var, xi, ai, tid):
        args = (xi.unsqueeze(0),) if tid is None else (xi.unsqueeze(0), tid)
        logits = functional_call(model, ({**frozen, **var}, buffers), args)
        return example_loss(logits, ai.unsqueeze(0))[0]

    var = {n: frozen[n] for n in names}
    groups = torch.unique(task_ids).tolist() if use_task_ids else [None]
    for t in groups:
        rows = task_ids == t if t is not None else slice(None)
        tid = torch.full((1,), t, dtype=torch.long, device=x.device) if t is not None else None
        with torch.enable_grad():
            grads = vmap(grad(loss_of_one), in_dims=(None, 0, 0, None))(var, x[rows], aux[rows], tid)
        for n in names:
            totals[n] += _apply(statistic, grads[n]).sum(0)


def per_example_importance(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                           use_task_ids: bool, make_aux: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           statistic: Statistic, device: torch.device, chunk: int = 512) -> dict[str, torch.Tensor]:
    """For every trainable parameter, (1/N) sum_n stat(d loss_n / d theta) over `data` = (inputs,
    targets, task ids); see the module docstring.

    `make_aux(logits.detach(), targets)` gives each example what its loss needs (a label drawn
    from the model, a mask of predictable classes, ...); `example_loss(logits, aux)` returns the
    (B,) per-example losses. The model runs in eval mode, `model(x, task_ids if use_task_ids)`.
    """
    inputs, targets, task_ids = data
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    totals = {n: torch.zeros_like(p) for n, p in params.items()}
    name_of = {id(p): n for n, p in params.items()}
    holders: dict[int, int] = {}     # how many modules hold each parameter (tied weights: > 1)
    for _, m in model.named_modules():
        for _, p in m.named_parameters(recurse=False):
            holders[id(p)] = holders.get(id(p), 0) + 1
    # Linear layers whose trainable parameters belong to them alone, with their parameters' names.
    linears = {n: {k: name_of[id(p)] for k, p in m.named_parameters(recurse=False) if id(p) in name_of}
               for n, m in model.named_modules() if isinstance(m, nn.Linear)
               and all(holders[id(p)] == 1 for p in m.parameters(recurse=False))}
    modules = dict(model.named_modules())
    calls: dict[str, list] = {}

    def recorder(name):
        def hook(module, args, output):
            calls.setdefault(name, []).append((args[0].detach(), output))
        return hook

    handles = [modules[n].register_forward_hook(recorder(n)) for n in linears]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), chunk):
            x = inputs[start:start + chunk].to(device)
            y = targets[start:start + chunk].to(device)
            t = task_ids[start:start + chunk].to(device)
            calls.clear()
            with torch.enable_grad():
                logits = model(x, t) if use_task_ids else model(x)
                aux = make_aux(logits.detach(), y)
                loss = example_loss(logits, aux).sum()
                fast = {n: c[0] for n, c in calls.items()
                        if len(c) == 1 and c[0][0].dim() == 2 and c[0][0].shape[0] <= len(x) and c[0][1].requires_grad}
                grads = torch.autograd.grad(loss, [o for _, o in fast.values()], allow_unused=True) if fast else []
            covered = set()
            for n, names in linears.items():
                if n in fast or n not in calls:   # not called: every per-example gradient is 0
                    covered.update(names.values())
            for (n, (a, _)), delta in zip(fast.items(), grads):
                if delta is None:
                    continue
                names, d = linears[n], _apply(statistic, delta)
                if "weight" in names:
                    totals[names["weight"]] += d.T @ _apply(statistic, a)
                if "bias" in names:
                    totals[names["bias"]] += d.sum(0)
            rest = [n for n in params if n not in covered]
            if rest:
                _vmap_statistic(model, rest, x, aux, t, use_task_ids, example_loss, statistic, totals)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n_examples = max(len(inputs), 1)
    return {n: v / n_examples for n, v in totals.items()}


def batch_importance(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                     device: torch.device | str, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                     = F.cross_entropy, task_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """(1/B) sum_b (d mean-loss of batch b / d theta)^2 over consecutive batches (see the module docstring).
    With `task_ids` the model is called as model(x, task_ids) (task-incremental heads)."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        for start in range(0, len(targets), batch_size):
            x = inputs[start:start + batch_size].to(device, non_blocking=True)
            y = targets[start:start + batch_size].to(device, non_blocking=True)
            logits = model(x) if task_ids is None else model(x, task_ids[start:start + batch_size].to(device))
            grads = torch.autograd.grad(loss_fn(logits, y), params, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc.add_(g.square())
            n_batches += 1
    finally:
        model.train(was_training)
    return {name: acc / max(n_batches, 1) for name, acc in zip(names, total)}


def _check(estimator: str, batch_size: int, n: int, order: str) -> None:
    if estimator not in ("batch", "example"):
        raise ConfigError("unknown Fisher estimator", expected="'batch' or 'example'", got=estimator)
    if order not in ("stored", "by_class"):
        raise ConfigError("unknown example order for the Fisher", expected="'stored' or 'by_class'", got=order)
    if batch_size < 1:
        raise ConfigError("bad batch size for the Fisher", expected="an integer >= 1", got=batch_size)
    if n == 0:
        raise ConfigError("cannot measure the importance of an empty set", expected="at least one example", got=0)


def _per_example_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


def diagonal_fisher(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 64,
                    estimator: Estimator = "batch", device: torch.device | str | None = None,
                    order: Order = "stored") -> DiagonalImportance:
    """The diagonal empirical Fisher (cross-entropy, true labels) of `model` on (inputs, targets) by
    the per-batch or the per-example estimator; see the module docstring. `batch_size` is the batch
    of the per-batch estimator and the chunk of the per-example one (memory only)."""
    n = len(targets)
    _check(estimator, batch_size, n, order)
    if order == "by_class":
        grouped = torch.argsort(targets, stable=True)
        inputs, targets = inputs[grouped], targets[grouped]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if estimator == "batch":
        values = batch_importance(model, inputs, targets, batch_size, device)
    else:
        no_tasks = torch.zeros(n, dtype=torch.long)
        values = per_example_importance(model, (inputs, targets, no_tasks), False, lambda logits, y: y,
                                        _per_example_ce, "square", device, chunk=batch_size)
    return DiagonalImportance(values, estimator, batch_size, n, order)


__all__ = ["DiagonalFisher", "DiagonalImportance", "batch_importance", "diagonal_fisher", "per_example_importance"]
