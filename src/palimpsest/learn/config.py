"""Training settings shared by every strategy."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..core.config import Settings


class TrainingConfig(Settings):
    epochs: int = Field(1, ge=1, description="passes over each experience's data (online scenarios use 1)")
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    reset_optimizer: bool = Field(False, description="new optimizer state at each experience (Avalanche's habit); "
                                  "off by default because it hurts the plain baseline")
    eval_batch_size: int = Field(2048, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")


def make_optimizer(params, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
