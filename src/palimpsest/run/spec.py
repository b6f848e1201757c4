"""Experiment specs: YAML -> validated pydantic models. Every bad field is reported at once."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..core.config import Settings, pydantic_problems
from ..core.errors import PalimpsestError, SpecError
from ..core.registry import DATASETS, MODELS, STRATEGIES
from ..train.config import TrainingConfig
from ..learn.defaults import defaults_for


def names_to_entries(v):
    """`- naive` is short for `- {name: naive}` in a list of strategies or methods."""
    return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v


def check_labels_and_seeds(field: str, labels: list[str], seeds: list[int]) -> None:
    """Raise a ValueError (reported by the spec's validation) for a repeated label or seed."""
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"{field}: labels {dupes} appear twice; give each a distinct `label`")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {seeds} repeats a seed; list each seed once")


class RecurrenceSpec(Settings):
    length: int = Field(..., ge=1, description="number of training steps")
    distribution: Literal["uniform", "power_law"] = "uniform"
    alpha: float = Field(1.0, gt=0)
    introduce: Literal["first", "spread"] = Field("spread", description="new tasks all first, or spread evenly")


class BenchmarkSpec(Settings):
    dataset: str = "fashion_mnist"
    root: str | None = Field(None, description="folder or file of the dataset; None = the dataset's default")
    scenario: Literal["class", "task", "domain"] = "class"
    n_experiences: int = Field(5, ge=1)
    class_order: list[int] | None = None
    shuffle_classes: bool = Field(False, description="draw the class order from the run's seed")
    first_experience_classes: int | None = Field(None, ge=1)
    transform: Literal["permutation", "rotation"] = "permutation"
    online_batch_size: int | None = Field(None, ge=1, description="set for a single pass in mini-batches")
    recurrence: RecurrenceSpec | None = None
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    train_subset: int | None = Field(None, ge=1, description="use this many training examples (random subset)")
    test_subset: int | None = Field(None, ge=1)

    @field_validator("class_order")
    @classmethod
    def _order(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("class_order is empty: list the class ids in order, or leave it out")
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"class_order repeats classes {dupes}: each class id may appear once")
        return v


class ModelSpec(Settings):
    name: str = "mlp"
    head: Literal["single", "multi"] = "single"
    settings: dict[str, Any] = Field(default_factory=dict)


class StrategySpec(Settings):
    name: str
    label: str | None = Field(None, description="name shown in tables; defaults to the strategy name")
    settings: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of the shared training settings")

    @property
    def display(self) -> str:
        return self.label or self.name


class ExperimentSpec(Settings):
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    strategies: list[StrategySpec] = Field(..., min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("strategies", mode="before")
    @classmethod
    def _shorthand(cls, v):
        return names_to_entries(v)

    @model_validator(mode="after")
    def _labels_unique(self):
        check_labels_and_seeds("strategies", [s.display for s in self.strategies], self.seeds)
        return self

    def training_for(self, strategy: StrategySpec) -> TrainingConfig:
        return TrainingConfig(**{**self.training.model_dump(), **strategy.training})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _semantic_problems(data: dict) -> list[str]:
    """Checks that need the registries (names exist, settings fit, experiments fit the classes).
    They read the raw mapping leniently, so they run even when other fields failed validation and
    every problem is reported in one go; values of the wrong type are left to pydantic's report."""
    problems: list[str] = []

    def known(registry, name: Any, path: str) -> bool:
        if not isinstance(name, str):
            return False
        try:
            registry.get(name)
            return True
        except PalimpsestError as err:
            problems.append(f"{path}: {err.what}; {err.fix}")
            return False

    def section(key: str) -> dict:
        value = data.get(key)
        return value if isinstance(value, dict) else {}

    b, training = section("benchmark"), section("training")
    dataset = b.get("dataset", BenchmarkSpec.model_fields["dataset"].default)
    if known(DATASETS, dataset, "benchmark.dataset"):
        n_classes = DATASETS.get(dataset).meta.get("n_classes")
        order, n_exp = b.get("class_order"), b.get("n_experiences", BenchmarkSpec.model_fields["n_experiences"].default)
        if n_classes and b.get("scenario", "class") in ("class", "task") and isinstance(n_exp, int):
            n_order = len(order) if isinstance(order, list) and order else n_classes
            if n_exp > n_order:
                problems.append(f"benchmark.n_experiences: expected at most {n_order} (one class per experience "
                                f"at least), got {n_exp}")
        if n_classes and isinstance(order, list):
            bad = [c for c in order if not isinstance(c, int) or not 0 <= c < n_classes]
            if bad:
                problems.append(f"benchmark.class_order: expected class ids in [0, {n_classes}), got {bad}")
    root = b.get("root")
    if isinstance(root, str) and not Path(root).expanduser().exists():
        problems.append(f"benchmark.root: expected an existing path, got {root!r}; fix the path or leave it "
                        f"out to use the dataset's default location")
    epochs = training.get("epochs", 1)
    if b.get("online_batch_size") and isinstance(epochs, int) and epochs != 1:
        problems.append(f"training.epochs: expected 1 in an online scenario (single pass), got {epochs}")
    known(MODELS, section("model").get("name", "mlp"), "model.name")
    strategies = data.get("strategies")
    for i, s in enumerate(strategies if isinstance(strategies, list) else []):
        s = {"name": s} if isinstance(s, str) else s
        if not isinstance(s, dict):
            continue
        path = f"strategies.{i}"
        if known(STRATEGIES, s.get("name"), f"{path}.name") and isinstance(s.get("settings", {}), dict):
            tuned = defaults_for(s["name"], str(dataset), str(b.get("scenario", "class")))
            try:
                STRATEGIES.get(s["name"]).obj.Config(**{**tuned, **s.get("settings", {})})
            except ValidationError as err:
                problems += pydantic_problems(err, f"{path}.settings")
        if isinstance(s.get("training"), dict) and s["training"]:
            try:
                TrainingConfig(**{**training, **s["training"]})
            except ValidationError as err:
                problems += [p for p in pydantic_problems(err, f"{path}.training")
                             if p.split(":")[0].split(".")[-1] in s["training"]]
    return problems


def parse_spec(data: Any, source: str = "spec") -> ExperimentSpec:
    """Validate a spec given as a dict; raise SpecError listing every problem."""
    import palimpsest.learn  # noqa: F401  (registers strategies)
    import palimpsest.data.datasets  # noqa: F401  (registers datasets)
    if not isinstance(data, dict):
        raise SpecError([f"top level: expected a mapping of fields (name, benchmark, model, training, "
                         f"strategies, seeds), got {type(data).__name__}: {data!r}"], source)
    problems = []
    try:
        spec = ExperimentSpec(**data)
    except ValidationError as err:
        problems = pydantic_problems(err)
    problems += [p for p in _semantic_problems(data) if p not in problems]
    if problems:
        raise SpecError(problems, source)
    return spec


def load_spec(path: str | Path):
    """Read and validate a YAML spec file: a learning spec (ExperimentSpec) or, when it has a
    `forget:` section, an unlearning spec (UnlearningSpec)."""
    p = Path(path)
    if not p.exists():
        raise SpecError([f"file: expected an existing YAML spec, got {str(p)!r}; check the path "
                         f"(recipes/ has examples)"], str(p))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([f"YAML syntax at {where}: {getattr(err, 'problem', err)}; fix the indentation or "
                         f"quoting there"], str(p)) from None
    if isinstance(data, dict) and "forget" in data:
        from .unlearn_spec import parse_unlearning_spec
        return parse_unlearning_spec(data, str(p))
    return parse_spec(data, str(p))
