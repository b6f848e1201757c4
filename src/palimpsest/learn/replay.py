"""What the replay strategies (ER, DER/DER++, ER-ACE, A-GEM) share: the buffer settings, a base
that owns one `ReplayBuffer` and round-trips it (generator included) through `state_dict`, and
drawing a replay batch.

The buffer is rebuilt in `setup` from the run's seed, so two runs with the same seed replay the
same examples and a resumed run continues the very same sequence of draws.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..core.config import Settings
from ..memory.buffer import ReplayBuffer
from .strategy import Batch, Strategy, TrainContext

BUFFER_PREFIX = "buffer."


class ReplaySettings(Settings):
    """Buffer settings of every replay strategy (a Config mixin)."""

    buffer_size: int = Field(500, ge=1, description="memory budget, in examples")
    buffer_policy: Literal["reservoir", "class_balanced"] = Field(
        "reservoir", description="what stays in memory: reservoir sampling over the whole stream, or "
        "an equal share per class seen (GDumb's greedy sampler)")
    replay_batch_size: int | None = Field(
        None, ge=0, description="buffer examples replayed per step; None = as many as the incoming "
        "batch; 0 turns replay off (the strategy then trains exactly as naive)")


def cat_batches(*batches: Batch) -> Batch:
    """Rows of several batches, in order (one forward pass serves them all)."""
    return Batch(*(torch.cat(parts) for parts in zip(*batches)))


def head(batch: Batch, n: int) -> Batch:
    """The first n rows of a batch (the incoming examples of a prepared batch)."""
    return Batch(batch.inputs[:n], batch.targets[:n], batch.task_ids[:n])


def as_batch(sample: dict[str, torch.Tensor]) -> Batch:
    return Batch(sample["inputs"], sample["targets"], sample["task_ids"])


class ReplayStrategy(Strategy):
    """A strategy with one replay buffer. Subclasses wire it into the hooks they need."""

    Config = ReplaySettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.buffer = self._new_buffer(seed=0)

    def _new_buffer(self, seed: int) -> ReplayBuffer:
        return ReplayBuffer(self.config.buffer_size, self.config.buffer_policy, seed=seed)

    def setup(self, ctx: TrainContext) -> None:
        self.buffer = self._new_buffer(ctx.seed)

    def replay_size(self, batch: Batch) -> int:
        n = self.config.replay_batch_size
        return len(batch.targets) if n is None else n

    def _to_device(self, device: torch.device) -> None:
        # A buffer restored from a checkpoint lives on the CPU; move it once to where training runs.
        data = self.buffer.data
        if data and next(iter(data.values())).device != device:
            self.buffer.data = {k: v.to(device) for k, v in data.items()}

    def sample_replay(self, ctx: TrainContext, n: int) -> dict[str, torch.Tensor]:
        """Up to n buffer examples drawn uniformly without replacement; {} when there are none."""
        if n <= 0 or len(self.buffer) == 0:
            return {}
        self._to_device(ctx.device)
        return self.buffer.sample(n)

    def remember(self, ctx: TrainContext, batch: Batch, logits: torch.Tensor | None = None) -> None:
        """Offer examples to the buffer under its policy."""
        self._to_device(ctx.device)
        self.buffer.add(batch.inputs, batch.targets, batch.task_ids, logits)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Flat keys (tensors and scalars side by side) so checkpoints and comparisons stay simple.
        state = self.buffer.state_dict()
        flat = {f"{BUFFER_PREFIX}{k}": v for k, v in state.items() if k != "data"}
        flat.update({f"{BUFFER_PREFIX}data.{k}": v for k, v in state["data"].items()})
        return flat

    def load_state_dict(self, state: dict[str, Any]) -> None:
        data_prefix = f"{BUFFER_PREFIX}data."
        buffer_state = {k[len(BUFFER_PREFIX):]: v for k, v in state.items()
                        if k.startswith(BUFFER_PREFIX) and not k.startswith(data_prefix)}
        buffer_state["data"] = {k[len(data_prefix):]: v for k, v in state.items() if k.startswith(data_prefix)}
        self.buffer.load_state_dict(buffer_state)
