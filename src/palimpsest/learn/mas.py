"""Memory Aware Synapses: "Memory Aware Synapses: Learning what (not) to forget", Aljundi,
Babiloni, Elhoseiny, Rohrbach and Tuytelaars (2018).

After each experience, Omega_i += (1/N) sum_n |d ||f(x_n)||_2^2 / d theta_i|, computed per example
(not per mini-batch) on that experience's training inputs, labels unused. f(x) are the logits of
the classes the model can currently predict: masked classes (the constant MASKED_LOGIT of a
class-incremental single head, other tasks' heads in a multi-head model) are zeroed before the
norm, so they add nothing to it. The anchor moves to the current weights; the loss is
cross-entropy + lambda sum_i Omega_i (theta_i - theta*_i)^2.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..models.heads import MASKED_LOGIT
from .regularizer import QuadraticPenalty, per_example_importance
from .strategy import Strategy
from .trainer import task_ids_of


class MASConfig(Settings):
    mas_lambda: float = Field(1.0, ge=0, description="lambda: weight of lambda sum Omega (theta - theta*)^2")


def output_sensitivity(ctx, exp) -> dict[str, torch.Tensor]:
    """(1/N) sum_n |d ||f(x_n)||^2 / d theta| over the predictable logits of `exp`'s inputs."""

    def predictable(logits, targets):
        return logits != MASKED_LOGIT

    def squared_norm(logits, keep):
        return logits.masked_fill(~keep, 0.0).square().sum(1)

    return per_example_importance(ctx.model, exp.inputs, exp.targets, task_ids_of(exp), ctx.use_task_ids,
                                  predictable, squared_norm, "abs", ctx.device)


@STRATEGIES.register("mas", summary="Memory Aware Synapses: importances from the outputs' sensitivity, no labels")
class MAS(Strategy):
    """Cross-entropy + lambda sum Omega (theta - theta*)^2, Omega the mean |gradient| of the
    squared L2 norm of the outputs, accumulated over experiences.

    Aljundi et al., "Memory Aware Synapses: Learning what (not) to forget" (2018).
    """

    name = "mas"
    Config = MASConfig

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.penalty = QuadraticPenalty()

    def batch_loss(self, ctx, batch, logits):
        loss = torch.nn.functional.cross_entropy(logits, batch.targets)
        if self.penalty:
            loss = loss + self.config.mas_lambda * self.penalty(ctx.model)
        return loss

    def after_experience(self, ctx, exp):
        self.penalty.consolidate(ctx.model, output_sensitivity(ctx, exp))

    def state_dict(self):
        return self.penalty.state_dict()

    def load_state_dict(self, state):
        self.penalty.load_state_dict(state)
