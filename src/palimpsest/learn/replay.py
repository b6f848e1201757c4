"""What the replay strategies (ER, DER/DER++, ER-ACE, A-GEM) share: the buffer settings and a base
that owns one `ReplayMemory` component (rebuilt in `setup` from the run's seed, so two runs with
the same seed replay the same examples and a resumed run continues the very same draws)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..core.config import Settings
from .components import ReplayMemory
from .strategy import Strategy, legacy_prefixed


class ReplaySettings(Settings):
    """Buffer settings of every replay strategy (a Config mixin)."""

    buffer_size: int = Field(500, ge=1, description="memory budget, in examples")
    buffer_policy: Literal["reservoir", "class_balanced"] = Field(
        "reservoir", description="what stays in memory: reservoir sampling over the whole stream, or "
        "an equal share per class seen (GDumb's greedy sampler)")
    replay_batch_size: int | None = Field(
        None, ge=0, description="buffer examples replayed per step; None = as many as the incoming "
        "batch; 0 turns replay off (the strategy then trains exactly as naive)")


class ReplayStrategy(Strategy):
    """A strategy with one replay buffer. Subclasses wire it into the hooks they need."""

    Config = ReplaySettings
    accumulation_safe = False   # the buffer takes each mini-batch's incoming examples

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.buffer = ReplayMemory(self.config.buffer_size, self.config.buffer_policy)

    def replay_size(self, values: dict) -> int:
        n = self.config.replay_batch_size
        return values["incoming"] if n is None else n

    @classmethod
    def upgrade_state(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 1:
            upgraded = {"buffer": legacy_prefixed(state, "buffer")}
            upgraded.update({k: v for k, v in state.items() if not k.startswith("buffer.")})
            return upgraded
        return state
