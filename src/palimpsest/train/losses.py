"""Losses shared by strategies, unlearners and audits.

- `softened_kl`: KL(softmax(old/T) || softmax(new/T)), one softmax per group (distillation: LwF,
  SCRUB, iCaRL-style targets).
- `masked_cross_entropy`: cross-entropy over a subset of classes (ER-ACE's asymmetric loss).
- `shifted_cross_entropy`: next-token cross-entropy of a causal language model, ignoring -100
  (defined with the causal-LM adapter, models/adapters.py).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..models.adapters import IGNORE_INDEX, shifted_cross_entropy
from ..models.heads import MASKED_LOGIT


def softened_kl(new: torch.Tensor, old: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(old/T) || softmax(new/T)) over the last dimension, summed over any middle
    dimension (one softmax per group), averaged over the batch."""
    log_new = F.log_softmax(new / temperature, dim=-1)
    log_old = F.log_softmax(old / temperature, dim=-1)
    kl = F.kl_div(log_new, log_old, reduction="none", log_target=True).sum(-1)
    return kl.reshape(len(kl), -1).sum(1).mean()


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where only the classes in the bool mask `allowed` compete."""
    return F.cross_entropy(logits.masked_fill(~allowed, MASKED_LOGIT), targets)


__all__ = ["IGNORE_INDEX", "masked_cross_entropy", "shifted_cross_entropy", "softened_kl"]
