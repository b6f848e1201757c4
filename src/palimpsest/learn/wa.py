"""Weight Aligning, from "Maintaining Discrimination and Fairness in Class Incremental Learning"
(Zhao, Xiao, Gan, Zhang and Xia, CVPR 2020).

The paper keeps discrimination WITHIN old classes with knowledge distillation and restores fairness
BETWEEN old and new classes by correcting the last layer, whose weight rows of new classes grow
larger than those of old ones during training on mostly-new data. After each experience that
brings new classes:

    gamma = mean_{c old} ||w_c|| / mean_{c new} ||w_c||,     w_c <- gamma * w_c  for every new class c

and during training the weights of the last layer are clipped to be non-negative after each
optimizer step (features after a ReLU are non-negative, so a positive weight vector's norm then
measures how strongly a class responds).

A plug-in: `{name: er, plus: [wa, lwf]}` is the paper's method (exemplars, distillation, aligning),
`plus: [lwf]` its "KD alone" baseline. List `wa` before `lwf`, so the snapshot LwF distils from
at the next experience is the ALIGNED model, as in the paper.

Departures: the paper's loss is (1 - lambda) CE + lambda KD with lambda = old / all classes;
composed here it is ER's cross-entropy plus LwF's alpha * KD (alpha a setting). Only the weight rows
are aligned (the bias is left alone), as in PyCIL's implementation of WA. Models with one head per
task have no shared last layer to align and are refused.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import STRATEGIES
from .strategy import Strategy


def align_weights(weight: torch.Tensor, old: list[int], new: list[int]) -> float:
    """Scale the rows of `new` classes so that their mean norm equals that of the `old` rows;
    returns gamma (1.0 when either set is empty)."""
    if not old or not new:
        return 1.0
    norms = weight.detach().norm(dim=1)
    gamma = float(norms[old].mean() / norms[new].mean().clamp(min=1e-12))
    with torch.no_grad():
        weight[new] *= gamma
    return gamma


@STRATEGIES.register("wa", summary="weight aligning: rescale new classes' last-layer weights to the old classes' "
                     "mean norm after each experience (Zhao et al. 2020); a plug-in, with lwf for the paper's KD")
class WeightAligning(Strategy):
    """Weight Aligning (Zhao et al., CVPR 2020); see the module docstring."""

    name = "wa"

    class Config(Settings):
        clip_positive: bool = Field(True, description="clip the last layer's weights to >= 0 after every step "
                                    "(the paper's constraint)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.seen: list[int] = []      # classes learned in finished experiences
        self.gammas: list[float] = []  # the factor applied after each experience (a record, not state the method reads)

    @staticmethod
    def head(ctx) -> torch.nn.Linear:
        model = ctx.model
        if getattr(model, "head_kind", None) != "single" or not isinstance(getattr(model, "head", None), torch.nn.Linear):
            raise ConfigError("weight aligning needs one linear head over all classes",
                              expected="a model with head: single", got=getattr(model, "head_kind", type(model).__name__),
                              fix="set model.head to single (class- and task-incremental streams both work with it)")
        return model.head

    def setup(self, ctx):
        self.head(ctx)
        super().setup(ctx)

    def after_step(self, ctx, batch, values):
        if self.config.clip_positive:
            with torch.no_grad():
                self.head(ctx).weight.clamp_(min=0.0)

    def after_experience(self, ctx, exp):
        active = ctx.model.active.nonzero(as_tuple=True)[0].tolist()
        new = [c for c in active if c not in set(self.seen)]
        self.gammas.append(align_weights(self.head(ctx).weight, list(self.seen), new))
        self.seen = sorted(set(self.seen) | set(new))

    def extra_state(self):
        return {"seen": list(self.seen), "gammas": list(self.gammas)}

    def load_extra_state(self, state):
        self.seen = [int(c) for c in state.get("seen", [])]
        self.gammas = [float(g) for g in state.get("gammas", [])]


__all__ = ["WeightAligning", "align_weights"]
