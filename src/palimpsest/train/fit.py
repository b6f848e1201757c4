"""Plain supervised fitting on in-memory tensors, through the one loop: the original model of an
unlearning experiment, retraining from scratch, fine-tuning unlearners, SISA's constituents and the
attack's reference models all use it."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.seeding import generator
from ..data.batch import Batch
from .batching import n_batches, shuffled_batches
from .config import TrainingConfig, build_optimizer
from .loop import LossHooks, run_loop


@dataclass
class StepStats:
    seconds: float
    mean_loss: float
    n_examples: int
    n_batches: int
    finite: bool = True


def fit(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, training: TrainingConfig, seed: int,
        device: torch.device | str = "cpu", loss_fn=None, optimizer: torch.optim.Optimizer | None = None,
        stage: str = "fit") -> StepStats:
    """Plain supervised training of `model` on (inputs, targets) with the given TrainingConfig: the
    original recipe of an unlearning experiment, retraining from scratch and fine-tuning all use
    it. `loss_fn(logits, targets)` defaults to cross-entropy; batches come from (seed, stage)."""
    start = time.perf_counter()
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
    return StepStats(time.perf_counter() - start, stats.mean_loss, len(targets) * training.epochs, stats.n_batches, stats.finite)


__all__ = ["StepStats", "fit"]
