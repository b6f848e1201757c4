"""Discrete Key-Value Bottleneck as a continual-learning strategy: "Discrete Key-Value Bottleneck"
(Träuble, Goyal, Rahaman, Mozer, Kawaguchi, Bengio and Schölkopf, ICML 2023).

`prepare` freezes the model's backbone (the encoder) and replaces its head by the bottleneck
(memory/dkvb.py): fixed random projections into `codebooks` heads, frozen keys, learned values, a
non-parametric decoder. Before the first training step the keys are initialised without labels by
k-means on encoder features; only the values train, and each input moves only the values it fetched.

    {name: dkvb, settings: {codebooks: 64, keys: 128, key_dim: 8}}

Key initialisation (`key_init`): `stream_inputs` (default) reads the unlabelled inputs of every training
experience once, before training; `first_experience` only those of the first. The paper initialises the
keys on unlabelled data before the continual stream (a different data set for its CIFAR runs); digits
has no such companion, so the default reads the stream's inputs, never its labels: a stated departure.

Optimiser: plain SGD only (no momentum, no weight decay). Any optimiser state (momentum, Adam's moments,
decay) would move values that the current batch did not fetch, which the method forbids; such settings
are refused with a clear error. Single-head classifiers only.
"""
from __future__ import annotations

import torch
from pydantic import Field
from typing import Literal

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import STRATEGIES
from ..memory.dkvb import DiscreteKeyValueBottleneck
from .strategy import Strategy


@STRATEGIES.register("dkvb", summary="discrete key-value bottleneck on a frozen encoder: only the fetched values "
                     "learn (Träuble et al. 2023)")
class DKVB(Strategy):
    """Frozen encoder, frozen keys, learned values (see the module docstring)."""

    name = "dkvb"

    class Config(Settings):
        codebooks: int = Field(64, ge=1)
        keys: int = Field(128, ge=1, description="keys per codebook")
        key_dim: int = Field(8, ge=1)
        key_init: Literal["stream_inputs", "first_experience"] = "stream_inputs"
        kmeans_iterations: int = Field(10, ge=0)
        scale: float | None = Field(None, gt=0, description="logits = scale x mean of the fetched values "
                                    "(default: the number of codebooks)")

    def prepare(self, model):
        c = self.config
        if getattr(model, "head_kind", None) != "single" or not hasattr(model, "backbone"):
            raise ConfigError("dkvb needs a single-head classifier (a backbone and one head)",
                              expected="model head: single", got=getattr(model, "head_kind", type(model).__name__),
                              fix="use head: single (task-incremental evaluation masks the logits per task)")
        model.backbone.requires_grad_(False)
        model.head = DiscreteKeyValueBottleneck(model.feature_dim, model.n_classes, c.codebooks, c.keys, c.key_dim,
                                                c.scale)
        return model

    def parameters(self, model):
        return [model.head.values]

    def check_training(self, training):
        super().check_training(training)
        if training.optimizer != "sgd" or training.momentum or training.weight_decay:
            raise ConfigError("dkvb trains its values with plain SGD",
                              expected="optimizer: sgd, momentum: 0, weight_decay: 0 (optimiser state would move "
                                       "values the batch did not fetch)",
                              got=f"optimizer {training.optimizer}, momentum {training.momentum}, "
                                  f"weight decay {training.weight_decay}",
                              fix="set training {optimizer: sgd, momentum: 0, weight_decay: 0} for this strategy")

    def before_experience(self, ctx, exp):
        head = ctx.model.head
        if bool(head.initialised):
            return
        experiences = ctx.stream.train if self.config.key_init == "stream_inputs" else [exp]
        inputs = torch.cat([e.inputs for e in experiences]).to(ctx.device)
        backbone = ctx.model.backbone
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            features = torch.cat([backbone(inputs[i:i + 1024]) for i in range(0, len(inputs), 1024)])
        backbone.train(was_training)
        head.init_keys(features.cpu(), self.config.kmeans_iterations, seed=ctx.seed)


__all__ = ["DKVB"]
