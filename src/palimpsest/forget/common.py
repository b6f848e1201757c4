"""Pieces shared by the fine-tuning style unlearners (gradient ascent, NegGrad+, random labels,
SalUn, SCRUB): the original recipe with a few settings changed, random wrong labels, and random-label
fine-tuning (optionally restricted to a mask of parameter entries) as a loss unlearner.

Batches are index tensors drawn from seeded generators (train/batching.py), so a fixed
(seed, method) gives the same run on every call.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.seeding import generator
from ..data.batch import Batch
from ..train.batching import paired_batches, union_batches
from ..train.config import TrainingConfig, build_optimizer
from .base import LossUnlearner, Pair


def recipe_with(training: TrainingConfig, **changes) -> TrainingConfig:
    """The original recipe with the given settings replaced; None means "keep the recipe's"."""
    return training.model_copy(update={k: v for k, v in changes.items() if v is not None})


def optimizer_for(model: nn.Module, training: TrainingConfig, lr: float | None) -> torch.optim.Optimizer:
    """A fresh optimizer of the original recipe's kind (momentum, weight decay) at learning rate `lr`."""
    return build_optimizer(model.parameters(), recipe_with(training, lr=lr))


def predictable_classes(model: nn.Module, n_classes: int) -> torch.Tensor:
    """Class ids the model can predict (its `active` mask when it has one)."""
    active = getattr(model, "active", None)
    if active is not None:
        return active.nonzero(as_tuple=True)[0].cpu()
    return torch.arange(n_classes)


def random_wrong_labels(targets: torch.Tensor, classes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each target a label drawn uniformly from `classes` minus the target itself (the random
    relabelling of Graves et al. 2021): never the true label. (SalUn's code draws from all classes,
    so about 1 label in C equals the true one there.) Targets outside `classes`
    get any class of `classes`."""
    classes = torch.as_tensor(classes, dtype=torch.long).cpu()
    if len(classes) < 2:
        raise ConfigError("random wrong labels need at least two classes the model can predict",
                          expected=">= 2 predictable classes", got=classes.tolist(),
                          fix="call model.observe_classes(...) for every class before unlearning")
    targets = targets.cpu()
    k = len(classes)
    lookup = torch.full((int(max(classes.max(), targets.max())) + 1,), -1, dtype=torch.long)
    lookup[classes] = torch.arange(k)
    pos = lookup[targets]
    shifted = (pos + torch.randint(1, k, (len(targets),), generator=gen)) % k
    anywhere = torch.randint(0, k, (len(targets),), generator=gen)
    return classes[torch.where(pos >= 0, shifted, anywhere)]


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of a batch's examples."""
    return F.cross_entropy(model(batch["inputs"]), batch["targets"])


class RelabelFinetune(LossUnlearner):
    """Train on the forget set with random wrong labels (drawn once per run). Each step takes a
    batch of forget examples and `retain_ratio` times as many retain examples under their true
    labels, and descends the mean cross-entropy of the joined batch (0 reads no retain data); an
    epoch is one pass over the forget set. retain_ratio None is SalUn's own loader: the union of
    the relabelled forget set and the retain set, shuffled, in batches of `batch_size`, an epoch
    being one pass over the union. With a mask (parameter name -> bool tensor, from `mask`) only
    the masked entries move: their gradients are masked and every other entry is put back to its
    original value after each step, so it stays bit-identical whatever the optimizer (momentum,
    weight decay). Config fields: epochs, lr, batch_size, retain_ratio."""

    def mask(self, model: nn.Module, data, ctx) -> dict[str, torch.Tensor] | None:
        return None

    def prepare(self, model, data, ctx):
        mask = self.mask(model, data, ctx)
        params = dict(model.named_parameters())
        self._params = params
        self._masked = {n: (m.to(params[n].device), params[n].detach().clone()) for n, m in (mask or {}).items()}
        return {"masked_share": (sum(int(m.sum()) for m, _ in self._masked.values())
                                 / max(sum(m.numel() for m, _ in self._masked.values()), 1))} if mask else {}

    def steps(self, data, ctx, model):
        c = self.config
        forget = data.forget()
        batch = c.batch_size or ctx.training.batch_size
        retain_batch = batch if c.retain_ratio is None else round(c.retain_ratio * batch)
        retain = data.retain() if retain_batch > 0 else None
        gen = generator(ctx.seed, self.name)
        wrong = random_wrong_labels(forget.targets, predictable_classes(model, data.n_classes), gen)
        pairs = (union_batches(len(forget), len(retain), batch, c.epochs, gen) if c.retain_ratio is None else
                 paired_batches(len(forget), len(retain) if retain else None, batch, retain_batch, c.epochs, gen))
        for f_idx, r_idx in pairs:
            relabelled = Batch(inputs=forget.inputs[f_idx], targets=wrong[f_idx])
            yield Pair(relabelled, retain.batch(r_idx) if r_idx is not None else None)

    def loss(self, model, pair, ctx, values):
        joined = Batch.cat(pair.forget, pair.retain) if pair.retain is not None else pair.forget
        return cross_entropy(model, joined)

    def before_step(self, model, pair, values):
        for name, (m, _) in self._masked.items():
            if self._params[name].grad is not None:
                self._params[name].grad.masked_fill_(~m, 0)

    @torch.no_grad()
    def after_step(self, model, pair, values):
        for name, (m, original) in self._masked.items():
            self._params[name].copy_(torch.where(m, self._params[name], original))


__all__ = ["RelabelFinetune", "cross_entropy", "optimizer_for", "paired_batches", "predictable_classes",
           "random_wrong_labels", "recipe_with", "union_batches"]
