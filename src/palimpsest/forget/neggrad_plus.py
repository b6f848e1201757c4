"""NegGrad+: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023).

Fine-tuning on the retain set while ascending the forget set's loss, with one weighted objective

    alpha * CE(retain batch) - (1 - alpha) * CE(forget batch).

As in the authors' code each step pairs a forget batch with a retain batch and an epoch is one
pass over the forget set (the zip of the two loaders stops with the shorter one); the retain set
is cycled in fresh orders. Reads the forget and retain sets.

The ascent term is unbounded, so alpha sits in a narrow window: forgetting a Fashion-MNIST class
with a small CNN (one epoch, lr 0.01, batches of 128; held-out split, seed 100) left 64% forget
accuracy at alpha 0.99, forgot the class at 0.95 (the default) and collapsed the model at 0.9.
"""
from __future__ import annotations

from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from ..train.batching import paired_batches
from .base import LossUnlearner, Pair
from .common import cross_entropy


@UNLEARNERS.register("neggrad_plus", summary="NegGrad+: alpha * CE(retain) - (1 - alpha) * CE(forget)")
class NegGradPlus(LossUnlearner):
    """Kurmanji et al. (NeurIPS 2023)'s NegGrad+: descend the retain loss and ascend the forget loss."""

    name = "neggrad_plus"
    reads = {"forget": "examples", "retain": "examples"}
    zero_steps = {"epochs": 0}

    class Config(Settings):
        alpha: float = Field(0.95, ge=0, le=1, description="weight of the retain loss; 1 - alpha weighs the "
                             "ascended forget loss")
        epochs: int = Field(1, ge=0, description="passes over the forget set (each batch paired with a retain batch)")
        lr: float = Field(0.01, gt=0, description="learning rate (the recipe's optimizer kind)")
        batch_size: int | None = Field(None, ge=1, description="batch size of each split; None: the original recipe's")

    def steps(self, data, ctx, model):
        c = self.config
        forget, retain = data.forget(), data.retain()
        batch = c.batch_size or ctx.training.batch_size
        gen = generator(ctx.seed, self.name)
        for f_idx, r_idx in paired_batches(len(forget), len(retain), batch, batch, c.epochs, gen):
            yield Pair(forget.batch(f_idx), retain.batch(r_idx))

    def loss(self, model, pair, ctx, values):
        c = self.config
        return c.alpha * cross_entropy(model, pair.retain) - (1 - c.alpha) * cross_entropy(model, pair.forget)
