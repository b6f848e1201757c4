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

import copy

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .strategy import Strategy
from .trainer import task_ids_of

SNAPSHOT = "snapshot."


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with no gradients (what old-model distillation reads)."""
    old = copy.deepcopy(model).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    return old


def softened_kl(new: torch.Tensor, old: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(old/T) || softmax(new/T)) over the last dimension, summed over any middle
    dimension (one softmax per group), averaged over the batch."""
    log_new = F.log_softmax(new / temperature, dim=-1)
    log_old = F.log_softmax(old / temperature, dim=-1)
    kl = F.kl_div(log_new, log_old, reduction="none", log_target=True).sum(-1)
    return kl.reshape(len(kl), -1).sum(1).mean()


def is_routed(ctx) -> bool:
    """True when the trainer's logits come from each example's own task head only."""
    return ctx.use_task_ids and getattr(ctx.model, "head_kind", "single") == "multi"


@STRATEGIES.register("lwf", summary="Learning without Forgetting: distil the previous model's outputs on new data")
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): cross-entropy plus distillation towards a
    frozen snapshot of the model taken at the end of the previous experience."""

    name = "lwf"

    class Config(Settings):
        alpha: float = Field(1.0, ge=0, description="weight of the distillation term (the paper's lambda_o)")
        temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation (the paper: 2)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.snapshot: nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None  # snapshot weights loaded before a model exists
        self.known_tasks: list[int] = []
        self._groups: list[torch.Tensor] = []   # class ids of each softmax of the distillation
        self._tasks: list[int] = []             # the task of each group (task-IL)
        self._stacked: torch.Tensor | None = None  # the groups as one (G, k) tensor when sizes agree

    def before_experience(self, ctx, exp):
        if self.snapshot is None and self._pending is not None:
            self.snapshot = frozen_copy(ctx.model)
            self.snapshot.load_state_dict(self._pending)
            self._pending = None
        if self.snapshot is None:
            return
        self.snapshot.to(ctx.device)
        known = set(self.snapshot.active.nonzero(as_tuple=True)[0].tolist()) if hasattr(self.snapshot, "active") \
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
        if self.snapshot is None or not self._groups:
            return logits, logits.new_zeros(())
        model, x, temperature = ctx.model, batch.inputs, self.config.temperature
        if is_routed(ctx):
            feats = model.features(x)
            logits = model.head_logits(feats, batch.task_ids)  # the trainer's logits, on this graph
            with torch.no_grad():
                old_feats = self.snapshot.features(x)
            if getattr(model, "needs_task_ids", False):   # tasks share class ids: one head at a time
                pairs = []
                for cols, t in zip(self._groups, self._tasks):
                    ids = batch.task_ids.new_full((len(x),), t)
                    with torch.no_grad():
                        old = self.snapshot.head_logits(old_feats, ids)[:, cols]
                    pairs.append((model.head_logits(feats, ids)[:, cols], old))
                return logits, sum(softened_kl(new, old, temperature) for new, old in pairs)
            new_all = model.head_logits(feats, None)   # every head side by side
            with torch.no_grad():
                old_all = self.snapshot.head_logits(old_feats, None)
        else:
            new_all = logits
            with torch.no_grad():
                old_all = self.snapshot(x, batch.task_ids if ctx.use_task_ids else None)
        if self._stacked is not None:   # groups of equal size: one softmax call for all of them
            return logits, softened_kl(new_all[:, self._stacked], old_all[:, self._stacked], temperature)
        return logits, sum(softened_kl(new_all[:, cols], old_all[:, cols], temperature) for cols in self._groups)

    def batch_loss(self, ctx, batch, logits):
        logits, kd = self.distillation(ctx, batch, logits)
        return F.cross_entropy(logits, batch.targets) + self.config.alpha * kd

    def after_experience(self, ctx, exp):
        self.snapshot = frozen_copy(ctx.model)
        self._pending = None
        self.known_tasks = sorted(set(self.known_tasks) | set(task_ids_of(exp).unique().tolist()))

    # -- state --------------------------------------------------------------------------------
    def state_dict(self):
        weights = self.snapshot.state_dict() if self.snapshot is not None else (self._pending or {})
        return {"known_tasks": list(self.known_tasks),
                **{SNAPSHOT + k: v.detach().clone() for k, v in weights.items()}}

    def load_state_dict(self, state):
        self.known_tasks = [int(t) for t in state.get("known_tasks", [])]
        weights = {k[len(SNAPSHOT):]: v for k, v in state.items() if k.startswith(SNAPSHOT)}
        self.snapshot, self._pending = None, (weights or None)
