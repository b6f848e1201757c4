"""MARK-style scoring: what is recalled and what is kept by relevance, recency, frequency and trust.

"MARK: Memory Augmented Refinement of Knowledge" (2025) keeps refined memories and ranks them by how
recent and how frequent they are, resolving contradictions by removing outdated entries. Here a
memory's score is a weighted sum of four terms in [0, 1]:

  relevance     1 / rank among the search candidates (any retriever's scale; RRF scores are too flat
                to mix with other terms as they are)                               (search only)
  recency       exp(-days since last recall / recency_days)
  frequency     log(1 + recalls) / log(1 + saturation), capped at 1
  persistence   trust x (1 - exp(-age days / persistence_days)): a fact that has stood unrefuted for
                longer, from a source trusted more, counts more

Trust starts at the memory's `trust` metadata (a number in [0, 1]) or 1, and rises towards 1 when the same
text is stated again. Refinement: with `supersede_key` set (default "key"), a new memory with the same key
value and another text removes the older one (event SUPERSEDE); a capacity evicts the lowest score
without the relevance term.

Where we depart from the paper: MARK's refined memories are written by language-model agents (residual,
user-question and response memories); here the texts are stored as given and contradictions are found
by the key rule only. The weights are ours, not the paper's.
"""
from __future__ import annotations

import math

from pydantic import Field

from ..registries import MEMORY_POLICIES
from .base import CapacityConfig, Memory, MemoryPolicy


class MarkConfig(CapacityConfig):
    supersede_key: str | None = Field("key", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    w_relevance: float = Field(1.0, ge=0, le=100)
    w_recency: float = Field(0.2, ge=0, le=100)
    w_frequency: float = Field(0.15, ge=0, le=100)
    w_persistence: float = Field(0.15, ge=0, le=100)
    recency_days: float = Field(7.0, gt=0, le=36500, description="time constant of the recency term")
    persistence_days: float = Field(3.0, gt=0, le=36500, description="time constant of the persistence term")
    saturation: int = Field(20, ge=1, description="recalls at which the frequency term reaches 1")
    corroboration: float = Field(0.5, ge=0, le=1, description="restating a memory moves its trust this far to 1")


@MEMORY_POLICIES.register("mark", summary="MARK scoring: relevance, recency, log-frequency, persistence x trust")
class Mark(MemoryPolicy):
    name = "mark"
    Config = MarkConfig

    def initial(self, metadata: dict, now: float) -> dict:
        trust = metadata.get("trust", 1.0)
        trust = float(trust) if isinstance(trust, (int, float)) and not isinstance(trust, bool) else 1.0
        return {"strength": 1.0, "trust": min(1.0, max(0.0, trust))}

    def corroborate(self, memory: Memory, now: float) -> dict:
        state = self.reinforce(memory, now)
        state["trust"] = memory.trust + self.config.corroboration * (1.0 - memory.trust)
        return state

    def terms(self, memory: Memory, now: float) -> dict[str, float]:
        c = self.config
        age = max(0.0, (now - memory.created) / 86400.0)
        return {"recency": math.exp(-memory.days_since_recall(now) / c.recency_days),
                "frequency": min(1.0, math.log1p(memory.recalls) / math.log1p(c.saturation)),
                "persistence": memory.trust * (1.0 - math.exp(-age / c.persistence_days))}

    def keep_score(self, memory: Memory, now: float) -> float:
        t, c = self.terms(memory, now), self.config
        return c.w_recency * t["recency"] + c.w_frequency * t["frequency"] + c.w_persistence * t["persistence"]

    def rank(self, candidates, now):
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][1], candidates[i][0].n))
        rank = {i: position for position, i in enumerate(order, start=1)}
        return [(m, self.config.w_relevance / rank[i] + self.keep_score(m, now)) for i, (m, _) in enumerate(candidates)]


__all__ = ["Mark"]
