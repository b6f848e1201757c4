"""Forgetting policies of the agent-memory store, one short module each (registered in MEMORY_POLICIES)."""
from . import baseline, ebbinghaus, mark, mem1, think_in_memory  # noqa: F401  (register)
from .base import Decision, Memory, MemoryPolicy, NewMemory, Plan
from .ebbinghaus import published_retention, retention
from .mem1 import LMConsolidator, RuleConsolidator

__all__ = ["Decision", "LMConsolidator", "Memory", "MemoryPolicy", "NewMemory", "Plan", "RuleConsolidator",
           "published_retention", "retention"]
