"""The registries of the agent-memory store: forgetting policies, vector indexes, embedders, retrievers.

One registry per kind of thing (core/registry.py): `@MEMORY_POLICIES.register("ebbinghaus", summary=...)`;
an unknown name is an error that lists close matches. `palimpsest ls` lists them all.
"""
from __future__ import annotations

from ..core.registry import Registry

MEMORY_POLICIES = Registry("memory policy")
VECTOR_INDEXES = Registry("vector index")
EMBEDDERS = Registry("embedder")
RETRIEVERS = Registry("retriever")

__all__ = ["EMBEDDERS", "MEMORY_POLICIES", "RETRIEVERS", "VECTOR_INDEXES"]
