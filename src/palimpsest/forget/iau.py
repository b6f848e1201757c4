"""Influence Approximation Unlearning (IAU): Liu, Wu, Lian and Chen, "Efficient Machine Unlearning
via Influence Approximation" (arXiv 2507.23257, 2025).

The paper links forgetting to incremental learning: removing a point z has (to first order) the
same influence on the optimum as *adding* a point whose loss gradient is the opposite of z's, and
adding a point is what one gradient step of incremental learning does. So instead of the
influence-function update H^-1 grad l(z) (a Hessian inverse over all parameters) IAU takes a
gradient step that ascends the forget set's loss; a "gradient correction" term descends the loss
of the remaining data at the same time, to keep what the model should still know; and a
"gradient restriction" loss at training time, l(z) + alpha * ||grad_theta l(z)||, keeps every
sample's gradient small so that the first-order step is a good approximation later.

What this module does (following the authors' code, github.com/Lolo1222/IAU, `IAU_unlearn.py`):
the gradient of  retain_weight * mean_{retain} l  -  mean_{forget} l  at the trained weights, both
means over the whole set (accumulated in chunks of `batch_size`, which changes only memory, not
the gradient), then `steps` optimizer steps with it (the authors: one Adam step, lr 1e-3; Adam's
first step moves every parameter by about lr * sign(gradient)). With steps > 1 the two gradients
are recomputed at the current weights before each step. `train_with_gradient_restriction` trains
the original model with the restriction loss exactly as the authors' `train_model.py` does: the
mean cross-entropy of the batch plus alpha times the *sum over parameter tensors* of the L2 norm of
that loss's gradient (double back-propagation; default alpha 0.005).

Known gaps, stated plainly:
- The full text of the paper was not available to us; the update is the one in the authors'
  released code, which uses the means over forget and retain sets (not size-weighted sums) and an
  Adam step. `optimizer="sgd"` gives the plain step theta <- theta - lr * g instead.
- The gradients are taken in eval mode (BatchNorm uses running statistics and is not updated by
  the unlearning pass). The authors' CNN has no BatchNorm, so this only matters for our ResNet.
- `retain_subset` (a random subset of the retain set for the correction) is our option for large
  retain sets; the authors use the whole retain set (the default, None).
- Gradient restriction is a property of the *original* model: IAU works on any trained model but
  the paper's guarantees assume it was trained with `train_with_gradient_restriction`.

Reads the forget and retain sets.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from .base import LossUnlearner, Pair


def mean_loss_gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, params: list[torch.Tensor],
                       batch_size: int, device) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy over all of (inputs, targets), accumulated in chunks."""
    n = len(targets)
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, n, batch_size):
        x = inputs[start:start + batch_size].to(device, non_blocking=True)
        y = targets[start:start + batch_size].to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y, reduction="sum") / n
        for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc.add_(g)
    return total


def gradient_restriction_loss(model: nn.Module, alpha: float = 0.005):
    """A `loss_fn(logits, targets)` for `learn.fit`: mean cross-entropy plus alpha times the sum over
    parameter tensors of the L2 norm of its gradient (IAU's gradient restriction, training time)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, targets)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        return loss + alpha * sum(torch.linalg.vector_norm(g) for g in grads if g is not None)

    return loss_fn


def train_with_gradient_restriction(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, training,
                                    seed: int, alpha: float = 0.005, device: torch.device | str = "cpu"):
    """Train the original model with IAU's gradient-restriction loss and the given recipe (about
    2-3x the cost of plain training: every step back-propagates twice)."""
    from ..train.fit import fit
    return fit(model, inputs, targets, training, seed, device, loss_fn=gradient_restriction_loss(model, alpha),
               stage="fit")


@UNLEARNERS.register("iau", summary="one gradient step ascending the forget loss and descending the retain loss "
                                    "(Influence Approximation Unlearning)")
class IAU(LossUnlearner):
    """Influence Approximation Unlearning (Liu et al., 2025): see the module docstring. Each loop
    step's gradient is the whole-set update (computed in `loss`, which returns the linear surrogate
    sum_p <p, update_p>, whose gradient is exactly the update)."""

    name = "iau"
    reads = {"forget": "examples", "retain": "examples"}
    zero_steps = {"steps": 0}
    train_mode = False  # gradients in eval mode (BatchNorm's running statistics, no dropout)

    class Config(Settings):
        lr: float = Field(1e-3, gt=0, description="step size (the authors: Adam, 1e-3)")
        optimizer: Literal["adam", "sgd"] = Field("adam", description="'adam' as the authors' code; 'sgd': "
                                                                      "theta <- theta - lr * gradient")
        steps: int = Field(1, ge=0, description="update steps; each recomputes both gradients (the authors: 1)")
        retain_weight: float = Field(1.0, ge=0, description="weight of the retain-set gradient correction "
                                                            "(0: pure ascent on the forget set)")
        retain_subset: int | None = Field(None, ge=1, description="use this many random retain examples for the "
                                                                  "correction; None: all (the authors)")
        batch_size: int = Field(1024, ge=1, description="chunk size of the gradient accumulation (memory only)")

    def optimizer(self, model, ctx):
        params = [p for p in model.parameters() if p.requires_grad]
        c = self.config
        return torch.optim.Adam(params, lr=c.lr) if c.optimizer == "adam" else torch.optim.SGD(params, lr=c.lr)

    def prepare(self, model, data, ctx):
        c = self.config
        self._forget = data.forget()
        retain = data.retain() if c.retain_weight > 0 else None
        if retain is not None and c.retain_subset is not None and c.retain_subset < len(retain):
            pick = torch.randperm(len(retain), generator=generator(ctx.seed, self.name, "retain"))[:c.retain_subset]
            self._retain = (retain.inputs[pick], retain.targets[pick])
        elif retain is not None:
            self._retain = (retain.inputs, retain.targets)
        else:
            self._retain = None
        return {}

    def steps(self, data, ctx, model):
        for _ in range(self.config.steps):
            yield Pair()

    def loss(self, model, pair, ctx, values):
        c = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        update = [-g for g in mean_loss_gradient(model, self._forget.inputs, self._forget.targets, params, c.batch_size,
                                                 ctx.device)]
        if self._retain is not None:
            correction = mean_loss_gradient(model, *self._retain, params, c.batch_size, ctx.device)
            update = [u + c.retain_weight * r for u, r in zip(update, correction)]
        return sum((p * u).sum() for p, u in zip(params, update))


__all__ = ["IAU", "gradient_restriction_loss", "mean_loss_gradient", "train_with_gradient_restriction"]
