"""The Unlearner protocol and the guarded data it is handed.

An unlearner declares what it reads of each split (`reads`): forget / retain / train, each at a
level — "indices" (which examples, nothing about them), "labels" (indices and labels),
"inputs" (indices and inputs, no labels) or "examples" (everything). It is handed an
`UnlearningData` that serves only those; touching any other split or field raises LeakageError, so
a method that claims not to need the retain set, or a forget set's contents, provably did not use
them.

Artefacts kept with a model (`Unlearner.artifacts`, e.g. SSD's full-data importance) are guarded the
same way: each declares the splits it was computed from (`Artifact.splits`; training-time
artefacts read the whole training set, `{"train": "examples"}`), and `ArtifactCache` hands one to a
method only when the method's own reads cover those splits, so a retain-only method never sees
numbers computed from the forget set.

`unlearn(model, data, ctx)` returns `Unlearned(model, report)`: the model (possibly the same object,
modified) and a report of what the method did (SSD's alpha, SISA's retrained shards, the loop's
steps), which the ledger keeps. Methods that optimise subclass `LossUnlearner`: a loss over a
(forget batch, retain batch) pair and the frozen original model (`ctx.original`), driven by the one
loop (train/loop.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from ..core.config import Settings, validate
from ..core.errors import ConfigError, LeakageError, PalimpsestError
from ..data.batch import Batch
from ..train.config import TrainingConfig, build_optimizer
from ..train.loop import StepHooks, run_loop
from ..train.snapshot import frozen_copy
from .request import ForgetSplit

SPLITS = ("forget", "retain", "train")
LEVELS = ("indices", "labels", "inputs", "examples")
_FIELDS = {"indices": {"indices"}, "labels": {"indices", "targets"}, "inputs": {"indices", "inputs"},
           "examples": {"indices", "inputs", "targets"}}


def declared_reads(reads) -> dict[str, str]:
    """{split: level} from a declaration: a mapping, or a set of split names (= "examples")."""
    out = dict(reads) if isinstance(reads, dict) else {name: "examples" for name in reads}
    bad = {k: v for k, v in out.items() if k not in SPLITS or v not in LEVELS}
    if bad:
        raise PalimpsestError("bad read declaration", expected=f"splits among {SPLITS} at levels among {LEVELS}",
                              got=bad, fix="declare e.g. reads = {'forget': 'examples', 'retain': 'indices'}")
    return out


def covers(reads: dict[str, str], splits: dict[str, str]) -> bool:
    """Whether a method reading `reads` may see what was computed from `splits` ({split: level}):
    every split at a level whose fields the method's level includes; the training set is also
    covered by reading both its parts, forget and retain, at such a level."""
    def level_ok(read: str | None, level: str) -> bool:
        return read is not None and _FIELDS[level] <= _FIELDS[read]

    return all(level_ok(reads.get(split), level) or
               (split == "train" and level_ok(reads.get("forget"), level) and level_ok(reads.get("retain"), level))
               for split, level in splits.items())


@dataclass(frozen=True)
class Artifact:
    """A value computed with a model and kept with it, and the splits it was computed from."""

    value: Any
    splits: dict[str, str] = field(default_factory=lambda: {"train": "examples"})


class ArtifactCache(Mapping):
    """Artefacts for one method: `cache[key]` / `cache.get(key)` return the value of an artefact
    whose splits the method's `reads` cover, and raise LeakageError for any other (a method that
    declares retain-only reads never gets a number computed from the forget set). Keys are
    listed whatever their splits (a name says nothing about the data)."""

    def __init__(self, artifacts: Mapping[str, Artifact], reads) -> None:
        self._artifacts = dict(artifacts)
        self.reads = declared_reads(reads)

    def __getitem__(self, key: str) -> Any:
        artifact = self._artifacts[key]
        if not covers(self.reads, artifact.splits):
            raise LeakageError(f"this unlearner read the artefact {key!r}, computed from {artifact.splits}, which "
                               f"its declared reads do not cover", expected=f"artefacts computed from {self.reads}",
                               got=artifact.splits, fix="declare the splits the artefact was computed from in the "
                               "unlearner's `reads`, or compute what it needs from the splits it reads")
        return artifact.value

    def __contains__(self, key) -> bool:
        return key in self._artifacts

    def __iter__(self):
        return iter(self._artifacts)

    def __len__(self) -> int:
        return len(self._artifacts)

    def splits(self, key: str) -> dict[str, str]:
        return dict(self._artifacts[key].splits)


class Split:
    """Rows of the training set: `indices` (into it), `inputs` and `targets`, each served only when
    the split's declared level allows it."""

    def __init__(self, name: str, level: str, inputs: torch.Tensor, targets: torch.Tensor,
                 indices: torch.Tensor) -> None:
        self.name, self.level = name, level
        self._inputs, self._targets, self.indices = inputs, targets, indices

    def _guard(self, what: str):
        if what not in _FIELDS[self.level]:
            raise LeakageError(f"this unlearner read the {what} of the {self.name} set, which it declared at "
                               f"level {self.level!r}", expected=f"only {sorted(_FIELDS[self.level])}", got=what,
                               fix=f"declare reads['{self.name}'] = 'examples' (or the level that covers {what})")

    @property
    def inputs(self) -> torch.Tensor:
        self._guard("inputs")
        return self._inputs

    @property
    def targets(self) -> torch.Tensor:
        self._guard("targets")
        return self._targets

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: torch.Tensor, device=None) -> Batch:
        """The examples at `positions` of this split as a Batch (inputs and targets, as allowed)."""
        out = Batch(inputs=self.inputs[positions], targets=self.targets[positions])
        return out.to(device) if device is not None else out


