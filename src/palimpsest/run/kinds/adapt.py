"""kind: adapt. Label-free test-time adaptation: a source model trained on clean data meets shifted
inputs (domains of increasing corruption) and adapts to each domain without labels.

Jobs, per seed: `seed<k>/source` trains the source model (cached across experiments by its spec and
seed); then one run per method, `<label>/seed<k>`, walks the domains: at step k the method adapts on
domain k's test inputs with the labels withheld (data/batch.py's LabelFreeBatch: asking for a label
raises a LeakageError), then every domain is evaluated with its labels. Runs are stored like learning
runs (accuracy matrix, predictions, resume), so the same metrics read them: the diagonal is online
test-time accuracy (plasticity), the last row what the adapted model keeps of every domain.

Methods are strategies that declare `label_free = True` (learn/tent.py: source, norm, tent).
"""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ...core.config import Settings
from ...core.registry import KINDS, STRATEGIES
from ...core.seeding import derive_seed, pick_device, seed_everything
from ...core.timing import Stopwatch
from ...data import datasets as _datasets
from ...data.scenarios import Stream, domain_incremental
from ...models import create_model
from ...train.config import TrainingConfig
from ...train.fit import fit
from ..spec import EntriesSpec, ModelSpec, StrategySpec, known, model_problems, strategy_problems
from ..store.files import load_state, save_state
from .base import Job
from .learn import LearnKind, make_strategy


class SourceModelSpec(Settings):
    """The source model: trained on the clean training split with this recipe."""

    dataset: str = Field("digits", description="a registered dataset (`palimpsest ls benchmarks`)")
    root: str | None = Field(None, description="folder or file of the dataset; None = the dataset's default location")
    train_subset: int | None = Field(None, ge=1, description="use this many training examples (random subset)")
    test_subset: int | None = Field(None, ge=1, description="use this many test examples (random subset)")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="cnn", settings={"norm": "batch"}),
                             description="the source model (norm and tent need BatchNorm layers)")
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(epochs=10, batch_size=32, lr=0.05,
                                                                            momentum=0.9),
                                     description="the source model's training recipe")


class ShiftSpec(Settings):
    """The shifted domains the model meets at test time: the test split transformed."""

    transform: Literal["noise", "rotation", "permutation"] = Field(
        "noise", description="what changes between domains: Gaussian noise of growing strength, rotation by evenly "
        "spaced angles, or a fixed random pixel permutation per domain")
    n_domains: int = Field(4, ge=1, description="shifted domains, met one after the other (one step each)")
    max_noise: float = Field(1.5, ge=0, description="noise: standard deviation of the last domain (standardised "
                             "units); the first is clean")
    max_degrees: float = Field(90.0, ge=0, description="rotation: the domains are evenly spaced in [0, max_degrees)")


