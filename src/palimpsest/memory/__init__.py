"""Memory: replay buffers (continual learning) and neural memories written at test time.

    ReplayBuffer                    tensor-backed replay buffer (buffer.py)
    MemoryLayer, MemoryState        the associative-memory core with Miras' four choices (associative.py)
    create_memory(name, dim)        presets (linear attention, DeltaNet, gated DeltaNet, Titans, Moneta,
                                    Yaad, Memora), MoM, HCAM and attention by name (presets.py)
"""
from . import hcam, mom, presets  # noqa: F401  (registers the presets, MoM and HCAM)
from .associative import MemoryConfig, MemoryLayer, MemoryState
from .buffer import ReplayBuffer, herding_order
from .presets import PRESETS, create_memory, preset_names

__all__ = ["MemoryConfig", "MemoryLayer", "MemoryState", "PRESETS", "ReplayBuffer", "create_memory", "herding_order",
           "preset_names"]
