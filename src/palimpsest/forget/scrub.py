"""SCRUB: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023).

Teacher = the original model (frozen); student = the model, initialised from it. Each epoch
first (for the first `msteps` epochs only) takes a max-step pass over the forget set, maximising
KL(teacher || student), then a min-step pass over the retain set minimising

    alpha * KL(teacher || student) + gamma * CE(student, labels),

both KL terms at temperature T and scaled by T^2 (the authors' DistillKL). One optimizer of the
original recipe's kind serves both kinds of step, as in the authors' code. Their defaults: 3
epochs, msteps 2, T 4, alpha 0.001, gamma 0.99, lr 5e-4, SGD momentum 0.9, every min-step pass
over the whole retain set (`retain_batches=None`).

Two things to know. (1) The student starts equal to the teacher, where KL and its gradient are
exactly 0: in a model without dropout or batch norm (whose train mode makes the two differ) the
first max-step pass does nothing, and forgetting starts once min-steps have moved the student.
(2) Maximising the KL is unbounded: once the forget examples are misclassified it runs away
(logits, then weights, grow until they overflow), so the number and size of max-steps must stay
small. Our defaults (forget batches of 256, 100 retain batches per min-step pass) were tuned on a
held-out split of Fashion-MNIST with a small CNN (seed 100, not a reported seed); with forget
batches of 128 the same run diverged and with 512 it forgot too little.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from ..train.losses import softened_kl
from .base import LossUnlearner, Pair, original_of


@UNLEARNERS.register("scrub", summary="SCRUB: max KL to the original model on forget, min KL + CE on retain")
class Scrub(LossUnlearner):
    """Kurmanji et al. (NeurIPS 2023): student-teacher unlearning by alternating max-steps on the
    forget set and min-steps on the retain set. The teacher is the frozen original model
    (`ctx.original`)."""

    name = "scrub"
    reads = {"forget": "examples", "retain": "examples"}
    zero_steps = {"epochs": 0}

    class Config(Settings):
        epochs: int = Field(3, ge=0, description="epochs; each ends with a min-step pass over the retain set")
        msteps: int = Field(2, ge=0, description="the first msteps epochs start with a max-step pass over the forget set")
        temperature: float = Field(4.0, gt=0, description="softmax temperature of the KL terms (the paper's kd_T)")
        alpha: float = Field(0.001, ge=0, description="weight of KL(teacher || student) in the min-steps")
        gamma: float = Field(0.99, ge=0, description="weight of the retain cross-entropy in the min-steps")
        lr: float = Field(5e-4, gt=0, description="learning rate (the recipe's optimizer kind)")
        batch_size: int | None = Field(None, ge=1, description="retain batch size; None: the original recipe's")
        forget_batch_size: int | None = Field(256, ge=1, description="forget batch size of the max-steps; None: the "
                                              "original recipe's")
        retain_batches: int | None = Field(100, ge=1, description="retain batches per min-step pass; None: the whole "
                                           "retain set (the paper)")

    def prepare(self, model, data, ctx):
        self._teacher = original_of(model, ctx)
        return {}

    def steps(self, data, ctx, model):
        c = self.config
        forget, retain = data.forget(), data.retain()
        gen = generator(ctx.seed, self.name)
        batch = c.batch_size or ctx.training.batch_size
        forget_batch = c.forget_batch_size or ctx.training.batch_size
        for epoch in range(c.epochs):
            if epoch < c.msteps:
                order = torch.randperm(len(forget), generator=gen)
                for start in range(0, len(forget), forget_batch):
                    yield Pair(forget=forget.batch(order[start:start + forget_batch]))
            order = torch.randperm(len(retain), generator=gen)
            n_batches = -(-len(retain) // batch)
            for b in range(min(n_batches, c.retain_batches or n_batches)):
                yield Pair(retain=retain.batch(order[b * batch:(b + 1) * batch]))

    def loss(self, model, pair, ctx, values):
        c = self.config
        maximise = pair.forget is not None
        data = pair.forget if maximise else pair.retain
        logits = model(data["inputs"])
        with torch.no_grad():
            target = self._teacher(data["inputs"])
        kl = softened_kl(logits, target, c.temperature) * c.temperature ** 2
        if maximise:
            return -kl
        return c.alpha * kl + c.gamma * torch.nn.functional.cross_entropy(logits, data["targets"])
