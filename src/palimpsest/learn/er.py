"""Experience replay (ER) from "On Tiny Episodic Memories in Continual Learning" (Chaudhry et al.,
2019): a small reservoir buffer; every step trains on the incoming mini-batch concatenated with an
equally large mini-batch drawn from the buffer (one joint cross-entropy), then offers the incoming
examples (never the replayed ones) to the buffer.
"""
from __future__ import annotations

from ..core.registry import STRATEGIES
from ..data.batch import Batch
from .components import as_batch
from .replay import ReplaySettings, ReplayStrategy


@STRATEGIES.register("er", summary="experience replay: train on the incoming batch plus a batch drawn from a "
                     "reservoir buffer (Chaudhry et al. 2019)")
class ER(ReplayStrategy):
    """Experience replay with a tiny episodic memory (Chaudhry et al., 2019)."""

    name = "er"
    Config = ReplaySettings

    def prepare_batch(self, ctx, batch, values):
        replay = self.buffer.sample(self.replay_size(values))
        return Batch.cat(batch, as_batch(replay)) if replay else batch

    def after_step(self, ctx, batch, values):
        self.buffer.add(batch.head(values["incoming"]))
