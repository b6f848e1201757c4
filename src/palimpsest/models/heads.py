"""Classifier = backbone + head. Every model returns logits over the global class space."""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError

# Logit given to classes a model may not predict. Finite so that differences and KL terms of two
# masked logits stay 0 rather than NaN; exp(-1e4) is exactly 0 in float32 and float16.
MASKED_LOGIT = -1.0e4


class Classifier(nn.Module):
    """A backbone followed by either one head over all classes or one head per task.

    Single head: units exist for every class but only classes the model has been shown
    (`observe_classes`) can be predicted. This behaves like Avalanche's growing head,
    IncrementalClassifier(masking=True), while keeping parameter shapes, checkpoints and optimizer
    state fixed across experiences. It is NOT Avalanche's SimpleMLP (nor the continual-learning-
    baselines' MLP with initial_out_features=0), whose plain nn.Linear head trains every class's
    logit from the start: that is `mask_unseen=False`, a plain fixed head over every class. The
    choice moves class-incremental results (A-GEM on split Fashion-MNIST: ~42 % masked, ~59 % fixed;
    docs/PARITY.md).

    Multi head: one linear head per task over that task's classes; `forward(x, task_ids)` routes
    each example to its task's head. Without task ids, heads are stacked side by side, which is
    only defined when tasks have disjoint classes.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int, head: str = "single",
                 task_classes: list[tuple[int, ...]] | None = None, mask_unseen: bool = True) -> None:
        super().__init__()
        self.mask_unseen = mask_unseen
        if head not in ("single", "multi"):
            raise ConfigError("unknown head", expected="'single' or 'multi'", got=head)
        self.backbone, self.feature_dim, self.n_classes, self.head_kind = backbone, feature_dim, n_classes, head
        self.register_buffer("active", torch.zeros(n_classes, dtype=torch.bool))
        if head == "single":
            self.head = nn.Linear(feature_dim, n_classes)
            self.task_classes = None
        else:
            if not task_classes:
                raise ConfigError("a multi-head model needs each task's classes",
                                  expected="task_classes=[(0, 1), (2, 3), ...]", got=task_classes,
                                  fix="create the model from a stream (create_model(..., stream=stream))")
            self.task_classes = [tuple(int(c) for c in cs) for cs in task_classes]
            self.heads = nn.ModuleList(nn.Linear(feature_dim, len(cs)) for cs in self.task_classes)
            for t, cs in enumerate(self.task_classes):
                self.register_buffer(f"classes_{t}", torch.tensor(cs, dtype=torch.long), persistent=False)
            flat = [c for cs in self.task_classes for c in cs]
            self.disjoint_tasks = len(flat) == len(set(flat))

    @property
    def needs_task_ids(self) -> bool:
        return self.head_kind == "multi" and not self.disjoint_tasks

    def observe_classes(self, classes) -> None:
        """Let the model predict these classes from now on (called before each experience)."""
        self.active[list(classes)] = True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def head_logits(self, feats: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.head_kind == "single":
            logits = self.head(feats)
            return logits.masked_fill(~self.active, MASKED_LOGIT) if self.mask_unseen else logits
        out = feats.new_full((len(feats), self.n_classes), MASKED_LOGIT)
        if task_ids is None:
            if not self.disjoint_tasks:
                raise ConfigError("this multi-head model needs task ids", expected="forward(x, task_ids)",
                                  got="task_ids=None", fix="pass task ids, or use head='single'")
            for t, head in enumerate(self.heads):
                out[:, getattr(self, f"classes_{t}")] = head(feats)
            return out.masked_fill(~self.active, MASKED_LOGIT)
        for t in torch.unique(task_ids).tolist():
            rows = task_ids == t
            out[rows.nonzero(as_tuple=True)[0].unsqueeze(1), getattr(self, f"classes_{t}")] = self.heads[t](feats[rows])
        return out

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_logits(self.backbone(x), task_ids)

    def class_weights(self) -> torch.Tensor:
        """(n_classes, feature_dim): the head's weight row of every class (one head, or the heads of
        disjoint tasks side by side). Prototype and proxy methods read these rows as class vectors."""
        if self.head_kind == "single":
            return self.head.weight
        if not self.disjoint_tasks:
            raise ConfigError("tasks of this multi-head model share class ids, so a class has no single weight row",
                              expected="a single head, or tasks with disjoint classes", got=self.task_classes,
                              fix="use head: single")
        rows = torch.cat([h.weight for h in self.heads])
        order = torch.cat([getattr(self, f"classes_{t}") for t in range(len(self.heads))])
        return rows[torch.argsort(order)]

    def cosine_logits(self, features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """cos(features, w_c) / temperature for every class c (the head's weight rows, no bias);
        classes the model may not predict get MASKED_LOGIT."""
        weights = torch.nn.functional.normalize(self.class_weights(), dim=1)
        cos = torch.nn.functional.normalize(features.flatten(1), dim=1) @ weights.T / temperature
        return cos.masked_fill(~self.active, MASKED_LOGIT) if self.mask_unseen else cos


class CosineClassifier(nn.Module):
    """What evaluation calls for methods that classify by angle alone (PCR, PRD): the logits are
    `model.cosine_logits(features)`. Shares the model's weights (no copy)."""

    needs_task_ids = False

    def __init__(self, model: Classifier, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    @property
    def active(self) -> torch.Tensor:
        return self.model.active

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.cosine_logits(self.model.features(x), self.temperature)
