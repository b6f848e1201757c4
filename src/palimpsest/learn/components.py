"""Strategy components: pieces of state a strategy is made of, each saving and restoring itself.

    ReplayMemory      a ReplayBuffer bound to the run's seed and device (ER, DER, A-GEM, iCaRL, GDumb)
    QuadraticPenalty  sum_i Omega_i (theta_i - theta*_i)^2 with importances and anchors (EWC, SI, MAS, L2)
    Snapshot          a frozen copy of the model (LwF's old network, iCaRL's previous model)
    NamedTensors      a dict of tensors keyed by parameter name (SI's path integral and start weights)

A strategy holds components as attributes; `Strategy.state_dict` collects them by attribute name.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..data.batch import Batch
from ..memory.buffer import ReplayBuffer
from ..train.snapshot import frozen_copy, frozen_names
from .strategy import Component, TrainContext


class ReplayMemory(Component):
    """A `ReplayBuffer` whose generator is seeded from the run (two runs with the same seed replay
    the same examples, a resumed run continues the same draws) and whose tensors live on the run's
    device."""

    def __init__(self, capacity: int, policy: str = "reservoir") -> None:
        self.capacity, self.policy = capacity, policy
        self.buffer = ReplayBuffer(capacity, policy, seed=0)
        self.device: torch.device | None = None

    def bind(self, ctx: TrainContext) -> None:
        self.buffer = ReplayBuffer(self.capacity, self.policy, seed=ctx.seed)
        self.device = ctx.device

    def __len__(self) -> int:
        return len(self.buffer)

    def __getattr__(self, name: str):
        # everything else (data, class_counts, select_class_balanced, ...) is the buffer's
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self.buffer, name)

    def _on_device(self) -> None:
        # A buffer restored from a checkpoint lives on the CPU; move it once to where training runs.
        data = self.buffer.data
        if self.device is not None and data and next(iter(data.values())).device != self.device:
            self.buffer.data = {k: v.to(self.device) for k, v in data.items()}

    def add(self, batch: Batch, logits: torch.Tensor | None = None, features: torch.Tensor | None = None) -> None:
        """Offer examples (inputs, targets, task ids; optionally the logits and features they had) to
        the buffer under its policy."""
        self._on_device()
        self.buffer.add(batch["inputs"], batch["targets"], batch["task_ids"], logits, features)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """Up to n stored examples drawn uniformly without replacement; {} when there are none."""
        if n <= 0 or len(self.buffer) == 0:
            return {}
        self._on_device()
        return self.buffer.sample(n)

    def all(self) -> dict[str, torch.Tensor]:
        return self.buffer.all()

    @property
    def generator(self) -> torch.Generator:
        return self.buffer.generator

    def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.buffer.load_state_dict(state)


def as_batch(sample: dict[str, torch.Tensor]) -> Batch:
    """A memory sample (inputs, targets, task_ids[, logits]) as a Batch of the stream's fields."""
    return Batch(inputs=sample["inputs"], targets=sample["targets"], task_ids=sample["task_ids"])


class QuadraticPenalty(Component):
    """sum_i Omega_i (theta_i - theta*_i)^2 over a model's parameters, keyed by parameter name.

    Empty (and exactly 0) until the first `consolidate`.
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
        instead of an autograd graph (about 4x cheaper per step on CPU). Runs as a gradient hook,
        after unscaling, so it is exact under a GradScaler too."""
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

    def state_dict(self) -> dict[str, Any]:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance = {k: v.clone() for k, v in state.get("importance", {}).items()}
        self.anchor = {k: v.clone() for k, v in state.get("anchor", {}).items()}


class NamedTensors(Component, dict):
    """A dict of tensors (e.g. one per parameter name) that saves and restores itself."""

    def state_dict(self) -> dict[str, Any]:
        return dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clear()
        self.update({k: v.clone() for k, v in state.items()})


class Snapshot(Component):
    """A frozen copy of the model (eval mode, no gradients). Bound to the run's model, so a
    restored snapshot is rebuilt at once. Frozen parameters of the live model are shared, not
    copied, and not saved (they cannot differ)."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self._template: nn.Module | None = None
        self._frozen: set[str] = set()

    def bind(self, ctx: TrainContext) -> None:
        self._template = ctx.model
        self._frozen = frozen_names(ctx.model)

    def take(self, model: nn.Module) -> None:
        self.model = frozen_copy(model)

    def __bool__(self) -> bool:
        return self.model is not None

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if k not in self._frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.model = None
            return
        if self._template is None:
            raise RuntimeError("a Snapshot must be bound (strategy.setup(ctx)) before its state is loaded")
        self.model = frozen_copy(self._template)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        bad = [k for k in missing if k not in self._frozen]
        if bad or unexpected:
            raise RuntimeError(f"snapshot state does not fit the model: missing {bad[:5]}, unexpected {unexpected[:5]}")


__all__ = ["NamedTensors", "QuadraticPenalty", "ReplayMemory", "Snapshot", "as_batch"]
