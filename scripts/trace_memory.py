"""A plugin file that logs, at every training call of every memory layer, the range of its gates and
the largest weight of its memory after the call: how the FEATURES row traced Titans' divergence.

    palimpsest run SPEC --plugin scripts/trace_memory.py      # log: memory_trace.jsonl (or $MEMORY_TRACE)

Each line is one call: {"call", "gates": {name: [min, mean, max]}} then {"call", "read", "weights",
"momentum"} (largest absolute values). Calls alternate between the blocks of the model in order.
"""
from __future__ import annotations

import json
import os

import torch

from palimpsest.memory import associative

_LOG = open(os.environ.get("MEMORY_TRACE", "memory_trace.jsonl"), "a")
_gates, _core = associative.MemoryLayer.gates, associative.AssociativeMemory.forward
_calls = {"n": 0}


def _largest(tensors: dict | None) -> dict:
    return {k: float(v.detach().abs().max()) for k, v in (tensors or {}).items()}


def gates(self, x: torch.Tensor) -> dict:
    out = _gates(self, x)
    if self.training:
        _calls["n"] += 1
        ranges = {k: [round(float(v.detach().min()), 4), round(float(v.detach().mean()), 4),
                      round(float(v.detach().max()), 4)] for k, v in out.items()}
        _LOG.write(json.dumps({"call": _calls["n"], "gates": ranges}) + "\n")
        _LOG.flush()
    return out


def core(self, *args, **kwargs):
    y, new = _core(self, *args, **kwargs)
    if self.training:
        _LOG.write(json.dumps({"call": _calls["n"], "read": float(y.detach().abs().max()),
                               "weights": _largest(new.weights), "momentum": _largest(new.momentum)}) + "\n")
        _LOG.flush()
    return y, new


associative.MemoryLayer.gates = gates
associative.AssociativeMemory.forward = core
