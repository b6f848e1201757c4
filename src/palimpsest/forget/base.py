"""The Unlearner protocol and the guarded data it is handed.

An unlearner declares the splits it reads (`reads`, a subset of forget / retain / train). It is
handed an `UnlearningData` that serves only those; touching any other raises LeakageError, so a
method that claims not to need the retain set provably did not use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..core.config import Settings, validate
from ..core.errors import PalimpsestError
from ..learn.config import TrainingConfig
from .request import ForgetSplit

SPLITS = ("forget", "retain", "train")


class LeakageError(PalimpsestError, PermissionError):
    """An unlearner read a split it did not declare."""


@dataclass(frozen=True)
class Split:
    inputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


class UnlearningData:
    """Training data split by a forget request; serves only the splits in `allowed`."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, split: ForgetSplit, allowed,
                 n_classes: int) -> None:
        unknown = set(allowed) - set(SPLITS)
        if unknown:
            raise PalimpsestError("unknown split names", expected=" / ".join(SPLITS), got=sorted(unknown))
        self._inputs, self._targets, self._split = inputs, targets, split
        self.allowed = frozenset(allowed)
        self.n_classes = n_classes
        self.forget_classes = split.forget_classes
        self.n_forget, self.n_retain = len(split.forget), len(split.retain)

    def _get(self, name: str, indices) -> Split:
        if name not in self.allowed:
            raise LeakageError(f"this unlearner read the {name} set, which it did not declare",
                               expected=f"reads only {sorted(self.allowed)}", got=name,
                               fix=f"add {name!r} to the unlearner's `reads` if the method needs it")
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self._inputs[idx], self._targets[idx], idx)

    def forget(self) -> Split:
        return self._get("forget", self._split.forget)

    def retain(self) -> Split:
        return self._get("retain", self._split.retain)

    def train(self) -> Split:
        import numpy as np
        return self._get("train", np.arange(len(self._targets)))


@dataclass
class UnlearnContext:
    """What an unlearner may use besides data: the original training recipe (to retrain or
    fine-tune), a factory for a freshly initialised model, the device and a seed."""

    training: TrainingConfig
    make_model: Callable[[], nn.Module]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    # Artefacts kept with the model by its owner, e.g. the full-data Fisher for SSD (see forget/ssd.py).
    cache: dict[str, Any] = field(default_factory=dict)


class Unlearner:
    """Base class: `unlearn(model, data, ctx) -> model` (may modify `model` in place and return it)."""

    name: ClassVar[str] = "unlearner"
    Config: ClassVar[type[Settings]] = Settings
    reads: ClassVar[frozenset[str]] = frozenset()
    exact: ClassVar[bool] = False

    def __init__(self, **settings: Any) -> None:
        self.config = validate(self.Config, settings, f"unlearner {self.name!r}")

    def unlearn(self, model: nn.Module, data: UnlearningData, ctx: UnlearnContext) -> nn.Module:
        raise NotImplementedError

    def artifacts(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  ctx: UnlearnContext) -> dict[str, Any]:
        """What this method wants computed once at training time and kept with the model (it
        arrives later as `ctx.cache`), e.g. SSD's full-data importance. Tensors, dicts, lists."""
        return {}

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"
