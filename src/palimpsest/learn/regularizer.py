"""What the quadratic regularisers (EWC, online EWC, SI, MAS, L2) share.

`QuadraticPenalty` is the term sum_i Omega_i (theta_i - theta*_i)^2 with its stored importances
Omega and anchors theta*; each strategy decides how Omega is estimated and how strongly the term
weighs. `per_example_importance` averages a statistic of per-example gradients (g^2 for the
Fisher, |g| for MAS) over a data set in batched passes, without a Python loop over examples.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

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
        """The penalty at the model's current parameters (differentiable)."""
        terms = [(omega * (p - anchor).square()).sum()
                 for name, p in model.named_parameters() if name in self.importance
                 for omega, anchor in [self._pair(name, p)]]
        if not terms:
            return next(model.parameters()).new_zeros(())
        return torch.stack(terms).sum()

    @torch.no_grad()
    def gradient(self, name: str, param: torch.Tensor) -> torch.Tensor | None:
        """d penalty / d param = 2 Omega (theta - theta*), or None for an unregularised parameter."""
        if name not in self.importance:
            return None
        omega, anchor = self._pair(name, param)
        return 2 * omega * (param - anchor)

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


def per_example_importance(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, task_ids: torch.Tensor,
                           use_task_ids: bool, make_aux: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           statistic: Statistic, device: torch.device, chunk: int = 512) -> dict[str, torch.Tensor]:
    """For every trainable parameter, (1/N) sum_n stat(d loss_n / d theta), stat = square or abs.

    `make_aux(logits.detach(), targets)` gives each example what its loss needs (a label drawn
    from the model, a mask of predictable classes, ...); `example_loss(logits, aux)` returns the
    (B,) per-example losses. The model runs in eval mode.

    Linear layers applied once to (batch, features) inputs take a shortcut: an example's weight
    gradient is the outer product delta_n x_n^T of its output gradient and input, so
    sum_n stat(delta_n x_n^T) = stat(delta)^T stat(x) for both squares and absolute values, one
    matrix product per chunk. Every other parameter falls back to torch.func per-example gradients.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    totals = {n: torch.zeros_like(p) for n, p in params.items()}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    calls: dict[str, list] = {}

    def recorder(name):
        def hook(module, args, output):
            calls.setdefault(name, []).append((args[0].detach(), output))
        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in linears.items()]
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
            for n, m in linears.items():
                if n in fast or n not in calls:   # not called: every per-example gradient is 0
                    covered.update(f"{n}.{k}" if n else k for k, _ in m.named_parameters(recurse=False))
            for (n, (a, _)), delta in zip(fast.items(), grads):
                if delta is None:
                    continue
                m, prefix = linears[n], f"{n}." if n else ""
                d = _apply(statistic, delta)
                if m.weight.requires_grad:
                    totals[prefix + "weight"] += d.T @ _apply(statistic, a)
                if m.bias is not None and m.bias.requires_grad:
                    totals[prefix + "bias"] += d.sum(0)
            rest = [n for n in params if n not in covered]
            if rest:
                _vmap_statistic(model, rest, x, aux, t, use_task_ids, example_loss, statistic, totals)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n_examples = max(len(inputs), 1)
    return {n: v / n_examples for n, v in totals.items()}
