"""Prototype-Sample Relation Distillation (PRD): Asadi, Davari, Mudur, Aljundi and Belilovsky,
"Prototype-Sample Relation Distillation: Towards Replay-Free Continual Learning", ICML 2023.
Followed: the paper and the authors' pre-release code (github.com/naderAsadi/Probing-Continual-Learning,
methods/repe.py, with the README's settings).

No example of an earlier experience is kept. Each mini-batch of new data goes through the network
as two augmented views; with f the backbone's features, g a projection head and p_c the prototype of
class c (the head's weight row of c, no bias), the loss is

    L = SupCon(g(f) of both views, T = 0.1)
        + prototypes_coef * mean_i (1 - cos(sg[f_i], p_{y_i}))         (the prototypes follow the features)
        + distill_coef * sum_{old tasks t} CE(softmax_t(f_old . p_old / |p_old|), softmax_t(f . p / |p|))

The first term learns the representation by supervised contrast; the second moves the prototypes of
the new classes to their samples (stop-gradient sg: prototypes do not shape the features); the third,
the relation distillation, keeps for every earlier task the softmax over its classes of each new
sample's (norm-of-prototype scaled) similarity to their prototypes as the model and prototypes at the
end of the previous experience had it, so old prototypes evolve with the representation instead of
staying where they were. Prediction: the cosine between f(x) and every prototype of a class seen so
far (`CosineClassifier`); task-IL restricts it to the task's classes.

Settings from the code's README: SupCon temperature 0.1, prototypes_coef 2, distill_coef 4,
distillation temperature 1, projection 512 -> 128 on a ResNet-18.

Departures: one optimizer and learning rate for the network and the prototypes (the code gives the
prototypes their own SGD, lr 0.01 without momentum, same as its network's lr); the projection head
is an MLP of `projection_hidden` and `projection` units added to the model by `prepare` (for an MLP
backbone the code's 512 -> 128 is scaled to the feature width); views come from `data.augment`'s
"strong" recipe (resized crop, flip, noise: the grayscale analogue of the code's kornia crop, flip,
colour jitter and grayscale); no warm-up epochs on the first task. In domain-incremental streams
every class returns, so the distillation covers the earlier experiences' classes while their
prototypes keep learning from the new inputs.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..data.augment import RECIPES, augment
from ..data.batch import Batch
from ..models.heads import CosineClassifier
from ..train.losses import supervised_contrastive
from .components import Snapshot
from .strategy import Strategy


def scaled_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """f . p_c / |p_c| for every prototype row (the code's `_get_scores`: features not normalised)."""
    return features @ prototypes.T / prototypes.norm(dim=1).clamp(min=1e-12)


def relation_distillation(new_scores: torch.Tensor, old_scores: torch.Tensor, groups: list[torch.Tensor],
                          temperature: float = 1.0) -> torch.Tensor:
    """sum over groups of the soft cross-entropy CE(softmax(old / T), softmax(new / T)) over the
    group's columns, averaged over rows (0 without groups)."""
    loss = new_scores.new_zeros(())
    for cols in groups:
        target = F.softmax(old_scores[:, cols] / temperature, dim=1)
        loss = loss - (target * F.log_softmax(new_scores[:, cols] / temperature, dim=1)).sum(1).mean()
    return loss


@STRATEGIES.register("prd", summary="prototype-sample relation distillation: replay-free SupCon features, evolving "
                     "prototypes, old prototypes' relations to new samples distilled (Asadi et al. 2023)")
class PRD(Strategy):
    """Prototype-Sample Relation Distillation (Asadi et al., ICML 2023); see the module docstring."""

    name = "prd"

    class Config(Settings):
        temperature: float = Field(0.1, gt=0, description="SupCon temperature (the code's supcon_temperature)")
        prototypes_coef: float = Field(2.0, ge=0, description="weight of the prototype loss 1 - cos(f, p_y)")
        distill_coef: float = Field(4.0, ge=0, description="weight of the prototype-sample relation distillation")
        distill_temperature: float = Field(1.0, gt=0, description="softmax temperature of the distillation")
        projection: int = Field(128, ge=1, description="output width of the projection head SupCon reads")
        projection_hidden: int = Field(256, ge=1, description="hidden width of the projection head (the code: 512 "
                                       "on a ResNet-18's 512 features)")
        augmentation: str = Field("strong", pattern="^(" + "|".join(RECIPES) + ")$",
                                  description="how each of the two views is drawn (data/augment.py)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.previous = Snapshot()          # network and prototypes at the end of the previous experience
        self.old_groups: list[list[int]] = []   # the classes of each finished experience

    def prepare(self, model: nn.Module) -> nn.Module:
        c = self.config
        model.projector = nn.Sequential(nn.Linear(model.feature_dim, c.projection_hidden), nn.ReLU(),
                                        nn.Linear(c.projection_hidden, c.projection))
        return model

    def prepare_batch(self, ctx, batch, values):
        incoming = batch.head(values["incoming"])
        recipe = self.config.augmentation
        return Batch.cat(Batch(incoming, inputs=augment(incoming["inputs"], recipe)),
                         Batch(incoming, inputs=augment(incoming["inputs"], recipe)))

    def batch_loss(self, ctx, batch, output, values):
        c, model = self.config, ctx.model
        features, targets = output.features.flatten(1), batch["targets"]
        projected = F.normalize(model.projector(features), dim=1)
        loss = supervised_contrastive(projected, targets, temperature=c.temperature)
        prototypes = model.class_weights()
        cosine = F.cosine_similarity(features.detach(), prototypes[targets], dim=1)
        loss = loss + c.prototypes_coef * (1 - cosine).mean()
        return loss + c.distill_coef * self.distillation(ctx, batch, features)

    def distillation(self, ctx, batch, features: torch.Tensor) -> torch.Tensor:
        """The relation distillation of a batch (0 before the first snapshot)."""
        if not self.previous or not self.old_groups:
            return features.new_zeros(())
        old = self.previous.model
        with torch.no_grad():
            old_scores = scaled_scores(old.features(batch["inputs"]).flatten(1), old.class_weights())
        groups = [torch.tensor(g, device=features.device) for g in self.old_groups]
        return relation_distillation(scaled_scores(features, ctx.model.class_weights()), old_scores, groups,
                                     self.config.distill_temperature)

    def after_experience(self, ctx, exp):
        self.previous.take(ctx.model)
        group = sorted(int(k) for k in exp.classes)
        if group not in self.old_groups:
            self.old_groups.append(group)

    def eval_model(self, model):
        return CosineClassifier(model, 1.0)

    def extra_state(self):
        return {"old_groups": [list(g) for g in self.old_groups]}

    def load_extra_state(self, state):
        self.old_groups = [[int(k) for k in g] for g in state.get("old_groups", [])]


__all__ = ["PRD", "relation_distillation", "scaled_scores"]
