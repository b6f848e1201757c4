"""iCaRL (Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning", CVPR 2017).

  memory      a fixed budget of `memory_size` exemplars, m = memory_size // (classes seen) per
              class, chosen by herding on L2-normalised features at the end of each experience;
              old classes keep their first (highest-priority) m exemplars
  training    the experience's data plus every exemplar, with binary cross-entropy (one sigmoid
              per class) over all classes seen so far; for classes learned before this experience
              the targets are the previous model's sigmoid outputs on the same inputs
              (distillation), for the others the one-hot labels
  evaluation  nearest mean of exemplars: logit = -||phi(x) - mu_y||^2 with phi the L2-normalised
              features and mu_y the renormalised mean of class y's exemplar features, recomputed
              after each experience and masked to the classes that have exemplars

The nearest-mean classifier and the per-class memory are defined for classes that arrive once;
in domain-incremental streams every class comes back with new inputs and the per-class memory
would keep only the newest domain, so "domain" is declared unsupported. Task-IL runs the same
method; the evaluator restricts the nearest mean to the task's classes.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..data.scenarios import Experience
from ..models.heads import MASKED_LOGIT
from .components import ReplayMemory, Snapshot
from .strategy import Strategy, legacy_prefixed


def memory_experience(memory: dict[str, torch.Tensor], task_id: int, before: Experience | None = None) -> Experience:
    """The buffer's examples (after `before`'s, when given) as one Experience that carries each
    example's own task id. The buffer does not keep dataset indices, so `indices` are -1 for its
    examples."""
    parts = [(before.inputs, before.targets, before.task_ids, before.indices)] if before is not None else []
    n = len(memory.get("targets", ()))
    if n:
        parts.append((memory["inputs"].cpu(), memory["targets"].cpu(), memory["task_ids"].cpu(),
                      np.full(n, -1, dtype=np.int64)))
    inputs, targets, task_ids = (torch.cat([p[i] for p in parts]) for i in range(3))
    classes = tuple(sorted({int(c) for c in targets.unique()}))
    return Experience.from_tensors(inputs, targets, task_id, classes, np.concatenate([p[3] for p in parts]),
                                   task_ids=task_ids)


class NearestMeanOfExemplars(nn.Module):
    """iCaRL's classifier: logits = minus the squared distance between the L2-normalised features
    of x and each class's exemplar mean; classes without exemplars get MASKED_LOGIT."""

    needs_task_ids = False

    def __init__(self, model: nn.Module, means: torch.Tensor, has_mean: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("means", means)
        self.register_buffer("has_mean", has_mean)

    @property
    def active(self) -> torch.Tensor:
        return self.has_mean

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        feats = F.normalize(self.model.features(x).flatten(1), dim=1)
        distance = torch.cdist(feats, self.means.to(feats.dtype)).pow(2)
        return (-distance).masked_fill(~self.has_mean, MASKED_LOGIT)


def class_means(features: torch.Tensor, targets: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_classes, d) renormalised means of the L2-normalised features per class, and which
    classes have any example."""
    f = F.normalize(features.flatten(1), dim=1)
    sums = f.new_zeros((n_classes, f.shape[1])).index_add_(0, targets, f)
    counts = torch.bincount(targets, minlength=n_classes)
    return F.normalize(sums, dim=1), counts > 0


@STRATEGIES.register("icarl", summary="iCaRL: herding exemplars, sigmoid distillation, nearest-mean-of-exemplars classifier")
class ICaRL(Strategy):
    """iCaRL (Rebuffi et al. 2017): exemplar rehearsal with binary cross-entropy and distillation
    from the previous model, classification by the nearest mean of exemplars."""

    name = "icarl"
    unsupported = frozenset({"domain"})

    class Config(Settings):
        memory_size: int = Field(2000, ge=1, description="total number of exemplars kept (the paper's K)")
        selection: Literal["herding", "random"] = Field("herding", description="how a new class's exemplars are chosen")
        classifier: Literal["nme", "head"] = Field("nme", description="evaluate with the nearest mean of exemplars "
                                                   "(the paper) or with the trained sigmoid head")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.memory = ReplayMemory(self.config.memory_size)
        self.snapshot = Snapshot()
        self.means: torch.Tensor | None = None
        self.has_mean: torch.Tensor | None = None
        self._distilled: torch.Tensor | None = None   # classes whose targets come from the snapshot

    def before_experience(self, ctx, exp):
        self._distilled = None
        if self.snapshot:
            old = self.snapshot.model.to(ctx.device)
            current = torch.zeros_like(old.active)
            current[list(exp.classes)] = True
            distilled = old.active & ~current
            self._distilled = distilled if bool(distilled.any()) else None

    def training_data(self, ctx, exp):
        return memory_experience(self.memory.all(), exp.task_id, before=exp) if len(self.memory) else exp

    def batch_loss(self, ctx, batch, output, values):
        logits, seen = output.logits, ctx.model.active
        targets = F.one_hot(batch["targets"], logits.shape[1]).to(logits.dtype)
        if self._distilled is not None:
            with torch.no_grad():
                old = torch.sigmoid(self.snapshot.model(batch["inputs"], batch["task_ids"] if ctx.use_task_ids else None))
            targets = torch.where(self._distilled, old, targets)
        return F.binary_cross_entropy_with_logits(logits[:, seen], targets[:, seen])

    def after_experience(self, ctx, exp):
        model = ctx.model
        self.snapshot.take(model)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            features = lambda x: model.features(x.to(ctx.device)).cpu()
            self.memory.buffer.select_class_balanced(exp.inputs, exp.targets, exp.task_ids, self.config.selection,
                                                     features=features)
            self.update_means(model, ctx.stream.n_classes, ctx.device)
        model.train(was_training)

    def update_means(self, model: nn.Module, n_classes: int, device: torch.device | str = "cpu") -> None:
        """Recompute every class's exemplar mean with the current feature extractor."""
        memory = self.memory.all()
        with torch.no_grad():
            feats = torch.cat([model.features(x.to(device)).cpu() for x in memory["inputs"].split(1024)])
        self.means, self.has_mean = class_means(feats, memory["targets"], n_classes)

    def eval_model(self, model):
        if self.config.classifier == "head" or self.means is None:
            return model
        return NearestMeanOfExemplars(model, self.means.to(model.active.device), self.has_mean.to(model.active.device))

    # -- state --------------------------------------------------------------------------------
    def extra_state(self):
        return {} if self.means is None else {"means": self.means.clone(), "has_mean": self.has_mean.clone()}

    def load_extra_state(self, state):
        self.means, self.has_mean = state.get("means"), state.get("has_mean")

    @classmethod
    def upgrade_state(cls, state, version):
        if version == 1:
            upgraded = {"memory": legacy_prefixed(state, "memory"), "snapshot": legacy_prefixed(state, "snapshot")}
            upgraded.update({k: state[k] for k in ("means", "has_mean") if k in state})
            return upgraded
        return state
