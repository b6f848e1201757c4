"""The protocol every forgetting policy of the agent-memory store follows.

A policy never touches the database. The store hands it plain records (`Memory`) and applies what it
returns, in the same transaction as the change that asked:

  initial(metadata, now) -> dict          the policy state of a new memory (strength, trust)
  on_insert(new, neighbours, now)         add it, or merge it into a near-duplicate (`Decision`)
  reinforce(memory, now) -> dict          the new state of a memory that was recalled
  recallable(memory, now) -> bool         False hides a faded memory from search
  rank(candidates, now)                   final scores of search candidates [(memory, relevance)]
  keep_score(memory, now) -> float        capacity eviction removes the lowest first
  forget(memories, now) -> [ids]          a forgetting pass over one scope (`store.forget()`)
  after_add(memories, new_id, now)        a `Plan` after an add (capacity eviction; MEM1's consolidation)

Capacities count the memories of one scope (the same user_id, agent_id and run_id). Times are the
store clock's seconds; policies speak in days.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ...core.config import Settings, validate
from ..clock import DAY
from ..text import normal_form


@dataclass(frozen=True)
class Memory:
    """One stored memory as the store returns it (search adds `score`, `relevance` and `retention`)."""

    id: str
    text: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    last_recalled: float = 0.0
    strength: float = 1.0
    recalls: int = 0
    trust: float = 1.0
    tokens: int = 0
    bucket: int | None = None
    score: float | None = None
    relevance: float | None = None
    retention: float | None = None
    event: str | None = None         # what add() did: ADD, DUPLICATE, MERGE
    n: int = field(default=0, repr=False, compare=False)      # the store's internal row id

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("id", "text", "user_id", "agent_id", "run_id", "metadata", "created",
                                              "updated", "last_recalled", "strength", "recalls", "trust")}
        for k in ("score", "relevance", "retention", "event"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def days_since_recall(self, now: float) -> float:
        return max(0.0, (now - self.last_recalled) / DAY)


@dataclass(frozen=True)
class NewMemory:
    text: str
    vector: np.ndarray
    metadata: dict
    bucket: int | None = None


@dataclass
class Decision:
    """What an insert does: `add` a new memory, or `merge` into an existing one (its id is kept, its text
    becomes `text`); `supersede` lists memories the new one makes outdated (removed)."""

    action: str = "add"
    target: int | None = None
    text: str | None = None
    supersede: list[int] = field(default_factory=list)
    reason: str = ""


@dataclass
class Plan:
    """Changes a policy asks for after an add: remove `delete`, rewrite `update` {id: text}, add `add`."""

    delete: list[int] = field(default_factory=list)
    update: dict[int, str] = field(default_factory=dict)
    add: list[str] = field(default_factory=list)
    event: str = "EVICT"
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.delete or self.update or self.add)


class CapacityConfig(Settings):
    capacity: int | None = Field(None, ge=1, description="most memories per scope; the lowest keep_score goes first")
    supersede_key: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                      description="metadata field naming what a memory is about: a new memory "
                                                  "with the same value and another text makes the old one outdated")


class MemoryPolicy:
    """Base policy: keeps everything, ranks by relevance. Subclasses override what they change."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type[Settings]] = CapacityConfig
    uses_buckets: ClassVar[bool] = False

    def __init__(self, **settings: Any) -> None:
        self.config = validate(self.Config, settings, f"memory policy {self.name!r}")

    @property
    def capacity(self) -> int | None:
        return getattr(self.config, "capacity", None)

    @property
    def supersede_key(self) -> str | None:
        return getattr(self.config, "supersede_key", None)

    def settings(self) -> dict:
        return self.config.model_dump(mode="json")

    def initial(self, metadata: dict, now: float) -> dict:
        return {"strength": 1.0, "trust": 1.0}

    def bucket(self, vector: np.ndarray) -> int | None:
        return None

    def neighbour_buckets(self, bucket: int) -> list[int]:
        return [bucket]

    def on_insert(self, new: NewMemory, neighbours: list[tuple[Memory, np.ndarray]], now: float) -> Decision:
        """Add; memories about the same `supersede_key` value with another text become outdated."""
        return Decision("add", supersede=self.outdated(new, neighbours))

    def outdated(self, new: NewMemory, neighbours: list[tuple[Memory, np.ndarray]]) -> list[int]:
        key = self.supersede_key
        if key is None or new.metadata.get(key) is None:
            return []
        mine = normal_form(new.text)
        return [m.n for m, _ in neighbours if m.metadata.get(key) == new.metadata[key] and normal_form(m.text) != mine]

    def reinforce(self, memory: Memory, now: float) -> dict:
        return {"strength": memory.strength + 1.0, "recalls": memory.recalls + 1, "last_recalled": now}

    def corroborate(self, memory: Memory, now: float) -> dict:
        """The same text added again: reinforce it (a duplicate updates, never deletes)."""
        return self.reinforce(memory, now)

    def retention(self, memory: Memory, now: float) -> float:
        return 1.0

    def recallable(self, memory: Memory, now: float) -> bool:
        return True

    def rank(self, candidates: list[tuple[Memory, float]], now: float) -> list[tuple[Memory, float]]:
        return list(candidates)

    def keep_score(self, memory: Memory, now: float) -> float:
        return memory.last_recalled

    def forget(self, memories: list[Memory], now: float) -> list[int]:
        return []

    @property
    def bounded(self) -> bool:
        """Whether an add must count its scope (a capacity or budget to keep)."""
        return self.capacity is not None

    def over_budget(self, count: int, tokens: int) -> bool:
        return self.capacity is not None and count > self.capacity

    def after_add(self, memories: list[Memory], new: int, now: float) -> Plan:
        """Evict the lowest `keep_score` (ties: the oldest) until the scope fits its capacity."""
        if self.capacity is None or len(memories) <= self.capacity:
            return Plan()
        order = sorted(memories, key=lambda m: (self.keep_score(m, now), m.created, m.n))
        return Plan(delete=[m.n for m in order[: len(memories) - self.capacity]], event="EVICT",
                    details={"policy": self.name, "capacity": self.capacity})


def normalise(values: list[float]) -> list[float]:
    """Scale to [0, 1] by the largest (relevance on any retriever's scale); all zero stays zero."""
    top = max((abs(v) for v in values), default=0.0)
    return [max(0.0, v) / top if top > 0 else 0.0 for v in values]


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


__all__ = ["CapacityConfig", "Decision", "Memory", "MemoryPolicy", "NewMemory", "Plan", "normalise"]
