"""Fine-tuning on the retain set: the "Fine-tune" baseline of Golatkar et al., "Eternal Sunshine
of the Spotless Net: Selective Forgetting in Deep Networks" (CVPR 2020), also "FT" in SalUn (2024).

The original model is trained a few more epochs on the retain set alone with the original recipe
(a fresh optimizer, the recipe's learning rate unless `lr` is given), so what it knew of the
forget set fades by catastrophic forgetting. It reads the retain set only.
"""
from __future__ import annotations

from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..train.fit import fit
from .base import Unlearned, Unlearner
from .common import recipe_with


@UNLEARNERS.register("finetune", summary="fine-tune on the retain set a few epochs with the original recipe")
class Finetune(Unlearner):
    """Golatkar et al. (CVPR 2020)'s fine-tuning baseline: more epochs of the original recipe on the
    retain set only."""

    name = "finetune"
    reads = {"retain": "examples"}
    zero_steps = {"epochs": 0}

    class Config(Settings):
        epochs: int = Field(1, ge=0, description="passes over the retain set")
        lr: float | None = Field(None, gt=0, description="learning rate; None: the original recipe's")
        batch_size: int | None = Field(None, ge=1, description="batch size; None: the original recipe's")

    def unlearn(self, model, data, ctx):
        c = self.config
        retain = data.retain()
        if c.epochs == 0:
            return Unlearned(model.eval(), {"steps": 0})
        training = recipe_with(ctx.training, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size)
        stats = fit(model, retain.inputs, retain.targets, training, ctx.seed, ctx.device, stage="finetune")
        return Unlearned(model.eval(), {"steps": stats.n_batches, "mean_loss": stats.mean_loss, "finite": stats.finite})
