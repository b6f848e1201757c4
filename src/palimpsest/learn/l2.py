"""L2 anchoring: cross-entropy + (lambda/2) ||theta - theta*||^2, theta* the weights at the end of
the previous experience. The uniform-importance baseline of the regularisation literature, used
as a control for EWC in "Overcoming catastrophic forgetting in neural networks", Kirkpatrick et
al. (2017): what EWC gains over it is what its Fisher weighting buys.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .regularizer import QuadraticPenalty
from .strategy import Strategy


class L2Config(Settings):
    l2_lambda: float = Field(1.0, ge=0, description="lambda: weight of (lambda/2) ||theta - theta*||^2")


@STRATEGIES.register("l2", summary="L2 anchor to the weights at the end of the previous experience")
class L2(Strategy):
    """Cross-entropy + (lambda/2) ||theta - theta*||^2 with theta* the previous experience's final weights."""

    name = "l2"
    Config = L2Config

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.penalty = QuadraticPenalty()

    def batch_loss(self, ctx, batch, logits):
        loss = torch.nn.functional.cross_entropy(logits, batch.targets)
        if self.penalty:
            loss = loss + 0.5 * self.config.l2_lambda * self.penalty(ctx.model)
        return loss

    def after_experience(self, ctx, exp):
        ones = {n: torch.ones_like(p) for n, p in ctx.model.named_parameters() if p.requires_grad}
        self.penalty.consolidate(ctx.model, ones, decay=0.0)

    def state_dict(self):
        return self.penalty.state_dict()

    def load_state_dict(self, state):
        self.penalty.load_state_dict(state)
