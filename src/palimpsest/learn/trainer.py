"""Continual-learning steps and plain supervised fitting, both driven by the one loop
(train/loop.py). Data are in-memory tensors indexed per batch (no DataLoader), so the loop costs
little beyond the model's own forward and backward (see benchmarks/)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.seeding import generator
from ..data.batch import Batch
from ..data.scenarios import Experience, merge
from ..train.batching import n_batches, shuffled_batches
from ..train.config import TrainingConfig, build_optimizer
from ..train.loop import LossHooks, StepHooks, run_loop
from .strategy import Strategy, TrainContext


def task_ids_of(exp: Experience) -> torch.Tensor:
    """The task id of each example of `exp` (kept for older callers: `exp.task_ids`)."""
    return exp.task_ids


@dataclass
class StepStats:
    seconds: float
    mean_loss: float
    n_examples: int
    n_batches: int
    finite: bool = True


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


def train_step(ctx: TrainContext, strategy: Strategy, exp: Experience) -> StepStats:
    """Train `ctx.model` on one experience with `strategy`'s hooks; return timing and loss."""
    start = time.perf_counter()
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


def fit(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, training: TrainingConfig, seed: int,
        device: torch.device | str = "cpu", loss_fn=None, optimizer: torch.optim.Optimizer | None = None,
        stage: str = "fit") -> StepStats:
    """Plain supervised training of `model` on (inputs, targets) with the given TrainingConfig: the
    original recipe of an unlearning experiment, retraining from scratch and fine-tuning all use
    it. `loss_fn(logits, targets)` defaults to cross-entropy; batches come from (seed, stage)."""
    opt = optimizer or build_optimizer(model.parameters(), training)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    gen = generator(seed, "fit", stage)

    def batches():
        for _, idx in shuffled_batches(len(targets), training.batch_size, training.epochs, gen):
            yield Batch(inputs=inputs[idx].to(device, non_blocking=True), targets=targets[idx].to(device, non_blocking=True))

    model.train()
    steps = -(-n_batches(len(targets), training.batch_size, training.epochs) // training.accumulation)
    stats = run_loop(LossHooks(lambda b, v: loss_fn(model(b["inputs"]), b["targets"])), opt, batches(), training,
                     device, steps)
    return StepStats(stats.seconds, stats.mean_loss, len(targets) * training.epochs, stats.n_batches, stats.finite)


__all__ = ["StepStats", "StrategyHooks", "fit", "merge", "shuffled_batches", "task_ids_of", "train_step"]
