"""Memory Aware Synapses: "Memory Aware Synapses: Learning what (not) to forget", Aljundi,
Babiloni, Elhoseiny, Rohrbach and Tuytelaars (2018).

After each experience, Omega_i += (1/N) sum_n |d ||f(x_n)||_2^2 / d theta_i|, computed per example
(not per mini-batch) on that experience's training inputs, labels unused, model in eval mode.
f(x) are the logits of the classes the model can currently predict: masked logits (the constant
MASKED_LOGIT of classes a single head has not seen, other tasks' heads in a multi-head model) are
set to 0 before the norm, so they add nothing to it. The anchor moves to the current weights and
the loss is cross-entropy + lambda sum_i Omega_i (theta_i - theta*_i)^2, whose exact gradient is
added before each optimizer step (the reported training loss is the cross-entropy alone).
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..models.heads import MASKED_LOGIT
from ..train.importance import per_example_importance
from .regularizer import QuadraticRegulariser, importance_data


class MASConfig(Settings):
    mas_lambda: float = Field(0.03, ge=0, description="lambda: the penalty is lambda sum Omega (theta - theta*)^2")
    max_examples: int | None = Field(None, ge=1, description="estimate importances on at most this many "
                                     "examples of each experience (a seeded random subset); None = all")


def output_sensitivity(ctx, exp, max_examples: int | None = None) -> dict[str, torch.Tensor]:
    """(1/N) sum_n |d ||f(x_n)||^2 / d theta| over the predictable logits of `exp`'s inputs."""

    def predictable(logits, targets):
        return logits != MASKED_LOGIT

    def squared_norm(logits, keep):
        return logits.masked_fill(~keep, 0.0).square().sum(1)

    data = importance_data(ctx, exp, max_examples, "mas_examples")
    return per_example_importance(ctx.model, data, ctx.use_task_ids, predictable, squared_norm, "abs", ctx.device)


@STRATEGIES.register("mas", summary="Memory Aware Synapses: importances from the outputs' sensitivity, no labels")
class MAS(QuadraticRegulariser):
    """Cross-entropy + lambda sum Omega (theta - theta*)^2, Omega the mean |gradient| of the
    squared L2 norm of the outputs, summed over experiences.

    Aljundi et al., "Memory Aware Synapses: Learning what (not) to forget" (2018).
    """

    name = "mas"
    Config = MASConfig
    weight_setting = "mas_lambda"

    def after_experience(self, ctx, exp):
        self.consolidate(ctx, output_sensitivity(ctx, exp, self.config.max_examples))
