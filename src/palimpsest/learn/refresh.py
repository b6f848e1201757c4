"""Refresh learning, from "A Unified and General Framework for Continual Learning" (Wang, Li, Shen
and Huang, ICLR 2024): before every training step the model first UNLEARNS the incoming mini-batch
a little, then RELEARNS it with the step of whatever strategy it is composed with. Unlearning
follows the authors' code (their DER++, github.com/joey-wang123/CL-refresh-learning):

    g      = gradient of the cross-entropy of the incoming examples (ascent direction)
    u      = ||theta|| / ||g|| * g                              (per parameter tensor)
    theta <- theta + delta * (1 + c F)^-1 (u + sigma * eps),  eps ~ N(0, I)

F is a diagonal Fisher kept per parameter: at the end of each experience it becomes
tau * F + F_new, F_new the mean over the experience's examples of p(y|x) (d log p(y|x) / d theta)^2
(their `end_task`); weights the old tasks rely on (large F) are unlearned less. The relearning step
is the composed strategy's own step on the updated weights.

A plug-in, not a subclass: `{name: er, plus: [refresh]}` refreshes ER, `{name: derpp, plus:
[refresh]}` DER++, and so on for any registered strategy; alone (`refresh`) it refreshes plain
fine-tuning. It runs in `prepare_batch`, after the strategies before it have extended the batch
(replay), and unlearns only the incoming rows, as the authors' code does.

Departures: the paper writes the unlearning step on the full continual-learning loss; the authors'
code (followed here) uses the cross-entropy of the incoming batch. Their temporary copy of the
network is replaced by one extra forward and backward on the live model, with BatchNorm running
statistics left untouched by that extra pass (their copy did not update the network's either).
Defaults are the code's constants (delta 1e-5, c = 1e-3, sigma = 1e-3, tau = 1e-5); the recipes say
where a larger delta was used.
"""
from __future__ import annotations

import contextlib

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..train.importance import per_example_importance
from .components import NamedTensors
from .regularizer import importance_data
from .strategy import Strategy


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module):
    """BatchNorm layers normalise with the batch as usual but leave their running statistics as
    they are (an extra forward pass must not count as training data)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _likelihood_weighted_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sqrt(p(y|x)) * (-log p(y|x)) per example, p detached: its squared gradient is
    p(y|x) (d log p(y|x) / d theta)^2, the authors' Fisher term."""
    nll = F.cross_entropy(logits, targets, reduction="none")
    return torch.exp(-nll.detach()).sqrt() * nll


@STRATEGIES.register("refresh", summary="refresh learning: unlearn the incoming batch (Fisher-scaled gradient "
                     "ascent with noise), then relearn it; a plug-in for any strategy (Wang et al. 2024)")
class Refresh(Strategy):
    """Unlearn-then-relearn plug-in (Wang et al., ICLR 2024); see the module docstring."""

    name = "refresh"

    class Config(Settings):
        delta: float = Field(1e-5, ge=0, description="unlearning step: the weights move by delta * ||theta|| per "
                             "tensor along the ascent direction (the authors' code: 1e-5)")
        fisher_scale: float = Field(1e-3, ge=0, description="c in (1 + c F)^-1: how much the Fisher slows the "
                                    "unlearning of important weights (code: 1e-3)")
        noise: float = Field(1e-3, ge=0, description="sigma: standard deviation of the Gaussian noise added to the "
                             "normalised ascent direction (code: 1e-3)")
        tau: float = Field(1e-5, ge=0, le=1, description="Fisher decay at each experience's end: F <- tau F + F_new "
                           "(code: 1e-5)")
        max_examples: int | None = Field(None, ge=1, description="estimate each experience's Fisher on at most this "
                                         "many examples (a seeded subset); None = all")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.fisher = NamedTensors()

    def prepare_batch(self, ctx, batch, values):
        if self.config.delta > 0:
            self.unlearn(ctx, batch.head(values["incoming"]))
        return batch

    def unlearn(self, ctx, incoming) -> None:
        """One refresh (unlearning) step on the incoming examples; see the module docstring."""
        trainable = {id(p) for group in ctx.optimizer.param_groups for p in group["params"]}
        named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad and id(p) in trainable]
        with frozen_batchnorm_statistics(ctx.model):
            loss = ctx.task_loss(incoming, ctx.output(incoming))
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        c, sigma, delta = self.config.fisher_scale, self.config.noise, self.config.delta
        with torch.no_grad():
            for (name, p), g in zip(named, grads):
                if g is None:
                    continue
                direction = g * (p.norm() / (g.norm() + 1e-20))
                if sigma > 0:
                    direction = direction + sigma * torch.randn_like(direction)
                fisher = self.fisher.get(name)
                if fisher is not None:
                    fisher = self.fisher[name] = fisher.to(p)
                    direction = direction / (1.0 + c * fisher)
                p.add_(direction, alpha=delta)

    def after_experience(self, ctx, exp):
        data = importance_data(ctx, exp, self.config.max_examples, "refresh_fisher")
        new = per_example_importance(ctx.model, data, ctx.use_task_ids, lambda logits, y: y, _likelihood_weighted_nll,
                                     "square", ctx.device)
        with torch.no_grad():
            for name, value in new.items():
                old = self.fisher.get(name)
                self.fisher[name] = value if old is None else self.config.tau * old.to(value) + value


__all__ = ["Refresh", "frozen_batchnorm_statistics"]
