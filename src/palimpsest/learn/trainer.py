"""Continual-learning steps and plain supervised fitting, both driven by the one loop
(train/loop.py). Data are in-memory tensors indexed per batch (no DataLoader), so the loop costs
little beyond the model's own forward and backward (see benchmarks/)."""
from __future__ import annotations

import time
import torch

from ..core.seeding import generator
from ..data.scenarios import Experience, merge
from ..train.batching import n_batches, shuffled_batches
from ..train.fit import StepStats, fit
from ..train.loop import StepHooks, run_loop
from .strategy import Strategy, TrainContext


def task_ids_of(exp: Experience) -> torch.Tensor:
    """The task id of each example of `exp` (kept for older callers: `exp.task_ids`)."""
    return exp.task_ids


class StrategyHooks(StepHooks):
    """The loop's hooks for one training step of a strategy."""

    def __init__(self, ctx: TrainContext, strategy: Strategy) -> None:
        self.ctx, self.strategy = ctx, strategy

    def prepare(self, batch, values):
        values["incoming"] = batch.rows
        return self.strategy.prepare_batch(self.ctx, batch, values)

    def loss(self, batch, values):
        return self.strategy.batch_loss(self.ctx, batch, self.ctx.output(batch), values)

    def before_step(self, batch, values):
        self.strategy.before_step(self.ctx, batch, values)

    def after_step(self, batch, values):
        self.strategy.after_step(self.ctx, batch, values)


def train_step(ctx: TrainContext, strategy: Strategy, exp: Experience, label_free: bool = False) -> StepStats:
    """Train `ctx.model` on one experience with `strategy`'s hooks; return timing and loss. With
    `label_free` the strategy is handed the experience with its labels withheld (batches without
    targets; asking for them raises a LeakageError)."""
    start = time.perf_counter()
    if label_free:
        exp = exp.without_labels()
    ctx.adapter.observe_classes(exp.classes)
    strategy.before_experience(ctx, exp)
    data = strategy.training_data(ctx, exp)
    epochs, batch_size = strategy.passes(ctx)
    gen = generator(ctx.seed, "shuffle", ctx.step)
    task_ids = data.task_ids
    device = ctx.device

    def batches():
        for epoch, idx in shuffled_batches(len(data), batch_size, epochs, gen):
            ctx.epoch = epoch
            yield data.batch(idx, device, task_ids)

    ctx.model.train()
    steps = -(-n_batches(len(data), batch_size, epochs) // ctx.training.accumulation)
    stats = run_loop(StrategyHooks(ctx, strategy), ctx.optimizer, batches(), ctx.training, device, steps)
    strategy.after_experience(ctx, exp)
    return StepStats(time.perf_counter() - start, stats.mean_loss, len(data) * epochs, stats.n_batches, stats.finite)


__all__ = ["StepStats", "StrategyHooks", "fit", "merge", "shuffled_batches", "task_ids_of", "train_step"]
