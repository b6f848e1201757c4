"""DER and DER++ from "Dark Experience for General Continual Learning: a Strong, Simple Baseline"
(Buzzega et al., 2020).

DER keeps, with each buffered example, the logits the network gave it at the step it was seen
(during training, from the same forward pass that trained on it; Avalanche 0.6 recorded them at
the end of the experience instead, which is a different method). Each step:
    loss = CE(incoming) + alpha * MSE(logits(x'), stored logits of x')          (DER)
         + beta * CE(logits(x''), y'')                                          (DER++)
with x' and x'' two independent draws from a reservoir buffer. All rows go through one forward.

Masked logits: our models give classes not yet observed the constant MASKED_LOGIT (-1e4). Logits
stored before a class appeared hold that constant, and matching it once the class is active would
cost ~1e8 per entry. We therefore match only the entries that were live when stored (a stored
value of MASKED_LOGIT marks a dead entry) and average over those, so alpha keeps the scale of
Mammoth's mean over all logits. Mammoth's unmasked networks store real logits for future classes
and pull them back to their old, untrained values; with masked heads there is nothing to pull.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from ..models.heads import MASKED_LOGIT
from .replay import ReplaySettings, ReplayStrategy, as_batch, cat_batches, head


class DERConfig(ReplaySettings):
    alpha: float = Field(0.3, ge=0, description="weight of the logit-matching (MSE) term on replayed examples")


class DERPPConfig(DERConfig):
    beta: float = Field(0.5, ge=0, description="weight of the cross-entropy on a second, independent replay batch")


def logit_matching_loss(logits: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the entries that were live (not masked) when stored."""
    live = stored > MASKED_LOGIT / 2
    squared = torch.where(live, logits - stored, torch.zeros_like(logits)).pow(2)
    return squared.sum() / live.sum().clamp(min=1)


@STRATEGIES.register("der", summary="dark experience replay: match the logits buffered examples had when "
                     "they were seen (Buzzega et al. 2020)")
class DER(ReplayStrategy):
    """Dark Experience Replay (Buzzega et al., 2020)."""

    name = "der"
    Config = DERConfig
    beta = 0.0

    def prepare_batch(self, ctx, batch):
        n = self.replay_size(batch)
        self._incoming = len(batch.targets)
        matched = self.sample_replay(ctx, n)
        self._stored_logits = matched.get("logits")
        self._n_matched = len(matched["targets"]) if matched else 0
        parts = [batch, as_batch(matched)] if matched else [batch]
        if self.beta > 0 and matched:
            parts.append(as_batch(self.sample_replay(ctx, n)))
        return cat_batches(*parts) if len(parts) > 1 else batch

    def batch_loss(self, ctx, batch, logits):
        n, k = self._incoming, self._n_matched
        # The logits the buffer stores for the incoming examples: this step's, before the update.
        self._incoming_logits = logits[:n].detach()
        loss = F.cross_entropy(logits[:n], batch.targets[:n])
        if k:
            loss = loss + self.config.alpha * logit_matching_loss(logits[n:n + k], self._stored_logits)
        if len(batch.targets) > n + k:
            loss = loss + self.beta * F.cross_entropy(logits[n + k:], batch.targets[n + k:])
        return loss

    def after_step(self, ctx, batch):
        self.remember(ctx, head(batch, self._incoming), self._incoming_logits)
        self._stored_logits = self._incoming_logits = None


@STRATEGIES.register("derpp", summary="DER++: dark experience replay plus cross-entropy on a second replay "
                     "batch (Buzzega et al. 2020)")
class DERPP(DER):
    """DER++ (Buzzega et al., 2020): DER plus beta * CE on an independent replay batch."""

    name = "derpp"
    Config = DERPPConfig

    @property
    def beta(self) -> float:
        return self.config.beta
