"""What the quadratic regularisers (EWC, online EWC, SI, MAS, L2) share: a `QuadraticPenalty`
component whose exact gradient is added before each optimizer step, weighted by one setting, a
check that the weight does not make SGD diverge, and the examples importances are estimated on.
Each strategy decides how the importance Omega is estimated and when it is consolidated.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..core.seeding import generator
from .components import QuadraticPenalty
from .strategy import Strategy, legacy_prefixed


class QuadraticRegulariser(Strategy):
    """Cross-entropy + weight * sum Omega (theta - theta*)^2. `weight_setting` names the config
    field of the strength; `weight_scale` is 0.5 for the (lambda/2) forms."""

    weight_setting: ClassVar[str] = ""
    weight_scale: ClassVar[float] = 1.0

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.penalty = QuadraticPenalty()

    @property
    def strength(self) -> float:
        return float(getattr(self.config, self.weight_setting))

    @property
    def penalty_weight(self) -> float:
        return self.weight_scale * self.strength

    def before_step(self, ctx, batch, values):
        self.penalty.add_gradient(ctx.model, self.penalty_weight)

    def consolidate(self, ctx, importance: dict[str, torch.Tensor], **how) -> None:
        self.penalty.consolidate(ctx.model, importance, **how)
        self.check_stability(ctx)

    def check_stability(self, ctx) -> None:
        """Warn when the consolidated penalty alone would make SGD diverge on the next experience.
        The penalty only acts on later training: after the stream's last experience nothing is
        trained, so a stiff penalty there is harmless and a warning would be a false alarm."""
        if ctx.step < len(ctx.stream.train) - 1:
            self.penalty.warn_if_unstable(self.penalty_weight, ctx.training, self.weight_setting, self.strength)

    @classmethod
    def upgrade_state(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 1:
            return {"penalty": {"importance": legacy_prefixed(state, "importance"),
                                "anchor": legacy_prefixed(state, "anchor")}}
        return state


def importance_data(ctx, exp, max_examples: int | None, purpose: str):
    """(inputs, targets, task ids) of `exp`, or a random subset of `max_examples` of them drawn from
    the run's seed, for estimating importances."""
    x, y, t = exp.inputs, exp.targets, exp.task_ids
    if max_examples is not None and max_examples < len(y):
        idx = torch.randperm(len(y), generator=generator(ctx.seed, purpose, ctx.step))[:max_examples]
        x, y, t = x[idx], y[idx], t[idx]
    return x, y, t


__all__ = ["QuadraticPenalty", "QuadraticRegulariser", "importance_data"]
