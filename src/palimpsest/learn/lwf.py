"""Learning without Forgetting (Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017).

After each experience the model is frozen into a snapshot (the paper's "original network"). While
learning the next experience the loss is

    cross-entropy(new data) + alpha * KL(snapshot || model), both softened by temperature T,

computed on the current inputs over what the snapshot knew:
  class-IL, domain-IL  one softmax over every class the snapshot could predict (Mammoth, Avalanche);
  task-IL              one softmax per task learned before (the paper's old heads), summed over tasks.
With a multi-head model in task-IL the trainer's forward routes each example through its own task's
head only, so the model is run again here with every head on the same features (one extra forward).
The KL form equals the paper's soft cross-entropy up to a constant (same gradient) and is exactly 0
while the model still equals the snapshot.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..train.losses import softened_kl
from ..train.snapshot import frozen_copy
from .components import Snapshot
from .strategy import Strategy, legacy_prefixed

SNAPSHOT = "snapshot."


def is_routed(ctx) -> bool:
    """True when the trainer's logits come from each example's own task head only."""
    return ctx.use_task_ids and getattr(ctx.model, "head_kind", "single") == "multi"


@STRATEGIES.register("lwf", summary="Learning without Forgetting: distil the previous model's outputs on new data")
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): cross-entropy plus distillation towards a
    frozen snapshot of the model taken at the end of the previous experience. Composed as a
    plug-in (`plus: [lwf]`) it adds its distillation term to the main strategy's loss."""

    name = "lwf"

    class Config(Settings):
        alpha: float = Field(1.0, ge=0, description="weight of the distillation term (the paper's lambda_o)")
        temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation (the paper: 2)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.snapshot = Snapshot()
        self.known_tasks: list[int] = []
        self._groups: list[torch.Tensor] = []   # class ids of each softmax of the distillation
        self._tasks: list[int] = []             # the task of each group (task-IL)
        self._stacked: torch.Tensor | None = None  # the groups as one (G, k) tensor when sizes agree

    def before_experience(self, ctx, exp):
        if not self.snapshot:
            return
        old = self.snapshot.model.to(ctx.device)
        known = set(old.active.nonzero(as_tuple=True)[0].tolist()) if hasattr(old, "active") \
            else set(range(ctx.stream.n_classes))
        if ctx.use_task_ids:   # one softmax per old task, over its classes
            tasks = [t for t in self.known_tasks if t < len(ctx.stream.task_classes)]
            rows = [[c for c in ctx.stream.task_classes[t] if c in known] for t in tasks]
        else:
            tasks, rows = [-1], [sorted(known)]
        self._tasks = [t for t, r in zip(tasks, rows) if r]
        self._groups = [torch.tensor(r, dtype=torch.long, device=ctx.device) for r in rows if r]
        same_size = len({len(r) for r in self._groups}) == 1
        self._stacked = torch.stack(self._groups) if same_size else None

    def distillation(self, ctx, batch, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits for the cross-entropy, distillation term) of a batch; the term is 0 before the
        first snapshot."""
        if not self.snapshot or not self._groups:
            return logits, logits.new_zeros(())
        model, old_model, x, temperature = ctx.model, self.snapshot.model, batch["inputs"], self.config.temperature
        if is_routed(ctx):
            feats = model.features(x)
            logits = model.head_logits(feats, batch["task_ids"])  # the trainer's logits, on this graph
            with torch.no_grad():
                old_feats = old_model.features(x)
            if getattr(model, "needs_task_ids", False):   # tasks share class ids: one head at a time
                pairs = []
                for cols, t in zip(self._groups, self._tasks):
                    ids = batch["task_ids"].new_full((len(x),), t)
                    with torch.no_grad():
                        old = old_model.head_logits(old_feats, ids)[:, cols]
                    pairs.append((model.head_logits(feats, ids)[:, cols], old))
                return logits, sum(softened_kl(new, old, temperature) for new, old in pairs)
            new_all = model.head_logits(feats, None)   # every head side by side
            with torch.no_grad():
                old_all = old_model.head_logits(old_feats, None)
        else:
            new_all = logits
            with torch.no_grad():
                old_all = old_model(x, batch["task_ids"] if ctx.use_task_ids else None)
        if self._stacked is not None:   # groups of equal size: one softmax call for all of them
            return logits, softened_kl(new_all[:, self._stacked], old_all[:, self._stacked], temperature)
        return logits, sum(softened_kl(new_all[:, cols], old_all[:, cols], temperature) for cols in self._groups)

    def batch_loss(self, ctx, batch, output, values):
        logits, kd = self.distillation(ctx, batch, output.logits)
        return F.cross_entropy(logits, batch["targets"]) + self.config.alpha * kd

    def extra_loss(self, ctx, batch, output, values):
        _, kd = self.distillation(ctx, batch, output.logits)
        return self.config.alpha * kd

    def after_experience(self, ctx, exp):
        self.snapshot.take(ctx.model)
        self.known_tasks = sorted(set(self.known_tasks) | set(exp.task_ids.unique().tolist()))

    # -- state --------------------------------------------------------------------------------
    def extra_state(self):
        return {"known_tasks": list(self.known_tasks)}

    def load_extra_state(self, state):
        self.known_tasks = [int(t) for t in state.get("known_tasks", [])]

    @classmethod
    def upgrade_state(cls, state, version):
        if version == 1:
            return {"known_tasks": state.get("known_tasks", []), "snapshot": legacy_prefixed(state, "snapshot")}
        return state


__all__ = ["LwF", "frozen_copy", "is_routed", "softened_kl"]
