"""The view-batch model, from "Do Your Best and Get Enough Rest for Continual Learning" (Lee et al.,
CVPR 2025; code github.com/hankyul2/ViewBatchModel).

Ebbinghaus' forgetting curve says: learn a lot at once, then rest long enough before learning it
again. The paper turns that into two changes of how a continual learner sees its data, at an
unchanged budget of rows per step and of steps:

1. View-batch replay. Each example is repeated as R views inside one mini-batch (the first as it
   is, the other R - 1 augmented) instead of once in each of R epochs. A batch of B rows then holds
   B / R distinct examples and an epoch's worth of steps covers 1 / R of the data, so E epochs
   become E / R passes over it: every example is revisited E / R times, each time as R views, and
   the recall interval between two revisits grows R-fold (the authors' `ViewBatchReplay` sampler
   with `num_repeats` R spreads one shuffled, R-fold repeated index list over R epochs).
2. View-batch self-supervision. Each augmented view is pulled towards its example's first view:
   alpha * KL(softmax(first view), detached || softmax(view)), averaged over views and classes as
   the code's `F.kl_div(log p_view, p_first)` (their `--prog-alpha`, 1.0).

A plug-in for any strategy: `{name: er, plus: [view_batch]}` or alone (`view_batch`: plain
fine-tuning with it). Composed, it reshapes the main strategy's passes (`adjust_passes`: batch
B // R, ceil(E / R) epochs), so the main strategy meets B // R incoming rows and draws as many
replayed rows as it would for them; the plug-in then appends R - 1 augmented views of every row of
the batch (incoming and replayed), so ER's step still holds 2B rows. The main strategy sees its own
rows first, as it built them (ER's buffer takes the incoming rows, never a view); the views come
after them and join the main strategy's loss as further rows (a strategy that weighs replayed rows
differently, such as ER-ACE or DER, counts the views among its replayed rows).

Departures: the first view is the example as stored (our streams have no standard augmentation);
the other views use `data.augment`'s recipes (default "strong": resized crop, flip, noise) instead
of AutoAugment on colour images; the self-supervised term starts at once (the code waits 5 of 50
epochs); in online streams (one pass) the budget cannot be kept: each example is still seen once,
as R views, so a step holds B // R examples and there are R times as many steps.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..data.augment import RECIPES, augment
from ..data.batch import Batch
from .strategy import Strategy


def view_batch(batch: Batch, views: int, recipe: str) -> Batch:
    """`batch` followed by `views - 1` augmented copies of all its rows: rows [0, n) are the batch as
    it was, rows [k n, (k + 1) n) the k-th augmented view of each of them."""
    if views <= 1:
        return batch
    extra = [Batch(batch, inputs=augment(batch["inputs"], recipe)) for _ in range(views - 1)]
    return Batch.cat(batch, *extra)


def view_consistency(logits: torch.Tensor, rows: int, views: int) -> torch.Tensor:
    """The code's `F.kl_div(log p_view, p_first)`, mean reduction: KL(p_first || p_view) averaged over
    every augmented view's row and every class, p_first detached. `logits` holds `views` blocks of
    `rows` rows (see `view_batch`)."""
    first = F.softmax(logits[:rows].detach(), dim=1).repeat(views - 1, 1)
    log_views = F.log_softmax(logits[rows:rows * views], dim=1)
    return (torch.xlogy(first, first) - first * log_views).mean()


@STRATEGIES.register("view_batch", summary="view-batch model: each example as several augmented views in one "
                     "batch, revisited R times less often, plus view self-supervision; a plug-in (Lee et al. 2025)")
class ViewBatch(Strategy):
    """View-batch replay and self-supervision (Lee et al., CVPR 2025); see the module docstring."""

    name = "view_batch"

    class Config(Settings):
        views: int = Field(4, ge=1, le=64, description="R: views of each example in a batch (the code's "
                           "--aug-repeat, 4); batches hold batch_size // R examples and epochs become ceil(epochs / R)")
        augmentation: str = Field("strong", pattern="^(" + "|".join(RECIPES) + ")$",
                                  description="data/augment.py recipe of the views after the first")
        ssl_weight: float = Field(1.0, ge=0, description="alpha of the view self-supervision KL term (the code's "
                                  "--prog-alpha, 1.0); 0 = view-batch replay alone")

    def adjust_passes(self, ctx, epochs, batch_size):
        views = self.config.views
        return max(1, math.ceil(epochs / views)), max(1, batch_size // views)

    def passes(self, ctx):
        return self.adjust_passes(ctx, *super().passes(ctx))

    def prepare_batch(self, ctx, batch, values):
        values["view_batch_rows"] = batch.rows
        return view_batch(batch, self.config.views, self.config.augmentation)

    def extra_loss(self, ctx, batch, output, values):
        rows, views = values["view_batch_rows"], self.config.views
        if views <= 1 or self.config.ssl_weight == 0:
            return None
        return self.config.ssl_weight * view_consistency(output.logits, rows, views)


__all__ = ["ViewBatch", "view_batch", "view_consistency"]
