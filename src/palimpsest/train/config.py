"""Training settings shared by every optimisation in palimpsest, and the optimizer / learning-rate
schedule factories built from them.

The same `TrainingConfig` drives continual-learning steps, the original and retrained models of an
unlearning experiment, fine-tuning unlearners and the relearning audit. Everything beyond the
plain recipe (schedule, clipping, accumulation, mixed precision) is off by default, so a spec that
does not ask for it trains exactly as before these options existed.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, field_validator

from ..core.config import Settings, since


class TrainingConfig(Settings):
    epochs: int = Field(1, ge=1, description="passes over each experience's data (online scenarios use 1)")
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    reset_optimizer: bool = Field(False, description="new optimizer state at each experience (Mammoth's habit, and "
                                  "Avalanche's up to 0.3.1; Avalanche 0.4+ keeps it); off by default because it hurts "
                                  "the plain baseline")
    eval_batch_size: int = Field(2048, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    scheduler: Literal["constant", "cosine", "linear"] = Field(
        "constant", json_schema_extra=since("0.2"), description="learning rate over the optimizer steps of each training call (one experience, "
        "one fit): constant, cosine annealing to 0, or linear decay to 0")
    warmup_steps: int = Field(0, ge=0, json_schema_extra=since("0.2"), description="optimizer steps of linear warm-up from 0 at the start of each "
                              "training call")
    grad_clip: float | None = Field(None, gt=0, json_schema_extra=since("0.2"), description="clip the global gradient norm to this value before "
                                    "each optimizer step (after every gradient hook); None: no clipping")
    accumulation: int = Field(1, ge=1, json_schema_extra=since("0.2"), description="micro-batches whose gradients are summed (each loss divided "
                              "by this number) before one optimizer step")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", json_schema_extra=since("0.2"), description="autocast dtype of the forward pass; fp16 also scales the loss with a GradScaler "
        "(gradient hooks run after unscaling)")

    @field_validator("device")
    @classmethod
    def _available(cls, v: str) -> str:
        problem = device_problem(v)
        if problem:
            raise ValueError(f"device {v!r}: {problem}")
        return v


class NoParameters:
    """The optimizer of a method that trains no parameter (e.g. test-time normalisation statistics):
    it holds nothing and a step does nothing."""

    def __init__(self) -> None:
        self.state: dict = {}
        self.param_groups: list = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self, closure=None) -> None:
        pass

    def state_dict(self) -> dict:
        return {"state": {}, "param_groups": []}

    def load_state_dict(self, state: dict) -> None:
        pass


def device_problem(name: str) -> str | None:
    """Why `name` cannot be used on this machine, or None."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return "no CUDA device on this machine; use device: auto (or cpu)"
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s); use an index below that"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "no Apple MPS device on this machine; use device: auto (or cpu)"
    return None


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer of `cfg` over the parameters that require gradients (`NoParameters` when none do)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return NoParameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def schedule_factor(cfg: TrainingConfig, step: int, total: int | None) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of a training call of
    `total` steps. Warm-up ramps linearly from 1/(warmup+1) to 1; cosine and linear then decay to 0
    at the last step. Stateless: a call that is resumed from a checkpoint gets the same rates."""
    factor = 1.0
    if cfg.warmup_steps and step < cfg.warmup_steps:
        factor = (step + 1) / (cfg.warmup_steps + 1)
    if cfg.scheduler != "constant" and total:
        span = max(total - cfg.warmup_steps, 1)
        progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
        factor *= 0.5 * (1 + math.cos(math.pi * progress)) if cfg.scheduler == "cosine" else 1.0 - progress
    return factor


def uses_schedule(cfg: TrainingConfig) -> bool:
    return cfg.scheduler != "constant" or cfg.warmup_steps > 0


__all__ = ["NoParameters", "TrainingConfig", "build_optimizer", "schedule_factor", "uses_schedule"]
