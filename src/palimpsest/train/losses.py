"""Losses shared by strategies, unlearners and audits.

- `softened_kl`: KL(softmax(old/T) || softmax(new/T)), one softmax per group (distillation: LwF,
  SCRUB, iCaRL-style targets).
- `masked_cross_entropy`: cross-entropy over a subset of classes (ER-ACE's asymmetric loss).
- `supervised_contrastive`: SupCon (Khosla et al. 2020) between anchors and contrast vectors, with
  the proxy form of PCR (anchors against class proxies) and the all-views form of PRD.
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


def supervised_contrastive(anchors: torch.Tensor, anchor_labels: torch.Tensor, contrasts: torch.Tensor | None = None,
                           contrast_labels: torch.Tensor | None = None, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss ("Supervised Contrastive Learning", Khosla et al. 2020), the
    mean over anchors of -mean_{p positive} log softmax_j(a . c_j / T)[p].

    Vectors are used as given (normalise them first for cosine similarities). Without `contrasts`
    the anchors are contrasted with each other and each anchor's own row is left out (SupConLoss's
    "all" mode over stacked views); with `contrasts` every contrast row counts, its positives being
    those with the anchor's label (the "proxy" mode of PCR, where row j is the proxy of sample j's
    class). Anchors without any positive are left out of the mean."""
    own = contrasts is None
    contrasts = anchors if own else contrasts
    contrast_labels = anchor_labels if contrast_labels is None else contrast_labels
    logits = anchors @ contrasts.T / temperature
    positives = anchor_labels.view(-1, 1) == contrast_labels.view(1, -1)
    if own:
        self_pairs = torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
        logits = logits.masked_fill(self_pairs, MASKED_LOGIT / temperature)
        positives = positives & ~self_pairs
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    kept = counts > 0
    mean_positive = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1)[kept] / counts[kept]
    return -mean_positive.mean() if bool(kept.any()) else anchors.new_zeros(())


__all__ = ["IGNORE_INDEX", "masked_cross_entropy", "shifted_cross_entropy", "softened_kl", "supervised_contrastive"]
