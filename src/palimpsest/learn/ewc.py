"""Elastic Weight Consolidation and its online variant.

EWC: "Overcoming catastrophic forgetting in neural networks", Kirkpatrick et al. (2017).
Online EWC: "Progress & Compress: A scalable framework for continual learning", Schwarz et al. (2018).

After each experience the diagonal Fisher is estimated on that experience's training data, PER
EXAMPLE (not per mini-batch): F = (1/N) sum_n (d log p(label_n | x_n) / d theta)^2 with the model
in eval mode, where label_n is the true label (the empirical Fisher, as in Avalanche and Mammoth),
the model's argmax prediction, or a label sampled from the model's own softmax (the Fisher as
defined, whose expectation is over the model's predictive distribution). Only the classes the
model can currently predict enter the softmax (masked logits have probability exactly 0).

`fisher_estimator: batch` instead squares the gradient of each mini-batch's MEAN loss and averages
over the batches, walking the experience in stored order or grouped by class: the estimator of
Avalanche's EWCPlugin (its split experiences are stored grouped by class, hence `fisher_order`).
It is smaller than the per-example Fisher by about the batch size, and not uniformly so across
parameters; with it, our ewc_lambda = 2 x Avalanche's ewc_lambda exactly (docs/PARITY.md).

EWC keeps one penalty per past experience, (lambda/2) sum_t sum_i F_t,i (theta_i - theta*_t,i)^2.
Their sum is stored exactly, up to a constant, as one quadratic with the summed Fisher and an
importance-weighted anchor, so memory and time do not grow with the number of experiences.
Online EWC keeps one running Fisher F <- gamma F + F_new and one anchor, the weights at the end of
the latest experience. The penalty's exact gradient is added to the weights' gradients before
each optimizer step (the reported training loss is the cross-entropy alone).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..core.seeding import generator
from ..train.importance import batch_importance, per_example_importance
from .regularizer import QuadraticRegulariser, importance_data


class EWCConfig(Settings):
    ewc_lambda: float = Field(10.0, ge=0, description="lambda: the penalty is (lambda/2) sum F (theta - theta*)^2 "
                                                       "(Avalanche and Mammoth have no 1/2: use twice their value)")
    fisher_labels: Literal["true", "predicted", "sampled"] = Field(
        "true", description="label whose log-likelihood gradient enters the Fisher: the true one (empirical "
                            "Fisher), the model's argmax, or one drawn from the model's softmax")
    max_examples: int | None = Field(None, ge=1, description="estimate the Fisher on at most this many "
                                     "examples of each experience (a seeded random subset); None = all")
    fisher_estimator: Literal["example", "batch"] = Field(
        "example", description="'example': the mean of squared per-example gradients (the Fisher as defined); "
                               "'batch': the mean of squared gradients of each mini-batch's mean loss, as "
                               "Avalanche's EWCPlugin computes it (about 1/batch of the per-example value)")
    fisher_batch_size: int | None = Field(None, ge=1, description="mini-batch of the 'batch' estimator; None = "
                                          "the training batch size (Avalanche's train_mb_size)")
    fisher_order: Literal["stored", "by_class"] = Field(
        "stored", description="order in which the 'batch' estimator walks an experience: as stored, or grouped "
                              "by class (Avalanche's split experiences are stored grouped by class)")

    @model_validator(mode="after")
    def _batch_estimator_uses_true_labels(self):
        if self.fisher_estimator == "batch" and self.fisher_labels != "true":
            raise ValueError(f"fisher_estimator 'batch' uses the true labels (as Avalanche does), but fisher_labels "
                             f"is {self.fisher_labels!r}; set fisher_labels: true or fisher_estimator: example")
        if self.fisher_estimator == "example" and (self.fisher_batch_size is not None or self.fisher_order != "stored"):
            raise ValueError("fisher_batch_size and fisher_order apply to fisher_estimator 'batch' only; set "
                             "fisher_estimator: batch or remove them")
        return self


class OnlineEWCConfig(EWCConfig):
    gamma: float = Field(1.0, ge=0, le=1, description="decay of the running Fisher: F <- gamma F + F_new")


def fisher_diagonal(ctx, exp, labels: str = "true", max_examples: int | None = None, estimator: str = "example",
                    batch_size: int | None = None, order: str = "stored") -> dict[str, torch.Tensor]:
    """Diagonal Fisher of the log-likelihood on `exp`, per example or per mini-batch (module docstring)."""
    if estimator == "batch":
        x, y, t = importance_data(ctx, exp, max_examples, "fisher_examples")
        if order == "by_class":
            grouped = torch.argsort(y, stable=True)
            x, y, t = x[grouped], y[grouped], t[grouped]
        return batch_importance(ctx.model, x, y, batch_size or ctx.training.batch_size, ctx.device,
                                task_ids=t if ctx.use_task_ids else None)
    gen = generator(ctx.seed, "fisher_labels", ctx.step)

    def pick_labels(logits, targets):
        if labels == "true":
            return targets
        if labels == "predicted":
            return logits.argmax(1)
        # Masked classes have probability exactly 0, so they are never drawn.
        probs = torch.softmax(logits.float(), 1).cpu()
        return torch.multinomial(probs, 1, generator=gen).squeeze(1).to(logits.device)

    def nll(logits, label):
        return torch.nn.functional.cross_entropy(logits, label, reduction="none")

    data = importance_data(ctx, exp, max_examples, "fisher_examples")
    return per_example_importance(ctx.model, data, ctx.use_task_ids, pick_labels, nll, "square", ctx.device)


@STRATEGIES.register("ewc", summary="Elastic Weight Consolidation: Fisher-weighted anchors, one per experience")
class EWC(QuadraticRegulariser):
    """Cross-entropy + (lambda/2) sum_t F_t (theta - theta*_t)^2, F_t the diagonal Fisher of experience t.

    Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks" (2017).
    """

    name = "ewc"
    Config = EWCConfig
    weight_setting, weight_scale = "ewc_lambda", 0.5

    def fisher(self, ctx, exp) -> dict[str, torch.Tensor]:
        c = self.config
        return fisher_diagonal(ctx, exp, c.fisher_labels, c.max_examples, c.fisher_estimator, c.fisher_batch_size,
                               c.fisher_order)

    def after_experience(self, ctx, exp):
        fisher = self.fisher(ctx, exp)
        self.consolidate(ctx, fisher, merge_anchors=True)


@STRATEGIES.register("online_ewc", summary="online EWC (Progress & Compress): one running Fisher, one anchor")
class OnlineEWC(EWC):
    """Cross-entropy + (lambda/2) sum F (theta - theta*)^2 with F <- gamma F + F_new and theta* the
    weights after the latest experience.

    Schwarz et al., "Progress & Compress: A scalable framework for continual learning" (2018).
    """

    name = "online_ewc"
    Config = OnlineEWCConfig

    def after_experience(self, ctx, exp):
        fisher = self.fisher(ctx, exp)
        self.consolidate(ctx, fisher, decay=self.config.gamma)
