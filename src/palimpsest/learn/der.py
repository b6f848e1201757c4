"""DER and DER++ from "Dark Experience for General Continual Learning: a Strong, Simple Baseline"
(Buzzega et al., 2020).

DER keeps, with each buffered example, the logits the network gave it at the step it was seen
(during training, from the same forward pass that trained on it; Avalanche 0.6 recorded them at
the end of the experience instead, which is a different method). Each step:
    loss = CE(incoming) + alpha * MSE(logits(x'), stored logits of x')          (DER)
         + beta * CE(logits(x''), y'')                                          (DER++)
with x' and x'' two independent draws from a reservoir buffer. All rows go through one forward.

Masked logits: our single-head models give classes not yet observed the constant MASKED_LOGIT
(-1e4). Storing those constants and matching them once the class is active would cost ~1e8 per
entry; matching only the entries live at storage time instead leaves an old example's logits for
later classes free, and then DER is no better than naive in class-incremental learning (measured
on split digits: 19% both). So, as Mammoth's unmasked networks do, we store the head's raw outputs
for every class, captured from the training forward pass itself (a forward hook on the head that
lives only during that pass, no extra compute), and match every entry that is live in the current
model: an old example keeps the low scores it gave classes that did not exist yet. Models without
a single linear head (one head per task) store their masked logits; there a masked entry stays
masked for that example (its task's head decides), and entries masked at either end are skipped.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from ..data.batch import Batch
from ..models.heads import MASKED_LOGIT
from .components import as_batch
from .replay import ReplaySettings, ReplayStrategy


class DERConfig(ReplaySettings):
    alpha: float = Field(1.0, ge=0, description="weight of the logit-matching (MSE) term on replayed examples")


class DERPPConfig(DERConfig):
    beta: float = Field(0.5, ge=0, description="weight of the cross-entropy on a second, independent replay batch")


def logit_matching_loss(logits: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the entries live (not masked) both now and when stored."""
    live = (stored > MASKED_LOGIT / 2) & (logits > MASKED_LOGIT / 2)
    squared = torch.where(live, logits - stored, torch.zeros_like(logits)).pow(2)
    return squared.sum() / live.sum().clamp(min=1)


@STRATEGIES.register("der", summary="dark experience replay: match the logits buffered examples had when "
                     "they were seen (Buzzega et al. 2020)")
class DER(ReplayStrategy):
    """Dark Experience Replay (Buzzega et al., 2020)."""

    name = "der"
    Config = DERConfig
    beta = 0.0

    def _raw_head(self, ctx) -> torch.nn.Module | None:
        model = ctx.model
        single = getattr(model, "head_kind", None) == "single" and isinstance(getattr(model, "head", None), nn.Linear)
        return model.head if single else None

    def prepare_batch(self, ctx, batch, values):
        head_layer = self._raw_head(ctx)
        if head_layer is not None:
            # the head's raw outputs of this step's forward pass, captured while it runs (removed in batch_loss)
            values["der_hook"] = head_layer.register_forward_hook(
                lambda module, inputs, output: values.__setitem__("der_raw_logits", output))
        n = self.replay_size(values)
        matched = self.buffer.sample(n)
        values["der_stored_logits"] = matched.get("logits")
        values["der_matched"] = len(matched["targets"]) if matched else 0
        parts = [batch, as_batch(matched)] if matched else [batch]
        if self.beta > 0 and matched:
            parts.append(as_batch(self.buffer.sample(n)))
        return Batch.cat(*parts) if len(parts) > 1 else batch

    def batch_loss(self, ctx, batch, output, values):
        n, k, logits = values["incoming"], values["der_matched"], output.logits
        hook = values.pop("der_hook", None)
        if hook is not None:
            hook.remove()
        # What the buffer stores for the incoming examples: this step's logits, before the update.
        raw = values.pop("der_raw_logits", None)
        values["der_incoming_logits"] = (raw if raw is not None else logits)[:n].detach()
        loss = F.cross_entropy(logits[:n], batch["targets"][:n])
        if k:
            loss = loss + self.config.alpha * logit_matching_loss(logits[n:n + k], values["der_stored_logits"])
        if len(batch["targets"]) > n + k:
            loss = loss + self.beta * F.cross_entropy(logits[n + k:], batch["targets"][n + k:])
        return loss

    def after_step(self, ctx, batch, values):
        self.buffer.add(batch.head(values["incoming"]), values["der_incoming_logits"])


@STRATEGIES.register("derpp", summary="DER++: dark experience replay plus cross-entropy on a second replay "
                     "batch (Buzzega et al. 2020)")
class DERPP(DER):
    """DER++ (Buzzega et al., 2020): DER plus beta * CE on an independent replay batch."""

    name = "derpp"
    Config = DERPPConfig

    @property
    def beta(self) -> float:
        return self.config.beta
