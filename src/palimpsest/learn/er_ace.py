"""ER-ACE from "New Insights on Reducing Abrupt Representation Change in Online Continual
Learning" (Caccia et al., 2022): experience replay with an asymmetric cross-entropy. The incoming
examples are scored only against the classes present in the incoming batch (or experience), so
they stop pushing down the logits of old classes and old representations drift less; replayed
examples get the plain cross-entropy over every class seen. loss = CE_masked(incoming) + CE(replay).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from ..train.losses import masked_cross_entropy
from .er import ER
from .replay import ReplaySettings


class ERACEConfig(ReplaySettings):
    incoming_classes: Literal["batch", "experience"] = Field(
        "batch", description="classes the incoming loss is computed over: those present in the incoming "
        "mini-batch (the authors' code) or all classes of the current experience")


@STRATEGIES.register("er_ace", summary="experience replay with an asymmetric cross-entropy: incoming examples "
                     "only compete with current classes (Caccia et al. 2022)")
class ERACE(ER):
    """ER with the asymmetric cross-entropy (Caccia et al., 2022)."""

    name = "er_ace"
    Config = ERACEConfig

    def before_experience(self, ctx, exp):
        self._experience_classes = torch.zeros(ctx.model.n_classes, dtype=torch.bool, device=ctx.device)
        self._experience_classes[list(exp.classes)] = True

    def batch_loss(self, ctx, batch, output, values):
        n, logits, targets = values["incoming"], output.logits, batch["targets"]
        if self.config.incoming_classes == "batch":
            present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
            present[targets[:n]] = True
        else:
            present = self._experience_classes
        loss = masked_cross_entropy(logits[:n], targets[:n], present)
        if len(targets) > n:
            loss = loss + F.cross_entropy(logits[n:], targets[n:])
        return loss
