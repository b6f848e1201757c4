"""Gradient ascent on the forget set ("GA" / "NegGrad"): Thudi et al., "Unrolling SGD:
Understanding Factors Influencing Machine Unlearning" (EuroS&P 2022); the NegGrad baseline of
Golatkar et al. (CVPR 2020) and Kurmanji et al. (2023).

The cross-entropy of the forget set is maximised for a few passes over it with the original
recipe's optimizer at a small learning rate. Nothing holds the rest of the model in place and the
loss is unbounded, so the window is narrow: forgetting a Fashion-MNIST class with a small CNN
(batches of 128, one epoch, SGD momentum 0.9) took lr 5e-4 (the default), while 3e-4 left 63%
forget accuracy and 1e-3 collapsed the model to chance. It reads the forget set only.
"""
from __future__ import annotations

from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from ..train.batching import paired_batches
from .base import LossUnlearner, Pair
from .common import cross_entropy


@UNLEARNERS.register("gradient_ascent", summary="ascend the cross-entropy of the forget set")
class GradientAscent(LossUnlearner):
    """Maximise the forget set's cross-entropy (Thudi et al. 2022; NegGrad in Golatkar et al. 2020)."""

    name = "gradient_ascent"
    reads = {"forget": "examples"}
    zero_steps = {"epochs": 0}

    class Config(Settings):
        epochs: int = Field(1, ge=0, description="passes over the forget set")
        lr: float = Field(5e-4, gt=0, description="learning rate of the ascent (the recipe's optimizer kind)")
        batch_size: int | None = Field(None, ge=1, description="batch size; None: the original recipe's")

    def steps(self, data, ctx, model):
        c = self.config
        forget = data.forget()
        batch = c.batch_size or ctx.training.batch_size
        for f_idx, _ in paired_batches(len(forget), None, batch, batch, c.epochs, generator(ctx.seed, self.name)):
            yield Pair(forget.batch(f_idx))

    def loss(self, model, pair, ctx, values):
        return -cross_entropy(model, pair.forget)
