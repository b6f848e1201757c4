"""Baselines: a store that never forgets, and first-in-first-out eviction at a fixed capacity."""
from __future__ import annotations

from pydantic import Field

from ...core.errors import ConfigError
from ..registries import MEMORY_POLICIES
from .base import CapacityConfig, Memory, MemoryPolicy


@MEMORY_POLICIES.register("none", summary="never forgets (what mem0 does); identical texts update, never delete")
class KeepEverything(MemoryPolicy):
    """Keeps every memory until it is deleted by hand. A capacity is refused: this policy never evicts."""

    name = "none"

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        if self.capacity is not None:
            raise ConfigError("policy 'none' never forgets, so it takes no capacity", expected="capacity: None",
                              got=self.capacity, fix="use policy 'fifo' (or another forgetting policy) for a "
                                                     "bounded store")


class FifoConfig(CapacityConfig):
    capacity: int = Field(..., ge=1, description="most memories per scope; the oldest added goes first")


@MEMORY_POLICIES.register("fifo", summary="first in, first out at a fixed capacity per scope (baseline)")
class Fifo(MemoryPolicy):
    """Evicts the memory added first when a scope exceeds its capacity; recalls change nothing."""

    name = "fifo"
    Config = FifoConfig

    def keep_score(self, memory: Memory, now: float) -> float:
        return memory.created
