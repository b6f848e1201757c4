"""SalUn: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency"
(ICLR 2024).

1. Weight saliency: the gradient of the forget set's cross-entropy (summed over the whole forget
   set, model in eval mode) is taken for every parameter; the mask keeps the entries whose
   gradient magnitude is in the top `threshold` fraction of ALL entries of the model (one global
   ranking, as the authors' generate_mask.py; 0.5 = above the median).
2. Random-label unlearning restricted to the mask: the forget set relabelled with random wrong
   labels, each batch joined by a retain batch, and only salient entries updated. Unmasked
   entries stay bit-identical (gradients masked, and put back after each step so that momentum or
   weight decay cannot move them either).

The paper trains on the shuffled union of the relabelled forget set and the retain set
(`retain_ratio=None`: one pass over the union per epoch, as costly as an epoch of retraining). The
defaults here pair each forget example with one retain example for two passes over the forget set,
which is far cheaper and, on a held-out split of Fashion-MNIST with a small CNN (seed 100), forgot a
whole class as well. These defaults suit class forgetting; on random 10 % forgetting they
over-forget (docs/FEATURES.md).
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.registry import UNLEARNERS
from .base import Split
from .random_labels import RandomLabels


def saliency_mask(model: nn.Module, forget: Split, threshold: float, device, batch_size: int = 1024
                  ) -> dict[str, torch.Tensor]:
    """Parameter name -> bool mask of the entries whose |d CE(forget) / d theta| is among the top
    `threshold` fraction of all entries (ties broken by rank, so exactly round(threshold * size)
    entries are kept)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, len(forget), batch_size):
        x = forget.inputs[start:start + batch_size].to(device, non_blocking=True)
        y = forget.targets[start:start + batch_size].to(device, non_blocking=True)
        F.cross_entropy(model(x), y, reduction="sum").backward()
    grads = [p.grad.abs().flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device)
             for p in params.values()]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat(grads)
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, round(threshold * len(flat)), sorted=False).indices] = True
    return {n: m.view_as(p) for (n, p), m in zip(params.items(), keep.split([p.numel() for p in params.values()]))}


@UNLEARNERS.register("salun", summary="SalUn: random-label unlearning restricted to salient weights")
class SalUn(RandomLabels):
    """Fan et al. (ICLR 2024): random-label fine-tuning (+ retain) that only updates the weights whose
    forget-loss gradient magnitude is in the top `threshold` fraction."""

    name = "salun"
    reads = {"forget": "examples", "retain": "examples"}

    class Config(RandomLabels.Config):  # random labels' settings, plus the saliency threshold
        threshold: float = Field(0.5, gt=0, le=1, description="fraction of all weight entries that may change "
                                 "(the largest forget-loss gradient magnitudes)")

    def mask(self, model, data, ctx):
        return saliency_mask(model, data.forget(), self.config.threshold, ctx.device, ctx.training.eval_batch_size)
