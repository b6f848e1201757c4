"""Ebbinghaus forgetting with strength raised on each recall (MemoryBank).

"MemoryBank: Enhancing Large Language Models with Long-Term Memory", Zhong et al. (2023/2024): a memory
is kept with retention R = exp(-t / S), t the days since it was last recalled (or stored) and S its
strength, which grows by 1 each time the memory is recalled (and t starts again from 0).

The published code (MemoryBank-SiliconFriend, `memory_retrieval/forget_memory.py`) computes
`math.exp(-t / 5*S)`, which Python reads as exp(-(t/5)·S): the stronger a memory, the FASTER it fades,
the opposite of its own docstring. We use the intended form R = exp(-t / (c·S)) with a time scale
c = 5 days (`scale_days`); `published_retention` keeps the published form for the side-by-side plot and
the regression test that pins the difference.

Where we depart from the paper: forgetting is deterministic by default (a memory is forgotten once
R < `forget_below`); the paper's code instead keeps each memory with probability R at every pass
(`mode: sample`, seeded), which compounds over passes. Memory summaries and the user portrait that
MemoryBank writes with a language model are not part of this policy.
"""
from __future__ import annotations

import math
import random
from typing import Literal

from pydantic import Field

from ..registries import MEMORY_POLICIES
from .base import CapacityConfig, Memory, MemoryPolicy


def retention(days: float, strength: float, scale_days: float = 5.0) -> float:
    """The corrected MemoryBank retention exp(-t / (c·S))."""
    return math.exp(-max(days, 0.0) / (scale_days * strength))


def published_retention(days: float, strength: float, scale_days: float = 5.0) -> float:
    """What MemoryBank's published code computes, `exp(-t / 5*S)` = exp(-(t/c)·S): kept for comparison only."""
    return math.exp(-max(days, 0.0) / scale_days * strength)


class EbbinghausConfig(CapacityConfig):
    scale_days: float = Field(5.0, gt=0, le=36500, description="c in R = exp(-t / (c·S)), in days")
    forget_below: float = Field(0.1, ge=0, lt=1, description="a memory whose retention falls below this is "
                                                             "forgotten (mode: threshold)")
    mode: Literal["threshold", "sample"] = Field("threshold", description="threshold: forget when R < forget_below; "
                                                 "sample: keep with probability R at each forgetting pass (the "
                                                 "paper's code)")
    strength_step: float = Field(1.0, gt=0, le=1000, description="added to S at each recall")
    weight_by_retention: bool = Field(False, description="rank search results by relevance x R (default: relevance "
                                                         "alone, as MemoryBank retrieves)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of mode: sample")


@MEMORY_POLICIES.register("ebbinghaus", summary="MemoryBank forgetting curve R = exp(-t/(c·S)), S raised on recall")
class Ebbinghaus(MemoryPolicy):
    name = "ebbinghaus"
    Config = EbbinghausConfig

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self._rng = random.Random(self.config.seed)

    def reinforce(self, memory: Memory, now: float) -> dict:
        return {"strength": memory.strength + self.config.strength_step, "recalls": memory.recalls + 1,
                "last_recalled": now}

    def retention(self, memory: Memory, now: float) -> float:
        return retention(memory.days_since_recall(now), memory.strength, self.config.scale_days)

    def recallable(self, memory: Memory, now: float) -> bool:
        return self.config.mode == "sample" or self.retention(memory, now) >= self.config.forget_below

    def rank(self, candidates, now):
        if not self.config.weight_by_retention:
            return list(candidates)
        return [(m, r * self.retention(m, now)) for m, r in candidates]

    def keep_score(self, memory: Memory, now: float) -> float:
        return self.retention(memory, now)

    def forget(self, memories: list[Memory], now: float) -> list[int]:
        if self.config.mode == "sample":
            return [m.n for m in sorted(memories, key=lambda m: m.n) if self._rng.random() >= self.retention(m, now)]
        return [m.n for m in memories if self.retention(m, now) < self.config.forget_below]


__all__ = ["Ebbinghaus", "published_retention", "retention"]
