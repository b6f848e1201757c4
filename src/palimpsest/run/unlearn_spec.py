"""Unlearning specs: train an original model, forget with several methods, audit against retrain."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..core.config import Settings, pydantic_problems
from ..core.errors import PalimpsestError, SpecError
from ..core.registry import DATASETS, MODELS, UNLEARNERS
from ..forget.request import ForgetRequest
from ..train.config import TrainingConfig
from .spec import ModelSpec, check_labels_and_seeds, names_to_entries


class OriginalSpec(Settings):
    """How the original model is trained: on every class of the dataset at once."""

    dataset: str = "fashion_mnist"
    root: str | None = None
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="cnn"))
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(epochs=3, lr=0.05, momentum=0.9))


class MethodSpec(Settings):
    name: str
    label: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


class ReferenceAttackSpec(Settings):
    n_models: int = Field(0, ge=0, description="reference models for the per-example attack (0 = off)")
    pool_fraction: float = Field(0.5, gt=0, lt=1, description="share of the pool each reference model trains on "
                                 "(below 1: each example must be left out of some reference models)")


class RelearnSpec(Settings):
    n_examples: int = Field(10, ge=1)
    steps: int = Field(20, ge=1)
    lr: float = Field(0.01, gt=0)


class AuditSpec(Settings):
    population_mia: bool = True
    reference_mia: ReferenceAttackSpec = Field(default_factory=ReferenceAttackSpec)
    relearn: RelearnSpec | None = None
    probe: bool = False


class UnlearningSpec(Settings):
    name: str = Field("unlearning", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    train: OriginalSpec = Field(default_factory=OriginalSpec)
    forget: list[ForgetRequest] = Field(..., min_length=1)
    methods: list[MethodSpec] = Field(..., min_length=1)
    audits: AuditSpec = Field(default_factory=AuditSpec)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("methods", mode="before")
    @classmethod
    def _shorthand(cls, v):
        return names_to_entries(v)

    @model_validator(mode="after")
    def _unique(self):
        check_labels_and_seeds("methods", [m.display for m in self.methods], self.seeds)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def original_digest(self, seed: int) -> str:
        """Identifies the original model: its training spec and seed (the retrain cache key's base)."""
        payload = json.dumps({"train": self.train.model_dump(mode="json"), "seed": seed}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _registry_problems(data: dict) -> list[str]:
    problems: list[str] = []

    def known(registry, name, path) -> bool:
        if not isinstance(name, str):
            return False
        try:
            registry.get(name)
            return True
        except PalimpsestError as err:
            problems.append(f"{path}: {err.what}; {err.fix}")
            return False

    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    known(DATASETS, train.get("dataset", "fashion_mnist"), "train.dataset")
    model = train.get("model") if isinstance(train.get("model"), dict) else {}
    known(MODELS, model.get("name", "cnn"), "train.model.name")
    n_classes = None
    if isinstance(train.get("dataset", "fashion_mnist"), str) and train.get("dataset", "fashion_mnist") in DATASETS:
        n_classes = DATASETS.get(train.get("dataset", "fashion_mnist")).meta.get("n_classes")
    for i, r in enumerate(data.get("forget") if isinstance(data.get("forget"), list) else []):
        if isinstance(r, dict) and n_classes and isinstance(r.get("classes"), list):
            bad = [c for c in r["classes"] if not isinstance(c, int) or not 0 <= c < n_classes]
            if bad:
                problems.append(f"forget.{i}.classes: expected class ids in [0, {n_classes}), got {bad}")
    for i, m in enumerate(data.get("methods") if isinstance(data.get("methods"), list) else []):
        m = {"name": m} if isinstance(m, str) else m
        if not isinstance(m, dict):
            continue
        if known(UNLEARNERS, m.get("name"), f"methods.{i}.name") and isinstance(m.get("settings", {}), dict):
            try:
                UNLEARNERS.get(m["name"]).obj.Config(**m.get("settings", {}))
            except ValidationError as err:
                problems += pydantic_problems(err, f"methods.{i}.settings")
    return problems


def parse_unlearning_spec(data: Any, source: str = "spec") -> UnlearningSpec:
    import palimpsest.data.datasets  # noqa: F401
    import palimpsest.forget  # noqa: F401
    import palimpsest.models  # noqa: F401
    problems: list[str] = []
    spec = None
    try:
        spec = UnlearningSpec(**data)
    except ValidationError as err:
        problems = pydantic_problems(err)
    problems += [p for p in _registry_problems(data) if p not in problems]
    if problems:
        raise SpecError(problems, source)
    return spec
