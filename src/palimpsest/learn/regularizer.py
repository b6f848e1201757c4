"""What the quadratic regularisers (EWC, online EWC, SI, MAS, L2) share.

`QuadraticPenalty` is the term sum_i Omega_i (theta_i - theta*_i)^2 with its stored importances
Omega and anchors theta*; each strategy decides how Omega is estimated and how strongly the term
weighs. `per_example_importance` averages a statistic of per-example gradients (g^2 for the
Fisher, |g| for MAS) over a data set in batched passes, without a Python loop over examples.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ..core.seeding import generator
from .trainer import task_ids_of

Statistic = Literal["square", "abs"]


class QuadraticPenalty:
    """sum_i Omega_i (theta_i - theta*_i)^2 over a model's parameters, keyed by parameter name.

    Empty (and exactly 0) until the first `consolidate`. Importances and anchors are plain
    tensors on this object and round-trip through `state_dict()`.
    """

    def __init__(self) -> None:
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.importance)

    def _pair(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega, anchor = self.importance[name], self.anchor[name]
        if omega.device != like.device or omega.dtype != like.dtype:
            # Loaded from a checkpoint on the CPU: move once, not at every batch.
            omega = self.importance[name] = omega.to(like)
            anchor = self.anchor[name] = anchor.to(like)
        return omega, anchor

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """The penalty at the model's current parameters (differentiable; for inspection and tests:
        training adds its gradient directly, see `add_gradient`)."""
        terms = [(omega * (p - anchor).square()).sum()
                 for name, p in model.named_parameters() if name in self.importance
                 for omega, anchor in [self._pair(name, p)]]
        if not terms:
            return next(model.parameters()).new_zeros(())
        return torch.stack(terms).sum()

    @torch.no_grad()
    def add_gradient(self, model: nn.Module, weight: float) -> None:
        """p.grad += weight * 2 Omega (theta - theta*) for every regularised parameter: exactly the
        gradient of `weight * penalty` added to the loss, in two fused passes over the weights
        instead of an autograd graph (about 4x cheaper per step on CPU)."""
        params, omegas, anchors = [], [], []
        for name, p in model.named_parameters():
            if name in self.importance and p.requires_grad:
                omega, anchor = self._pair(name, p)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                params.append(p)
                omegas.append(omega)
                anchors.append(anchor)
        if params:
            diffs = torch._foreach_sub(params, anchors)
            torch._foreach_addcmul_([p.grad for p in params], omegas, diffs, value=2.0 * weight)

    def curvature(self) -> float:
        """Largest diagonal entry of the penalty's Hessian, 2 max Omega (0 when empty)."""
        return 2.0 * max((float(v.max()) for v in self.importance.values() if v.numel()), default=0.0)

    def warn_if_unstable(self, weight: float, training, setting: str, value: float) -> None:
        """Plain SGD diverges along a weight once lr * weight * 2 Omega >= 2 (1 + momentum), whatever
        the task loss does; say so, naming the setting (`setting` = `value`) to lower, instead of
        training into NaN. `weight` multiplies the penalty in the loss."""
        if training.optimizer != "sgd":
            return
        stiffness = training.lr * weight * self.curvature()
        limit = 2.0 * (1.0 + training.momentum)
        if stiffness >= limit:
            warnings.warn(f"the penalty alone makes SGD diverge: lr * {setting} term * 2 max(importance) = "
                          f"{stiffness:.3g} >= {limit:.3g}. Lower {setting} below {value * limit / stiffness:.3g} "
                          f"(now {value}) or lower the learning rate (now {training.lr}).", RuntimeWarning, stacklevel=3)

    @torch.no_grad()
    def consolidate(self, model: nn.Module, new_importance: dict[str, torch.Tensor], decay: float = 1.0,
                    merge_anchors: bool = False) -> None:
        """Omega <- decay * Omega + new_importance.

        With `merge_anchors`, the result equals the sum of one penalty per consolidation,
        sum_t F_t (theta - theta*_t)^2, up to a constant: the anchor becomes the importance-weighted
        mean of the old anchor and the current parameters (EWC's one penalty per task in O(#params)).
        Otherwise the anchor moves to the current parameters (online EWC, SI, MAS, L2).
        """
        for name, p in model.named_parameters():
            if name not in new_importance:
                continue
            theta = p.detach()
            new = new_importance[name].to(theta)
            if name not in self.importance:
                self.importance[name], self.anchor[name] = new.clone(), theta.clone()
                continue
            old_omega, old_anchor = self._pair(name, theta)
            old_omega = decay * old_omega
            omega = old_omega + new
            if merge_anchors:
                merged = (old_omega * old_anchor + new * theta) / omega
                anchor = torch.where(omega > 0, merged, theta)
            else:
                anchor = theta.clone()
            self.importance[name], self.anchor[name] = omega, anchor

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"importance.{n}": v for n, v in self.importance.items()}
        state.update({f"anchor.{n}": v for n, v in self.anchor.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        self.importance = named_tensors(state, "importance")
        self.anchor = named_tensors(state, "anchor")


def named_tensors(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a flat state dict under `prefix.`, with the prefix removed."""
    return {k[len(prefix) + 1:]: v.clone() for k, v in state.items() if k.startswith(prefix + ".")}


def importance_data(ctx, exp, max_examples: int | None, purpose: str):
    """(inputs, targets, task ids) of `exp`, or a random subset of `max_examples` of them drawn from
    the run's seed, for estimating importances."""
    x, y, t = exp.inputs, exp.targets, task_ids_of(exp)
    if max_examples is not None and max_examples < len(y):
        idx = torch.randperm(len(y), generator=generator(ctx.seed, purpose, ctx.step))[:max_examples]
        x, y, t = x[idx], y[idx], t[idx]
    return x, y, t


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
        logits = functional_call(model, ({**frozen, **var}, buffers), (xi.unsqueeze(0), tid))
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
    """For every trainable parameter, (1/N) sum_n stat(d loss_n / d theta), stat = square or abs,
    over `data` = (inputs, targets, task ids).

    `make_aux(logits.detach(), targets)` gives each example what its loss needs (a label drawn
    from the model, a mask of predictable classes, ...); `example_loss(logits, aux)` returns the
    (B,) per-example losses. The model runs in eval mode.

    Linear layers applied once to (batch, features) inputs take a shortcut: an example's weight
    gradient is the outer product delta_n x_n^T of its output gradient and input, so
    sum_n stat(delta_n x_n^T) = stat(delta)^T stat(x) for both squares and absolute values, one
    matrix product per chunk. Every other parameter falls back to torch.func per-example gradients.
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
                logits = model(x, t if use_task_ids else None)
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
