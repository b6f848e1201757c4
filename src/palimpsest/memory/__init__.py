"""Memory: replay buffers for continual learning, and the agent-memory store that forgets on purpose.

    from palimpsest.memory import MemoryStore, SimulatedClock
    store = MemoryStore("memory.sqlite", policy="ebbinghaus", clock=SimulatedClock())
    store.add("Alice is allergic to peanuts", user_id="alice")
    store.search("what can't alice eat?", user_id="alice")[0].text
"""
from .buffer import ReplayBuffer, herding_order
from .clock import DAY, SimulatedClock, SystemClock
from .embed import HashingEmbedder, MiniLMEmbedder, create_embedder
from .index import ExactIndex, FaissIndex, HnswIndex, create_index
from .policies import LMConsolidator, Memory, MemoryPolicy, RuleConsolidator, published_retention, retention
from .registries import EMBEDDERS, MEMORY_POLICIES, RETRIEVERS, VECTOR_INDEXES
from .retrieve import BM25Index, reciprocal_rank_fusion
from .store import MemoryStore, MemoryStoreError, UnknownMemoryError

__all__ = ["BM25Index", "DAY", "EMBEDDERS", "ExactIndex", "FaissIndex", "HashingEmbedder", "HnswIndex",
           "LMConsolidator", "MEMORY_POLICIES", "Memory", "MemoryPolicy", "MemoryStore", "MemoryStoreError",
           "MiniLMEmbedder", "RETRIEVERS", "ReplayBuffer", "RuleConsolidator", "SimulatedClock", "SystemClock",
           "UnknownMemoryError", "VECTOR_INDEXES", "create_embedder", "create_index", "herding_order",
           "published_retention", "reciprocal_rank_fusion", "retention"]
