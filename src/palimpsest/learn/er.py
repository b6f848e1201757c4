"""Experience replay (ER) from "On Tiny Episodic Memories in Continual Learning" (Chaudhry et al.,
2019): a small reservoir buffer; every step trains on the incoming mini-batch concatenated with an
equally large mini-batch drawn from the buffer (one joint cross-entropy), then offers the incoming
examples (never the replayed ones) to the buffer.
"""
from __future__ import annotations

from ..core.registry import STRATEGIES
from .replay import ReplaySettings, ReplayStrategy, as_batch, cat_batches, head


@STRATEGIES.register("er", summary="experience replay: train on the incoming batch plus a batch drawn from a "
                     "reservoir buffer (Chaudhry et al. 2019)")
class ER(ReplayStrategy):
    """Experience replay with a tiny episodic memory (Chaudhry et al., 2019)."""

    name = "er"
    Config = ReplaySettings

    def prepare_batch(self, ctx, batch):
        self._incoming = len(batch.targets)
        replay = self.sample_replay(ctx, self.replay_size(batch))
        return cat_batches(batch, as_batch(replay)) if replay else batch

    def after_step(self, ctx, batch):
        self.remember(ctx, head(batch, self._incoming))
