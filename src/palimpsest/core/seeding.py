"""Seeding and thread settings. Every random draw in palimpsest comes from a seed the user set."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (same parts -> same seed, across processes)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def generator(*parts: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def configure_torch(threads: int | None = None) -> None:
    """Pin torch threads (PALIMPSEST_THREADS or OMP_NUM_THREADS, default: leave as is) and flush
    denormals: in class-incremental fine-tuning many momentum values become denormal floats, which
    slows CPU training about 2x (see ANCHORS.md)."""
    if threads is None:
        env = os.environ.get("PALIMPSEST_THREADS") or os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() else None
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
