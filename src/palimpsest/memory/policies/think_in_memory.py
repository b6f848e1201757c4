"""Think-in-Memory: thoughts in locality-sensitive-hashing buckets, inserted, merged and forgotten.

"Think-in-Memory: Recalling and Post-thinking Enable LLMs with Long-Term Memory", Liu et al. (2023): an
agent stores the inductive thoughts it formed after each answer and organises them with LSH, so that a
new thought is compared only with the thoughts in its bucket. Operations: insert, forget (remove thoughts
that are contradicted or no longer needed) and merge (thoughts about the same thing become one).

Here: the bucket of a vector is the sign pattern of its projections on `n_bits` random hyperplanes
(Charikar, "Similarity estimation techniques from rounding algorithms", 2002; seeded, so every process
agrees). An insert compares the new thought with those in its bucket and the buckets within Hamming
distance `probe_radius`; a thought with cosine >= `merge_threshold` is merged: the existing memory keeps
its id, takes the newer text and is reinforced (a duplicate updates, it never deletes). Forget: a thought
with the same `supersede_key` value and another text is removed as contradicted; a capacity evicts the
least recently recalled. With `bucket_search`, search looks only in the query's probed buckets, as TiM
retrieves; by default it searches every thought (random-hyperplane buckets separate a question from
its answer often: two vectors at cosine 0.6 share all of 8 bits with probability 0.7^8, about 6%).
With the defaults (8 bits, radius 2: 37 of 256 buckets probed) two thoughts at cosine 0.9 are compared
with probability about 0.9, at cosine 0.95 about 0.96.

Where we depart from the paper: TiM's thoughts and its merge text are produced by the language model;
here the text is stored as given and a merge keeps the newer phrasing.
"""
from __future__ import annotations

import itertools

import numpy as np
from pydantic import Field

from ..registries import MEMORY_POLICIES
from .base import CapacityConfig, Decision, Memory, MemoryPolicy, NewMemory


class ThinkInMemoryConfig(CapacityConfig):
    supersede_key: str | None = Field("key", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    n_bits: int = Field(8, ge=1, le=30, description="hyperplanes: 2^n_bits buckets")
    probe_radius: int = Field(2, ge=0, le=3, description="also compare with buckets this many bits away")
    merge_threshold: float = Field(0.85, gt=0, le=1, description="cosine at which two thoughts are merged")
    bucket_search: bool = Field(False, description="search only the query's probed buckets (TiM's retrieval)")
    seed: int = Field(0, ge=0, lt=2**32)


@MEMORY_POLICIES.register("think_in_memory", summary="Think-in-Memory: LSH buckets; insert, merge near-duplicates, "
                                                      "forget the contradicted")
class ThinkInMemory(MemoryPolicy):
    name = "think_in_memory"
    Config = ThinkInMemoryConfig
    uses_buckets = True

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self._planes: dict[int, np.ndarray] = {}

    def _hyperplanes(self, dim: int) -> np.ndarray:
        if dim not in self._planes:
            rng = np.random.default_rng([self.config.seed, dim])
            self._planes[dim] = rng.standard_normal((self.config.n_bits, dim)).astype(np.float32)
        return self._planes[dim]

    def bucket(self, vector: np.ndarray) -> int:
        bits = (self._hyperplanes(len(vector)) @ vector) >= 0
        return int(sum(1 << i for i, b in enumerate(bits) if b))

    def neighbour_buckets(self, bucket: int) -> list[int]:
        out = [bucket]
        for r in range(1, self.config.probe_radius + 1):
            for flip in itertools.combinations(range(self.config.n_bits), r):
                out.append(bucket ^ sum(1 << i for i in flip))
        return out

    def on_insert(self, new: NewMemory, neighbours: list[tuple[Memory, np.ndarray]], now: float) -> Decision:
        supersede = self.outdated(new, neighbours)
        best, best_sim = None, -1.0
        probed = set(self.neighbour_buckets(new.bucket)) if new.bucket is not None else set()
        for memory, vector in neighbours:
            if memory.n in supersede or memory.bucket not in probed:
                continue
            sim = float(vector @ new.vector)
            if sim > best_sim or (sim == best_sim and best is not None and memory.n < best.n):
                best, best_sim = memory, sim
        if best is not None and best_sim >= self.config.merge_threshold:
            return Decision("merge", target=best.n, text=new.text, supersede=supersede,
                            reason=f"cosine {best_sim:.3f} >= {self.config.merge_threshold} in bucket {new.bucket}")
        return Decision("add", supersede=supersede)


__all__ = ["ThinkInMemory"]
