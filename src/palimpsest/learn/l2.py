"""L2 anchoring: cross-entropy + (lambda/2) ||theta - theta*||^2, theta* the weights at the end of
the previous experience. The uniform-importance control of "Overcoming catastrophic forgetting in
neural networks", Kirkpatrick et al. (2017): what EWC gains over it is what the Fisher weighting buys.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .regularizer import QuadraticPenalty
from .strategy import Strategy


class L2Config(Settings):
    l2_lambda: float = Field(0.1, ge=0, description="lambda: the penalty is (lambda/2) ||theta - theta*||^2")


@STRATEGIES.register("l2", summary="L2 anchor to the weights at the end of the previous experience")
class L2(Strategy):
    """Cross-entropy + (lambda/2) ||theta - theta*||^2 with theta* the previous experience's final
    weights; the penalty's exact gradient is added before each optimizer step."""

    name = "l2"
    Config = L2Config

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.penalty = QuadraticPenalty()

    def before_step(self, ctx, batch):
        self.penalty.add_gradient(ctx.model, 0.5 * self.config.l2_lambda)

    def after_experience(self, ctx, exp):
        ones = {n: torch.ones_like(p) for n, p in ctx.model.named_parameters() if p.requires_grad}
        self.penalty.consolidate(ctx.model, ones, decay=0.0)
        self.penalty.warn_if_unstable(0.5 * self.config.l2_lambda, ctx.training, "l2_lambda", self.config.l2_lambda)

    def state_dict(self):
        return self.penalty.state_dict()

    def load_state_dict(self, state):
        self.penalty.load_state_dict(state)