class UnlearningData:
    """Training data split by a forget request; serves only the declared splits and fields."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, split: ForgetSplit, allowed,
                 n_classes: int) -> None:
        self._inputs, self._targets, self._split = inputs, targets, split
        self.reads = declared_reads(allowed)
        self.allowed = frozenset(self.reads)
        self.n_classes = n_classes
        self.forget_classes = split.forget_classes
        self.n_forget, self.n_retain = len(split.forget), len(split.retain)

    def _get(self, name: str, indices) -> Split:
        if name not in self.reads:
            raise LeakageError(f"this unlearner read the {name} set, which it did not declare",
                               expected=f"reads only {sorted(self.allowed)}", got=name,
                               fix=f"add {name!r} to the unlearner's `reads` if the method needs it")
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(name, self.reads[name], self._inputs[idx], self._targets[idx], idx)

    def forget(self) -> Split:
        return self._get("forget", self._split.forget)

    def retain(self) -> Split:
        return self._get("retain", self._split.retain)

    def train(self) -> Split:
        return self._get("train", np.arange(len(self._targets)))


@dataclass
class UnlearnContext:
    """What an unlearner may use besides data: the original training recipe (to retrain or
    fine-tune), a factory for a freshly initialised model, the device, a seed, artefacts kept with
    the model by its owner (e.g. SSD's full-data importance) and the frozen original model (the
    model as it was before this request: SCRUB's teacher). Left None, `original` is made on first
    use from the model handed to `unlearn`. The kind hands `cache` as an `ArtifactCache` guarded
    by the method's reads; a plain dict given by a caller is taken as is."""

    training: TrainingConfig
    make_model: Callable[[], nn.Module]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    cache: Mapping[str, Any] = field(default_factory=dict)
    original: nn.Module | None = None


class Unlearned(NamedTuple):
    """What `unlearn` returns: the model after forgetting and a report the ledger keeps."""

    model: nn.Module
    report: dict


class Unlearner:
    """Base class: `unlearn(model, data, ctx) -> Unlearned(model, report)`; `model` may be modified
    in place and returned."""

    name: ClassVar[str] = "unlearner"
    Config: ClassVar[type[Settings]] = Settings
    reads: ClassVar[dict[str, str] | frozenset[str]] = frozenset()
    exact: ClassVar[bool] = False
    # builds the model it returns anew instead of editing the one it is given (exact methods do; so does
    # DP2Unlearning, which fine-tunes a DP base): such a method has no zero-step setting
    rebuilds: ClassVar[bool] = False
    # optional libraries the method needs (the conformance suite skips it without them)
    requires: ClassVar[tuple[str, ...]] = ()
    # Settings under which the method takes no step and must return the model unchanged (checked by
    # the conformance suite); None for methods without such a setting (exact ones rebuild the model).
    zero_steps: ClassVar[dict[str, Any] | None] = None

    def __init__(self, **settings: Any) -> None:
        self.config = validate(self.Config, settings, f"unlearner {self.name!r}")

    @classmethod
    def declared(cls) -> dict[str, str]:
        """{split: level} this method reads."""
        return declared_reads(cls.reads)

    def unlearn(self, model: nn.Module, data: UnlearningData, ctx: UnlearnContext) -> Unlearned:
        raise NotImplementedError

    def artifacts(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  ctx: UnlearnContext) -> dict[str, Any]:
        """What this method wants computed once at training time and kept with the model (it
        arrives later as `ctx.cache`), e.g. SSD's full-data importance. Tensors, dicts, lists.
        `inputs` / `targets` are the whole training set, so every artefact is recorded as computed
        from {"train": "examples"} and reaches only methods whose reads cover it."""
        return {}

    def stored(self, model: nn.Module) -> dict[str, Any]:
        """What the results store keeps of a model this method returned (tensors, dicts, lists and
        plain values); `restore` rebuilds the model from it. Default: the state dict of a model of
        the original's architecture (a method that changes the architecture overrides both)."""
        return {"model": model.state_dict()}

    @classmethod
    def restore(cls, make_model: Callable[[], nn.Module], saved: dict[str, Any]) -> nn.Module:
        """The model `stored` kept, rebuilt in eval mode (`make_model()` builds the original's
        architecture, freshly initialised)."""
        model = make_model()
        model.load_state_dict(saved["model"])
        return model.eval()

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"


@dataclass
class Pair:
    """One step's data of a loss unlearner: a forget batch, a retain batch, either may be None."""

    forget: Batch | None = None
    retain: Batch | None = None


class LossUnlearner(Unlearner):
    """An unlearner that is a loss over (forget batch, retain batch, original model), optimised by
    the one loop. Subclasses give `steps` (the pairs, from seeded samplers) and `loss`; `optimizer`
    defaults to the original recipe's kind at the setting `lr`; `before_step` / `after_step` are the
    loop's gradient and post-step hooks (e.g. masks)."""

    train_mode: ClassVar[bool] = True  # model.train() while optimising (IAU takes its gradients in eval mode)

    def steps(self, data: UnlearningData, ctx: UnlearnContext, model: nn.Module) -> Iterator[Pair]:
        raise NotImplementedError

    def loss(self, model: nn.Module, pair: Pair, ctx: UnlearnContext, values: dict) -> torch.Tensor:
        raise NotImplementedError

    def optimizer(self, model: nn.Module, ctx: UnlearnContext) -> torch.optim.Optimizer:
        lr = getattr(self.config, "lr", None)
        return build_optimizer(model.parameters(), ctx.training.model_copy(update={"lr": lr} if lr else {}))

    def before_step(self, model: nn.Module, pair: Pair, values: dict) -> None:
        pass

    def after_step(self, model: nn.Module, pair: Pair, values: dict) -> None:
        pass

    def prepare(self, model: nn.Module, data: UnlearningData, ctx: UnlearnContext) -> dict:
        """Work before the first step (e.g. a saliency mask); returns report entries."""
        return {}

    def unlearn(self, model, data, ctx):
        model.to(ctx.device)
        report = dict(self.prepare(model, data, ctx))
        opt = self.optimizer(model, ctx)
        unlearner = self

        class Hooks(StepHooks):
            def to_device(self, pair):
                return Pair(*(b.to(ctx.device) if b is not None else None for b in (pair.forget, pair.retain)))

            def prepare(self, pair, values):
                return self.to_device(pair)

            def loss(self, pair, values):
                return unlearner.loss(model, pair, ctx, values)

            def before_step(self, pair, values):
                unlearner.before_step(model, pair, values)

            def after_step(self, pair, values):
                unlearner.after_step(model, pair, values)

        model.train(self.train_mode)
        stats = run_loop(Hooks(), opt, self.steps(data, ctx, model), ctx.training, ctx.device)
        report.update(steps=stats.n_steps, mean_loss=stats.mean_loss, finite=stats.finite)
        return Unlearned(model.eval(), report)


def original_of(model: nn.Module, ctx: UnlearnContext) -> nn.Module:
    """The frozen model before unlearning: `ctx.original`, or a frozen copy of `model` kept there."""
    if ctx.original is None:
        ctx.original = frozen_copy(model)
    return ctx.original


def require_positive_size(n: int, what: str) -> None:
    if n <= 0:
        raise ConfigError(f"the {what} is empty", expected=f"at least one example in the {what}", got=n)


__all__ = ["Artifact", "ArtifactCache", "LEVELS", "LeakageError", "LossUnlearner", "covers", "Pair", "SPLITS", "Split", "UnlearnContext", "Unlearned",
           "Unlearner", "UnlearningData", "declared_reads", "original_of"]
