"""The one optimisation loop. Continual-learning steps, the original / retrained / reference models
of unlearning, every unlearner that optimises and the relearning audit all run through `run_loop`.

Per micro-batch the loop calls, in order:

    batch = hooks.prepare(batch, values)       e.g. append replayed examples
    loss  = hooks.loss(batch, values)          forward (under autocast) and the objective
    backward (loss scaled by a GradScaler in fp16, divided by `accumulation`)

and once per optimizer step (every `accumulation` micro-batches, and after the last one):

    unscale the gradients (fp16)
    hooks.before_step(batch, values)           gradient hooks: penalty gradients, projections, masks
    clip the global gradient norm (grad_clip)
    set the scheduled learning rate, optimizer.step()
    hooks.after_step(batch, values)            e.g. path integrals, buffer updates, restoring masked weights

`values` is a fresh dict per micro-batch: what one hook computes for a later one travels in it,
never on the hook object. Gradient hooks always see true (unscaled) gradients, so a penalty's
gradient or a projection is the same under a GradScaler as without one. With accumulation the step
hooks see the last micro-batch of the step; strategies whose step hooks read their batch declare
that they do not support accumulation.

With every option at its default (fp32, no accumulation, no clipping, constant learning rate) the
loop performs exactly the operations of a hand-written PyTorch loop, in the same order (zero_grad,
backward, step), so results are bit-identical to one (benchmarks/bench_trainer.py measures the cost).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .config import TrainingConfig, schedule_factor, uses_schedule


class StepHooks:
    """What the loop calls around each optimizer step; override what you need. `loss` is required."""

    def prepare(self, batch: Any, values: dict) -> Any:
        return batch

    def loss(self, batch: Any, values: dict) -> torch.Tensor:
        raise NotImplementedError

    def before_step(self, batch: Any, values: dict) -> None:
        pass

    def after_step(self, batch: Any, values: dict) -> None:
        pass


class LossHooks(StepHooks):
    """Hooks from plain functions: `loss(batch, values)`, and optional `before_step` / `after_step`."""

    def __init__(self, loss: Callable[[Any, dict], torch.Tensor], before_step: Callable | None = None,
                 after_step: Callable | None = None) -> None:
        self._loss, self._before, self._after = loss, before_step, after_step

    def loss(self, batch, values):
        return self._loss(batch, values)

    def before_step(self, batch, values):
        if self._before is not None:
            self._before(batch, values)

    def after_step(self, batch, values):
        if self._after is not None:
            self._after(batch, values)


@dataclass
class LoopStats:
    seconds: float
    mean_loss: float          # mean of the micro-batch losses (before any division for accumulation)
    n_batches: int            # micro-batches
    n_steps: int              # optimizer steps
    finite: bool = True       # False when some loss was NaN or infinite


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def run_loop(hooks: StepHooks, optimizer: torch.optim.Optimizer, batches: Iterable[Any], training: TrainingConfig,
             device: torch.device | str = "cpu", total_steps: int | None = None) -> LoopStats:
    """Optimise with `hooks` over `batches` (see the module docstring). `total_steps` (optimizer
    steps of this call) is needed only by a decaying learning-rate schedule."""
    start = time.perf_counter()
    device = torch.device(device)
    accumulation, precision = training.accumulation, training.precision
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    scheduled = uses_schedule(training)
    base_lrs = [group["lr"] for group in optimizer.param_groups] if scheduled else []
    total = torch.zeros((), device=device)
    n_batches = n_steps = 0
    pending = None  # (batch, values) of the last micro-batch whose gradients wait for a step

    def step(batch, values) -> None:
        nonlocal n_steps
        if scaler is not None:
            scaler.unscale_(optimizer)
        hooks.before_step(batch, values)
        if training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(_parameters(optimizer), training.grad_clip)
        if scheduled:
            factor = schedule_factor(training, n_steps, total_steps)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        hooks.after_step(batch, values)
        n_steps += 1

    try:
        for batch in batches:
            values: dict = {}
            batch = hooks.prepare(batch, values)
            with _autocast(device, precision):
                loss = hooks.loss(batch, values)
            if accumulation == 1 or n_batches % accumulation == 0:
                optimizer.zero_grad(set_to_none=True)
            scaled = loss / accumulation if accumulation > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total += loss.detach().float() if loss.dtype != torch.float32 else loss.detach()
            n_batches += 1
            if n_batches % accumulation == 0:
                step(batch, values)
                pending = None
            else:
                pending = (batch, values)
        if pending is not None:  # a last, partial accumulation still makes a step
            step(*pending)
    finally:
        if scheduled:  # the optimizer keeps its base learning rate for the next call
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr
    mean = float(total) / max(n_batches, 1)
    return LoopStats(time.perf_counter() - start, mean, n_batches, n_steps, bool(torch.isfinite(total)))


__all__ = ["LoopStats", "LossHooks", "StepHooks", "run_loop"]
