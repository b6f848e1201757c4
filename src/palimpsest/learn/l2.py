"""L2 anchoring: cross-entropy + (lambda/2) ||theta - theta*||^2, theta* the weights at the end of
the previous experience. The uniform-importance control of "Overcoming catastrophic forgetting in
neural networks", Kirkpatrick et al. (2017): what EWC gains over it is what the Fisher weighting buys.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .regularizer import QuadraticRegulariser


class L2Config(Settings):
    l2_lambda: float = Field(0.1, ge=0, description="lambda: the penalty is (lambda/2) ||theta - theta*||^2")


@STRATEGIES.register("l2", summary="L2 anchor to the weights at the end of the previous experience")
class L2(QuadraticRegulariser):
    """Cross-entropy + (lambda/2) ||theta - theta*||^2 with theta* the previous experience's final
    weights; the penalty's exact gradient is added before each optimizer step."""

    name = "l2"
    Config = L2Config
    weight_setting, weight_scale = "l2_lambda", 0.5

    def after_experience(self, ctx, exp):
        ones = {n: torch.ones_like(p) for n, p in ctx.model.named_parameters() if p.requires_grad}
        self.consolidate(ctx, ones, decay=0.0)
