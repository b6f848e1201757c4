"""Memory: replay buffers for continual learning, neural memories written at test time, and the agent-memory
store that forgets on purpose.

    ReplayBuffer                    tensor-backed replay buffer (buffer.py)
    MemoryLayer, MemoryState        the associative-memory core with Miras' four choices (associative.py)
    create_memory(name, dim)        presets (linear attention, DeltaNet, gated DeltaNet, Titans, Moneta,
                                    Yaad, Memora), MoM, HCAM and attention by name (presets.py)
    MemoryStore                     the agent-memory store (store.py):

    from palimpsest.memory import MemoryStore, SimulatedClock
    store = MemoryStore("memory.sqlite", policy="ebbinghaus", clock=SimulatedClock())
    store.add("Alice is allergic to peanuts", user_id="alice")
    store.search("what can't alice eat?", user_id="alice")[0].text
"""
from . import hcam, mom, presets, titans  # noqa: F401  (registers the presets, MoM, HCAM, Titans MAC/MAG/MAL)
from .associative import MemoryConfig, MemoryLayer, MemoryState
from .buffer import ReplayBuffer, herding_order
from .clock import DAY, SimulatedClock, SystemClock
from .embed import HashingEmbedder, MiniLMEmbedder, create_embedder
from .index import ExactIndex, FaissIndex, HnswIndex, create_index
from .policies import LMConsolidator, Memory, MemoryPolicy, RuleConsolidator, published_retention, retention
from .presets import PRESETS, create_memory, preset_names
from .registries import EMBEDDERS, MEMORY_POLICIES, RETRIEVERS, VECTOR_INDEXES
from .retrieve import BM25Index, reciprocal_rank_fusion
from .store import MemoryStore, MemoryStoreError, UnknownMemoryError

__all__ = ["BM25Index", "DAY", "EMBEDDERS", "ExactIndex", "FaissIndex", "HashingEmbedder", "HnswIndex",
           "LMConsolidator", "MEMORY_POLICIES", "Memory", "MemoryConfig", "MemoryLayer", "MemoryPolicy",
           "MemoryState", "MemoryStore", "MemoryStoreError", "MiniLMEmbedder", "PRESETS", "RETRIEVERS",
           "ReplayBuffer", "RuleConsolidator", "SimulatedClock", "SystemClock", "UnknownMemoryError",
           "VECTOR_INDEXES", "create_embedder", "create_index", "create_memory", "herding_order", "preset_names",
           "published_retention", "reciprocal_rank_fusion", "retention"]