class AdaptSpec(EntriesSpec):
    kind: Literal["adapt"] = Field("adapt", description="label-free test-time adaptation")
    name: str = Field("adaptation", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="names the experiment: its id is <name>-<date>-<time>")
    source: SourceModelSpec = Field(default_factory=SourceModelSpec, description="the source model, trained once "
                                    "per seed on the clean training split (cached)")
    shift: ShiftSpec = Field(default_factory=ShiftSpec, description="the shifted test domains")
    adaptation: TrainingConfig = Field(default_factory=lambda: TrainingConfig(epochs=1, batch_size=64,
                                                                              optimizer="adam", lr=1e-3),
                                       description="optimisation settings of the adaptation on each domain's "
                                       "unlabelled test inputs")
    methods: list[StrategySpec] = Field(..., min_length=1, description="label-free strategies only (source, norm, "
                                        "tent, ...); `- tent` is short for `- {name: tent}`")
    entries_field = "methods"

    # what LearnKind's run machinery reads
    @property
    def strategies(self) -> list[StrategySpec]:
        return self.methods

    def strategy(self, label: str) -> StrategySpec:
        return next(s for s in self.methods if s.display == label)

    def training_for(self, s: StrategySpec) -> TrainingConfig:
        return TrainingConfig(**{**self.adaptation.model_dump(), **s.training})

    @property
    def model(self) -> ModelSpec:
        return self.source.model

    def source_digest(self, seed: int) -> str:
        import hashlib
        payload = json.dumps({"source": self.source.model_dump(mode="json"), "seed": seed}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@KINDS.register("adapt", summary="label-free test-time adaptation of a source model on shifted domains")
class AdaptKind(LearnKind):
    name = "adapt"
    Spec = AdaptSpec

    def problems(self, data: dict) -> list[str]:
        from ...core.registry import DATASETS
        problems: list[str] = []
        source = data.get("source") if isinstance(data.get("source"), dict) else {}
        known(DATASETS, source.get("dataset", "digits"), "source.dataset", problems)
        problems += model_problems(source.get("model", {"name": "cnn"}), "source.model")
        methods = data.get("methods")
        problems += strategy_problems(methods, "methods", "", "domain")
        for i, m in enumerate(methods if isinstance(methods, list) else []):
            name = m if isinstance(m, str) else m.get("name") if isinstance(m, dict) else None
            if isinstance(name, str) and name in STRATEGIES and not STRATEGIES.get(name).obj.label_free:
                free = [e.name for e in STRATEGIES.entries() if getattr(e.obj, "label_free", False)]
                problems.append(f"methods.{i}.name: {name!r} reads labels; an adaptation method must be label-free "
                                f"(one of {', '.join(free)})")
        return problems

    def describe(self, spec: AdaptSpec) -> str:
        return (f"{len(spec.methods)} methods x {len(spec.seeds)} seeds adapting a {spec.source.model.name} trained "
                f"on {spec.source.dataset} to {spec.shift.n_domains} {spec.shift.transform} domains")

    def jobs(self, spec: AdaptSpec) -> list[Job]:
        out = []
        for seed in spec.seeds:
            out.append(Job(f"seed{seed}/source", seed, {"role": "source"}))
            out += [Job(f"{m.display}/seed{seed}", seed, {"label": m.display}, (f"seed{seed}/source",))
                    for m in spec.methods]
        return out

    def _data(self, spec: AdaptSpec):
        s = spec.source
        data = _datasets.load_dataset(s.dataset, **({"root": s.root} if s.root else {}))
        if s.train_subset or s.test_subset:
            data = data.subsample(s.train_subset, s.test_subset, seed=0)
        return data

    def stream(self, spec: AdaptSpec, seed: int) -> Stream:
        """The shifted domains: the test split transformed, as both the (label-free) adaptation data
        and the evaluation data of each domain (the online test-time protocol)."""
        key = (spec.shift.model_dump_json(), spec.source.model_dump_json(), seed)
        if key not in self._streams:
            data = self._data(spec)
            test_only = type(data)(data.name, data.x_test, data.y_test, data.x_test, data.y_test, data.class_names,
                                   data.source)
            sh = spec.shift
            stream = domain_incremental(test_only, sh.n_domains, transform=sh.transform, seed=seed,
                                        max_degrees=sh.max_degrees, max_noise=sh.max_noise)
            self._streams = {key: stream}
        return self._streams[key]

    def preflight(self, spec, db=None) -> None:
        """The shifted stream builds and every method can prepare the source model."""
        stream = self.stream(spec, spec.seeds[0])
        for m in spec.methods:
            strategy = make_strategy(m.name, m.settings, [p.model_dump() for p in m.plus])
            strategy.check_training(spec.training_for(m))
            with torch.random.fork_rng(devices=[]):
                strategy.prepare(create_model(spec.source.model.name, stream=stream, **spec.source.model.settings))

    def _source_id(self, spec, seed) -> str:
        return f"adapt_source/{spec.source_digest(seed)}"

    def pending(self, spec, exp_id, job, db):
        entry = db.stored_model(self._source_id(spec, job.seed))
        if job.info.get("role") == "source":
            return None if entry is not None else {}
        state = super().pending(spec, exp_id, job, db)
        if state is not None:
            state["source"] = entry
        return state

    def run_job(self, spec: AdaptSpec, exp_id: str, job: Job, state: dict, outbox) -> None:
        if job.info.get("role") == "source":
            return self._train_source(spec, exp_id, job, outbox)
        m = spec.strategy(job.info["label"])
        stream = self.stream(spec, job.seed)
        strategy = make_strategy(m.name, m.settings, [p.model_dump() for p in m.plus])
        weights = load_state(outbox.root / state["source"]["path"])["model"]

        def make_model():
            model = create_model(spec.source.model.name, stream=stream, **spec.source.model.settings)
            model.load_state_dict(weights)
            return strategy.prepare(model)

        self.train_run(spec, exp_id, job, state, outbox, m.display, m.name, strategy, stream, spec.training_for(m),
                       make_model, label_free=True)

    def _train_source(self, spec: AdaptSpec, exp_id: str, job: Job, outbox) -> None:
        s, seed = spec.source, job.seed
        data = self._data(spec)
        device = pick_device(s.training.device)
        with torch.random.fork_rng(devices=[]):
            seed_everything(derive_seed(seed, "source"))
            model = create_model(s.model.name, data.input_shape, data.n_classes, **s.model.settings).to(device)
            model.observe_classes(range(data.n_classes))
            with Stopwatch() as clock:
                fit(model, torch.from_numpy(data.x_train), torch.from_numpy(data.y_train.astype(np.int64)),
                    s.training, seed, device, stage="source")
        path = outbox.root / f"models/adapt_source_{spec.source_digest(seed)}.safetensors"
        save_state(path, {"model": model.state_dict()})
        outbox.emit("model", model_id=self._source_id(spec, seed), experiment_id=exp_id, seed=seed, role="adapt_source",
                    path=outbox.rel(path), seconds=clock.wall, info={"spec": s.model_dump(mode="json"),
                                                                     "cpu_seconds": clock.cpu})

    def base_weights(self, exp: dict, run: dict, db) -> dict | None:
        import yaml

        from ..spec import parse_spec
        spec = parse_spec(yaml.safe_load(exp["spec_yaml"]), "stored spec")
        entry = db.model_entry(self._source_id(spec, run["seed"]))
        return load_state(db.file(entry["path"]))["model"]

    def job_done(self, spec, exp_id, job, db, emit) -> None:
        if job.info.get("role") != "source":
            super().job_done(spec, exp_id, job, db, emit)


__all__ = ["AdaptKind", "AdaptSpec", "ShiftSpec", "SourceModelSpec"]
