"""Frozen snapshots and the trainable / frozen split of a model's weights.

A model whose backbone is frozen (a pretrained encoder, a base under LoRA adapters) must not be
copied whole for every snapshot or checkpoint: `frozen_copy` shares the frozen parameters with the
live model instead of copying them, `trainable_state` keeps what training can change (trainable
parameters and buffers), and `frozen_digest` identifies the frozen base, so a checkpoint can hold
the trainable part alone and still refuse to load onto a different base.
"""
from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn


def frozen_names(model: nn.Module) -> set[str]:
    """Names (as in `state_dict`) of the parameters that do not require gradients."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with no gradients (what old-model distillation reads). Frozen
    parameters are shared with `model`, not copied (they cannot change)."""
    shared = {id(p): p for p in model.parameters() if not p.requires_grad}
    old = copy.deepcopy(model, shared).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    return old


def trainable_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None,
                    frozen: set[str] | None = None) -> dict[str, torch.Tensor]:
    """`state` (default: model.state_dict()) without the frozen parameters of `model`."""
    frozen = frozen_names(model) if frozen is None else frozen
    state = model.state_dict() if state is None else state
    return {k: v for k, v in state.items() if k not in frozen}


def frozen_digest(model: nn.Module) -> str | None:
    """sha256 (16 hex digits) over the names, shapes, dtypes and values of the frozen parameters;
    None when nothing is frozen."""
    names = sorted(frozen_names(model))
    if not names:
        return None
    params = dict(model.named_parameters())
    h = hashlib.sha256()
    for name in names:
        t = params[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


__all__ = ["frozen_copy", "frozen_digest", "frozen_names", "trainable_state"]
