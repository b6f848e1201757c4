"""The Strategy protocol: a few hooks, explicit state, one short module per method.

Hooks (called by `learn.trainer`, in this order for each training step):
  schedule(stream)             which train experiences each step learns (default: one each)
  before_experience(ctx, exp)  e.g. snapshot weights, reinitialise, compute importances
  training_data(ctx, exp) -> exp   what to train on (default: the experience; GDumb: its buffer)
  passes(ctx) -> (epochs, batch size)   default: the training settings (online: one pass)
  per mini-batch:
    prepare_batch(ctx, batch) -> batch   e.g. append replayed examples (ER)
    batch_loss(ctx, batch, logits) -> loss   the loss of one mini-batch (default cross-entropy)
    before_step(ctx, batch)    after backward, before optimizer.step (e.g. project gradients)
    after_step(ctx, batch)     after optimizer.step (e.g. SI's path integral, buffer updates)
  after_experience(ctx, exp)   e.g. fill a replay buffer, consolidate importances
  eval_model(model) -> module  what evaluation calls (default: the model; iCaRL: nearest mean)

What a strategy learns lives on the strategy object and round-trips through
`state_dict()`/`load_state_dict()`; hooks never mutate the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..core.config import Settings, validate
from ..core.errors import ConfigError
from ..data.scenarios import Experience, Stream
from .config import TrainingConfig


class Batch(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor
    task_ids: torch.Tensor


@dataclass
class TrainContext:
    """What hooks may read: the model, its optimizer, the stream and where training stands."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stream: Stream
    training: TrainingConfig
    device: torch.device
    seed: int
    step: int = 0
    epoch: int = 0

    @property
    def use_task_ids(self) -> bool:
        """Task identity reaches the model only in task-incremental scenarios."""
        return self.stream.scenario == "task"

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.inputs, batch.task_ids if self.use_task_ids else None)


class Strategy:
    """Base strategy = naive fine-tuning. Subclasses override only the hooks they need."""

    name: ClassVar[str] = "strategy"
    Config: ClassVar[type[Settings]] = Settings
    # Scenarios a strategy cannot run in are declared here, never special-cased by the tester.
    unsupported: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **settings: Any) -> None:
        self.config = validate(self.Config, settings, f"strategy {self.name!r}")

    # -- hooks -------------------------------------------------------------------------------
    def check_stream(self, stream: Stream) -> None:
        kinds = {stream.scenario} | ({"online"} if stream.online_batch_size else set())
        bad = kinds & self.unsupported
        if bad:
            raise ConfigError(f"strategy {self.name!r} does not support {sorted(bad)} scenarios",
                              expected=f"a scenario outside {sorted(self.unsupported)}",
                              got=stream.name, fix="pick another strategy or scenario")

    def schedule(self, stream: Stream) -> list[list[int]]:
        return [[i] for i in range(len(stream.train))]

    def setup(self, ctx: TrainContext) -> None:
        pass

    def before_experience(self, ctx: TrainContext, exp: Experience) -> None:
        pass

    def training_data(self, ctx: TrainContext, exp: Experience) -> Experience:
        return exp

    def passes(self, ctx: TrainContext) -> tuple[int, int]:
        """(epochs, batch size) over this step's training data; online: one pass in the stream's
        mini-batches. GDumb overrides it to train many epochs on its memory."""
        online = ctx.stream.online_batch_size
        return (1, online) if online else (ctx.training.epochs, ctx.training.batch_size)

    def prepare_batch(self, ctx: TrainContext, batch: Batch) -> Batch:
        return batch

    def batch_loss(self, ctx: TrainContext, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, batch.targets)

    def before_step(self, ctx: TrainContext, batch: Batch) -> None:
        pass

    def after_step(self, ctx: TrainContext, batch: Batch) -> None:
        pass

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model

    def after_experience(self, ctx: TrainContext, exp: Experience) -> None:
        pass

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON-able values the strategy learned; default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
