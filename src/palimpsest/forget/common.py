"""Pieces shared by the fine-tuning style unlearners (gradient ascent, NegGrad+, random labels,
SalUn, SCRUB): the original recipe with a few settings changed, a schedule of forget batches
paired with retain batches, random wrong labels, and the loss of a split's examples.

Batches are index tensors drawn from seeded generators, as in `learn.trainer`, so a fixed
(seed, method) gives the same run on every call.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.seeding import generator
from ..learn.config import TrainingConfig, make_optimizer


def recipe_with(training: TrainingConfig, **changes) -> TrainingConfig:
    """The original recipe with the given settings replaced; None means "keep the recipe's"."""
    return training.model_copy(update={k: v for k, v in changes.items() if v is not None})


def optimizer_for(model: nn.Module, training: TrainingConfig, lr: float | None) -> torch.optim.Optimizer:
    """A fresh optimizer of the original recipe's kind (momentum, weight decay) at learning rate `lr`."""
    return make_optimizer(model.parameters(), recipe_with(training, lr=lr))


class _Cycle:
    """An endless stream of index batches over range(n), a fresh permutation each pass."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self.order, self.pos = torch.randperm(n, generator=gen), 0

    def next(self) -> torch.Tensor:
        if self.pos >= self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def paired_batches(n_forget: int, n_retain: int | None, forget_batch_size: int, retain_batch_size: int,
                   epochs: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(forget indices, retain indices or None) per step. An epoch is one pass over the forget set
    in a fresh order (in Kurmanji et al.'s code, the zip of the two loaders stops with the forget
    loader, usually the shorter); each forget batch is paired with the next batch of a stream that
    cycles through the retain set in fresh orders, so the retain set is read only as far as the
    steps need, never re-read before a full pass."""
    retain = _Cycle(n_retain, retain_batch_size, gen) if n_retain else None
    for _ in range(epochs):
        order = torch.randperm(n_forget, generator=gen)
        for start in range(0, n_forget, forget_batch_size):
            yield order[start:start + forget_batch_size], (retain.next() if retain else None)


def union_batches(n_forget: int, n_retain: int, batch_size: int, epochs: int, gen: torch.Generator
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(forget indices, retain indices) per step for one shuffled loader over the union of the two
    sets (SalUn's `torch.utils.data.ConcatDataset` with shuffling): each step is `batch_size`
    positions of a fresh permutation of the n_forget + n_retain examples, split by set."""
    for _ in range(epochs):
        order = torch.randperm(n_forget + n_retain, generator=gen)
        for start in range(0, len(order), batch_size):
            pos = order[start:start + batch_size]
            yield pos[pos < n_forget], pos[pos >= n_forget] - n_forget


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


def batch_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor,
               device) -> torch.Tensor:
    """Mean cross-entropy of the examples `idx` of (inputs, targets)."""
    return F.cross_entropy(model(inputs[idx].to(device, non_blocking=True)), targets[idx].to(device, non_blocking=True))


def relabel_finetune(model: nn.Module, data, ctx, *, epochs: int, lr: float, batch_size: int | None,
                     retain_ratio: float | None, stage: str, mask: dict[str, torch.Tensor] | None = None
                     ) -> nn.Module:
    """Train on the forget set with random wrong labels (drawn once per run). Each step takes a batch
    of forget examples and `retain_ratio` times as many retain examples under their true labels,
    and descends the mean cross-entropy of the joined batch (0 reads no retain data); an epoch is
    one pass over the forget set. retain_ratio None is SalUn's own loader: the union of the
    relabelled forget set and the retain set, shuffled, in batches of `batch_size`, an epoch being
    one pass over the union. With `mask` (parameter name -> bool tensor) only the masked entries move:
    their gradients are masked and every other entry is put back to its original value after each
    step, so it stays bit-identical whatever the optimizer (momentum, weight decay). Used by
    random_labels and SalUn."""
    forget = data.forget()
    batch = batch_size or ctx.training.batch_size
    retain_batch = batch if retain_ratio is None else round(retain_ratio * batch)
    retain = data.retain() if retain_batch > 0 else None
    gen = generator(ctx.seed, stage)
    wrong = random_wrong_labels(forget.targets, predictable_classes(model, data.n_classes), gen)
    opt = optimizer_for(model, ctx.training, lr)
    params = dict(model.named_parameters())
    masked = {n: (m.to(params[n].device), params[n].detach().clone()) for n, m in (mask or {}).items()}
    model.train()
    steps = (union_batches(len(forget), len(retain), batch, epochs, gen) if retain_ratio is None else
             paired_batches(len(forget), len(retain) if retain else None, batch, retain_batch, epochs, gen))
    for f_idx, r_idx in steps:
        x, y = forget.inputs[f_idx], wrong[f_idx]
        if r_idx is not None:
            x, y = torch.cat([x, retain.inputs[r_idx]]), torch.cat([y, retain.targets[r_idx]])
        loss = F.cross_entropy(model(x.to(ctx.device, non_blocking=True)), y.to(ctx.device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for name, (m, _) in masked.items():
            if params[name].grad is not None:
                params[name].grad.masked_fill_(~m, 0)
        opt.step()
        with torch.no_grad():
            for name, (m, original) in masked.items():
                params[name].copy_(torch.where(m, params[name], original))
    return model.eval()


__all__ = [
    "batch_loss",
    "optimizer_for",
    "paired_batches",
    "predictable_classes",
    "random_wrong_labels",
    "recipe_with",
    "relabel_finetune",
]
