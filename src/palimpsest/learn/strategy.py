"""The Strategy protocol: a few hooks, explicit state, one short module per method.

Before the optimizer exists (the runner calls these on a freshly built model):
  prepare(model) -> model      wrap, inject or freeze (LoRA adapters, prompts, a frozen backbone)
  parameters(model)            what the optimizer sees (default: every parameter that requires grad)
Hooks (called by `learn.trainer.train_step`, in this order for each training step):
  schedule(stream)             which train experiences each step learns (default: one each)
  before_experience(ctx, exp)  e.g. snapshot weights, reinitialise, compute importances
  training_data(ctx, exp) -> exp   what to train on (default: the experience; GDumb: its buffer)
  passes(ctx) -> (epochs, batch size)   default: the training settings (online: one pass)
  adjust_passes(ctx, epochs, batch size) -> (epochs, batch size)   how a plug-in reshapes the passes
                               of the strategy it is composed with (view-batch: fewer distinct rows
                               per batch, fewer passes); default: unchanged
  per mini-batch (driven by the one loop, train/loop.py; `values` is a fresh dict per mini-batch
  that carries what one hook computes for a later one, never the strategy object):
    prepare_batch(ctx, batch, values) -> batch   e.g. append replayed examples (ER)
    batch_loss(ctx, batch, output, values) -> loss   the loss of one mini-batch (default: the model's task loss)
    extra_loss(ctx, batch, output, values) -> loss | None   terms a strategy adds when composed as a plug-in
    before_step(ctx, batch, values)    after backward (and unscaling), before optimizer.step
    after_step(ctx, batch, values)     after optimizer.step (e.g. SI's path integral, buffer updates)
  after_experience(ctx, exp)   e.g. fill a replay buffer, consolidate importances
  eval_model(model) -> module  what evaluation calls (default: the model; iCaRL: nearest mean)

What a strategy learns lives in its components (replay memory, quadratic penalty, snapshot, ...):
attributes that are `Component`s are found like nn.Module children, bound to the run in `setup`,
and saved / restored together by `state_dict()` / `load_state_dict()`; a restored strategy is
complete at once. `values["incoming"]` is the number of rows that came from the stream (replay
appends its rows after them).

Composition: `Composite(main, [plugin, ...])` (from a spec: `{name: er, plus: [lwf]}`) runs every
member's hooks in order; the loss is the main strategy's `batch_loss` plus each plug-in's
`extra_loss`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.config import Settings, validate
from ..core.errors import ConfigError
from ..data.batch import Batch
from ..data.scenarios import Experience, Stream
from ..models.adapters import ModelAdapter, ModelOutput, adapter_for
from ..train.config import TrainingConfig


@dataclass
class TrainContext:
    """What hooks may read: the model, its optimizer, the stream and where training stands."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stream: Stream
    training: TrainingConfig
    device: torch.device
    seed: int
    step: int = 0
    epoch: int = 0
    adapter: ModelAdapter | None = field(default=None)

    def __post_init__(self) -> None:
        if self.adapter is None:
            self.adapter = adapter_for(self.model, use_task_ids=self.use_task_ids)

    @property
    def use_task_ids(self) -> bool:
        """Task identity reaches the model only in task-incremental scenarios."""
        return self.stream.scenario == "task"

    def output(self, batch: Batch) -> ModelOutput:
        return self.adapter(batch)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The logits of a batch."""
        return self.adapter(batch).logits

    def task_loss(self, batch: Batch, output: ModelOutput) -> torch.Tensor:
        return self.adapter.task_loss(batch, output)


class Component:
    """A part of a strategy that owns state: it is bound to the run in `setup` and saves and
    restores itself with the strategy (a replay memory, a quadratic penalty, a snapshot, ...)."""

    def bind(self, ctx: TrainContext) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Strategy:
    """Base strategy = naive fine-tuning. Subclasses override only the hooks they need."""

    name: ClassVar[str] = "strategy"
    Config: ClassVar[type[Settings]] = Settings
    # Scenarios a strategy cannot run in are declared here, never special-cased by the tester.
    unsupported: ClassVar[frozenset[str]] = frozenset()
    # False when a step hook reads its batch (replay, path integrals, projections): with gradient
    # accumulation the step hooks see only the last micro-batch, so such strategies refuse it.
    accumulation_safe: ClassVar[bool] = True
    # True for methods that never read labels (test-time adaptation); only these run in `kind: adapt`,
    # which hands them data with the labels withheld.
    label_free: ClassVar[bool] = False
    # What the model must have (e.g. {"batchnorm"}); the conformance suite builds a model that has it.
    model_requirements: ClassVar[frozenset[str]] = frozenset()
    # Training settings without which the method does not learn at all (NAPA-VQ's squared-distance
    # losses diverge under plain SGD at usual rates: {"optimizer": "adam", "lr": 1e-3}); the
    # conformance suite trains it with them, and its recipes set them.
    training_requirements: ClassVar[dict[str, Any]] = {}

    def __init__(self, **settings: Any) -> None:
        self.config = validate(self.Config, settings, f"strategy {self.name!r}")

    # -- before the optimizer exists ------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    # -- checks -----------------------------------------------------------------------------------
    def check_stream(self, stream: Stream) -> None:
        kinds = {stream.scenario} | ({"online"} if stream.online_batch_size else set())
        bad = kinds & self.unsupported
        if bad:
            raise ConfigError(f"strategy {self.name!r} does not support {sorted(bad)} scenarios",
                              expected=f"a scenario outside {sorted(self.unsupported)}",
                              got=stream.name, fix="pick another strategy or scenario")

    def check_training(self, training: TrainingConfig) -> None:
        unmet = {k: v for k, v in self.training_requirements.items() if getattr(training, k, v) != v}
        if unmet:
            got = {k: getattr(training, k) for k in unmet}
            warnings.warn(f"strategy {self.name!r} is meant to train with {unmet} (plain settings may not learn at all), "
                          f"got {got}; set them under the strategy's `training:` in the spec", RuntimeWarning, stacklevel=2)
        if training.accumulation > 1 and not self.accumulation_safe:
            raise ConfigError(f"strategy {self.name!r} does not support gradient accumulation",
                              expected="training.accumulation: 1 (its step hooks read each mini-batch)",
                              got=training.accumulation, fix="use a larger batch_size instead of accumulation")

    # -- hooks -------------------------------------------------------------------------------
    def schedule(self, stream: Stream) -> list[list[int]]:
        return [[i] for i in range(len(stream.train))]

    def setup(self, ctx: TrainContext) -> None:
        """Bind the components to the run (seed, device, model). Call before `load_state_dict`."""
        for _, component in self.components():
            component.bind(ctx)

    def before_experience(self, ctx: TrainContext, exp: Experience) -> None:
        pass

    def training_data(self, ctx: TrainContext, exp: Experience) -> Experience:
        return exp

    def passes(self, ctx: TrainContext) -> tuple[int, int]:
        """(epochs, batch size) over this step's training data; online: one pass in the stream's
        mini-batches. GDumb overrides it to train many epochs on its memory."""
        online = ctx.stream.online_batch_size
        return (1, online) if online else (ctx.training.epochs, ctx.training.batch_size)

    def adjust_passes(self, ctx: TrainContext, epochs: int, batch_size: int) -> tuple[int, int]:
        """Composed as a plug-in, reshape the main strategy's (epochs, batch size); default: as they are."""
        return epochs, batch_size

    def prepare_batch(self, ctx: TrainContext, batch: Batch, values: dict) -> Batch:
        return batch

    def batch_loss(self, ctx: TrainContext, batch: Batch, output: ModelOutput, values: dict) -> torch.Tensor:
        loss = ctx.task_loss(batch, output)
        extra = self.extra_loss(ctx, batch, output, values)
        return loss if extra is None else loss + extra

    def extra_loss(self, ctx: TrainContext, batch: Batch, output: ModelOutput, values: dict) -> torch.Tensor | None:
        return None

    def before_step(self, ctx: TrainContext, batch: Batch, values: dict) -> None:
        pass

    def after_step(self, ctx: TrainContext, batch: Batch, values: dict) -> None:
        pass

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model

    def after_experience(self, ctx: TrainContext, exp: Experience) -> None:
        pass

    def forget_examples(self, inputs: torch.Tensor) -> int:
        """An unlearning request reached the model this strategy trains: remove the forgotten
        examples (`inputs`) from every example memory it keeps, so they are never replayed again;
        returns how many were removed. Default: every replay memory among the components."""
        return sum(c.buffer.drop_matching(inputs) for _, c in self.components() if hasattr(c, "buffer")
                   and hasattr(c.buffer, "drop_matching"))

    # -- state ------------------------------------------------------------------------------
    def components(self) -> list[tuple[str, Component]]:
        return [(name, value) for name, value in vars(self).items() if isinstance(value, Component)]

    def state_dict(self) -> dict[str, Any]:
        """Every component's state under its attribute name, plus `extra_state()`."""
        state = {name: component.state_dict() for name, component in self.components()}
        state.update(self.extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, component in self.components():
            component.load_state_dict(state.get(name, {}))
        self.load_extra_state(state)

    def extra_state(self) -> dict[str, Any]:
        """State outside components (tensors and JSON-able values)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def upgrade_state(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """A state saved by an older palimpsest in the current layout (version 1: the flat keys of
        palimpsest 0.1.0). Strategies whose layout changed override it."""
        return state

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


def legacy_prefixed(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Entries of a flat 0.1.0 state under `prefix.`, prefix removed, with `data.` entries nested."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            name = key[len(prefix) + 1:]
            if name.startswith("data."):
                out.setdefault("data", {})[name[len("data."):]] = value
            else:
                out[name] = value
    return out


class Composite(Strategy):
    """A main strategy with plug-ins, every hook run in order (see the module docstring)."""

    name = "composite"

    def __init__(self, main: Strategy, plugins: Iterable[Strategy]) -> None:
        self.main, self.plugins = main, list(plugins)
        self.members = [main, *self.plugins]
        self.config = main.config
        self.name = "+".join(m.name for m in self.members)
        self.unsupported = frozenset().union(*(m.unsupported for m in self.members))
        self.accumulation_safe = all(m.accumulation_safe for m in self.members)
        self.label_free = all(m.label_free for m in self.members)
        self.training_requirements = {k: v for m in self.members for k, v in m.training_requirements.items()}

    def prepare(self, model):
        for m in self.members:
            model = m.prepare(model)
        return model

    def parameters(self, model):
        keep = set.intersection(*({id(p) for p in m.parameters(model)} for m in self.members))
        return [p for p in self.main.parameters(model) if id(p) in keep]

    def check_stream(self, stream):
        for m in self.members:
            m.check_stream(stream)

    def check_training(self, training):
        for m in self.members:
            m.check_training(training)

    def schedule(self, stream):
        return self.main.schedule(stream)

    def setup(self, ctx):
        for m in self.members:
            m.setup(ctx)

    def before_experience(self, ctx, exp):
        for m in self.members:
            m.before_experience(ctx, exp)

    def training_data(self, ctx, exp):
        for m in self.members:
            exp = m.training_data(ctx, exp)
        return exp

    def passes(self, ctx):
        epochs, batch_size = self.main.passes(ctx)
        for m in self.plugins:
            epochs, batch_size = m.adjust_passes(ctx, epochs, batch_size)
        return epochs, batch_size

    def prepare_batch(self, ctx, batch, values):
        for m in self.members:
            batch = m.prepare_batch(ctx, batch, values)
        return batch

    def batch_loss(self, ctx, batch, output, values):
        loss = self.main.batch_loss(ctx, batch, output, values)
        for m in self.plugins:
            extra = m.extra_loss(ctx, batch, output, values)
            if extra is not None:
                loss = loss + extra
        return loss

    def before_step(self, ctx, batch, values):
        for m in self.members:
            m.before_step(ctx, batch, values)

    def after_step(self, ctx, batch, values):
        for m in self.members:
            m.after_step(ctx, batch, values)

    def after_experience(self, ctx, exp):
        for m in self.members:
            m.after_experience(ctx, exp)

    def eval_model(self, model):
        for m in self.members:
            model = m.eval_model(model)
        return model

    def forget_examples(self, inputs):
        return sum(m.forget_examples(inputs) for m in self.members)

    def state_dict(self):
        return {"main": self.main.state_dict(), "plus": [m.state_dict() for m in self.plugins]}

    def load_state_dict(self, state):
        self.main.load_state_dict(state.get("main", {}))
        for m, s in zip(self.plugins, state.get("plus", [])):
            m.load_state_dict(s)

    def settings(self):
        return {**self.main.settings(), "plus": [{"name": m.name, "settings": m.settings()} for m in self.plugins]}

    def __repr__(self) -> str:
        return " + ".join(repr(m) for m in self.members)


__all__ = ["Component", "Composite", "Strategy", "TrainContext", "legacy_prefixed"]
