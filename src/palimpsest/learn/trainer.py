"""The training loop. Data are in-memory tensors, batches are index slices (no DataLoader), so
the loop costs little beyond the model's own forward and backward (see benchmarks/)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.seeding import generator
from ..data.scenarios import Experience
from .strategy import Batch, Strategy, TrainContext


def merge(experiences: list[Experience]) -> Experience:
    """The union of several experiences (used by cumulative and joint training)."""
    if len(experiences) == 1:
        return experiences[0]
    import numpy as np
    classes = tuple(sorted({c for e in experiences for c in e.classes}))
    task_ids = torch.cat([torch.full((len(e),), e.task_id, dtype=torch.long) for e in experiences])
    merged = Experience(torch.cat([e.inputs for e in experiences]), torch.cat([e.targets for e in experiences]),
                        experiences[-1].task_id, classes, np.concatenate([e.indices for e in experiences]))
    object.__setattr__(merged, "_task_ids", task_ids)
    return merged


def task_ids_of(exp: Experience) -> torch.Tensor:
    ids = getattr(exp, "_task_ids", None)
    return ids if ids is not None else torch.full((len(exp),), exp.task_id, dtype=torch.long)


def shuffled_batches(n: int, batch_size: int, epochs: int, gen: torch.Generator):
    """(epoch, index tensor) for each mini-batch: a fresh permutation per epoch from `gen`."""
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            yield epoch, order[start:start + batch_size]


@dataclass
class StepStats:
    seconds: float
    mean_loss: float
    n_examples: int
    n_batches: int


def train_step(ctx: TrainContext, strategy: Strategy, exp: Experience) -> StepStats:
    """Train `ctx.model` on one experience with `strategy`'s hooks; return timing and loss."""
    start = time.perf_counter()
    model, opt, device = ctx.model, ctx.optimizer, ctx.device
    model.observe_classes(exp.classes)
    strategy.before_experience(ctx, exp)
    data = strategy.training_data(ctx, exp)
    epochs, batch_size = strategy.passes(ctx)
    x_all, y_all, t_all = data.inputs, data.targets, task_ids_of(data)
    gen = generator(ctx.seed, "shuffle", ctx.step)
    total, n_batches = torch.zeros((), device=device), 0
    model.train()
    for epoch, idx in shuffled_batches(len(data), batch_size, epochs, gen):
        ctx.epoch = epoch
        batch = Batch(x_all[idx].to(device, non_blocking=True), y_all[idx].to(device, non_blocking=True),
                      t_all[idx].to(device, non_blocking=True))
        batch = strategy.prepare_batch(ctx, batch)
        logits = ctx.forward(batch)
        loss = strategy.batch_loss(ctx, batch, logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        strategy.before_step(ctx, batch)
        opt.step()
        strategy.after_step(ctx, batch)
        total += loss.detach()
        n_batches += 1
    strategy.after_experience(ctx, exp)
    mean_loss = float(total) / max(n_batches, 1)
    return StepStats(time.perf_counter() - start, mean_loss, len(data) * epochs, n_batches)


def fit(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, training, seed: int,
        device: torch.device | str = "cpu", loss_fn=None, optimizer: torch.optim.Optimizer | None = None,
        stage: str = "fit") -> StepStats:
    """Plain supervised training of `model` on (inputs, targets) with the given TrainingConfig: the
    original recipe of an unlearning experiment, retraining from scratch and fine-tuning all use
    it. `loss_fn(logits, targets)` defaults to cross-entropy; batches come from (seed, stage)."""
    from .config import make_optimizer
    start = time.perf_counter()
    opt = optimizer or make_optimizer(model.parameters(), training)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    gen = generator(seed, "fit", stage)
    total, n_batches = torch.zeros((), device=device), 0
    model.train()
    for _, idx in shuffled_batches(len(targets), training.batch_size, training.epochs, gen):
        x, y = inputs[idx].to(device, non_blocking=True), targets[idx].to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        n_batches += 1
    return StepStats(time.perf_counter() - start, float(total) / max(n_batches, 1), len(targets) * training.epochs,
                     n_batches)
