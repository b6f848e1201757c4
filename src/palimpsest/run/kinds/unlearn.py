"""kind: unlearn. Forget on request: an original model (trained here from `train:`, or taken from a
stored learning run with `source:`), forget requests, methods, and audits against the model
retrained without the forgotten data.

Jobs, per seed (ids `seed<k>/...`, relative to the experiment):

    original                 train the original model (or take the source run's), with the artefacts
                             methods keep from training time (SSD's full-data importance); cached
                             across experiments by the training spec and seed
    references               the per-example attack's reference models (when asked for); cached too
    request<i>/select        a worst_case request only: its forget set, selected on the original (and the
                             reference models, for objective retrain_gap) and stored (cached per
                             original, request and seed); every later job of the request reads it
    request<i>/reference     the model retrained on the retain set with the original recipe (cached
                             per forget set), its audit and the reference models' outputs on the request
    request<i>/original      ledger entry: the original model, audited against the reference
    request<i>/retrain       ledger entry: the retrained model (the target every method is read against)
    request<i>/<label>       ledger entry: one method on a copy of the original, audited

Every ledger entry is written before its work starts (a crash leaves a visible failed record) and
closed with the audit, the method's report and the path of the stored per-example outputs from
which the audit is recomputable (evaluate/unlearning.py).
"""
from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
import yaml
from pydantic import Field, ValidationError, model_validator

from ...core.config import Settings, identity, pydantic_problems, since
from ...core.registry import DATASETS, KINDS, UNLEARNERS
from ...core.seeding import derive_seed, pick_device, seed_everything
from ...core.timing import Stopwatch
from ...data import datasets as _datasets
from ...evaluate.unlearning import audit_from_outputs, collect_outputs, reference_mia_outputs
from ...forget.base import Artifact, ArtifactCache, UnlearnContext, UnlearningData
from ...forget.request import ForgetRequest, ForgetSplit, resolve, worst_case_size
from ...train.fit import fit
from ...models import create_model
from ...train.config import TrainingConfig
from ...train.snapshot import frozen_copy
from ..spec import LABEL_PATTERN, EntriesSpec, ModelSpec, known, model_problems
from ..store.db import ResultsDB
from ..store.files import load_arrays, load_state, save_state
from ..store.writer import Outbox
from .base import ExperimentKind, Job, job_id

REFERENCE = "retrain"
TRAINING_TIME = {"train": "examples"}   # what training-time artefacts are computed from


class OriginalSpec(Settings):
    """How the original model is trained: on every class of the dataset at once."""

    dataset: str = Field("fashion_mnist", description="a registered dataset (`palimpsest ls benchmarks`)")
    root: str | None = Field(None, description="folder or file of the dataset; None = the dataset's default location")
    train_subset: int | None = Field(None, ge=1, description="use this many training examples (random subset)")
    test_subset: int | None = Field(None, ge=1, description="use this many test examples (random subset)")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="cnn"), description="the original model")
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(epochs=3, lr=0.05, momentum=0.9),
                                     description="the original recipe: trains the original model and the retrained "
                                     "reference, and is handed to every method")


class SourceSpec(Settings):
    """A stored learning run whose model is the original: the data it was trained on (every
    experience up to `step`), its recipe and its weights."""

    run: str = Field(..., description="a run id: EXPERIMENT/STRATEGY/seedN (see `palimpsest runs`)")
    step: int | None = Field(None, description="the model after this step; None: the last")


class MethodSpec(Settings):
    name: str = Field(..., description="a registered unlearner (`palimpsest ls unlearners`); retrain is the "
                      "reference and is always run")
    label: str | None = Field(None, pattern=LABEL_PATTERN, max_length=100,
                              description="name shown in tables; defaults to the method name")
    settings: dict[str, Any] = Field(default_factory=dict, description="the method's settings (listed per "
                                     "unlearner below)")

    @property
    def display(self) -> str:
        return self.label or self.name


class ReferenceAttackSpec(Settings):
    n_models: int = Field(0, ge=0, description="reference models for the per-example attack (0 = off)")
    pool_fraction: float = Field(0.5, gt=0, lt=1, description="share of the pool each reference model trains on "
                                 "(below 1: each example must be left out of some reference models)")


class RelearnSpec(Settings):
    n_examples: int = Field(10, ge=1, description="forget examples the copy is fine-tuned on (as many retain "
                            "examples are mixed in)")
    steps: int = Field(20, ge=1, description="full-batch SGD steps of the fine-tune; accuracy is recorded after each")
    lr: float = Field(0.01, gt=0, description="learning rate of the fine-tune")


class AuditSpec(Settings):
    population_mia: bool = Field(True, description="population membership attacks (a classifier trained on "
                                 "retain vs test outputs, applied to the forget set)")
    reference_mia: ReferenceAttackSpec = Field(default_factory=ReferenceAttackSpec,
                                               description="per-example attacks (RMIA, LiRA) with reference models")
    relearn: RelearnSpec | None = Field(None, description="relearning audit: how fast a few-shot fine-tune brings "
                                        "the forgotten data back; None = off")
    probe: bool = Field(False, description="linear-probe audit: do the frozen features still separate the "
                        "forgotten classes")
    keep_outputs: bool = Field(True, json_schema_extra=since("0.2"), description="store each audited model's per-example outputs (the audit is "
                               "recomputable from them)")


class UnlearnSpec(EntriesSpec):
    kind: Literal["unlearn"] = Field("unlearn", json_schema_extra=since("0.2"),
                                     description="forget on request (required: a spec without `kind` is a "
                                     "learning spec)")
    name: str = Field("unlearning", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="names the experiment: its id is <name>-<date>-<time>")
    train: OriginalSpec = Field(default_factory=OriginalSpec, description="how the original model is trained "
                                "(leave out when `source` is given)")
    source: SourceSpec | None = Field(None, json_schema_extra=since("0.2"),
                                      description="take the original model from a stored learning run instead")
    forget: list[ForgetRequest] = Field(..., min_length=1, description="the forget requests, each run with "
                                        "every method")
    methods: list[MethodSpec] = Field(..., min_length=1, description="the unlearners compared; `- ssd` is short "
                                      "for `- {name: ssd}`")
    audits: AuditSpec = Field(default_factory=AuditSpec, description="what each unlearned model is audited with, "
                              "next to the retrained reference")
    entries_field = "methods"

    @model_validator(mode="after")
    def _source(self):
        if self.source is not None and "train" in self.model_fields_set:
            raise ValueError("train and source: give one (a model to train, or a stored run to take)")
        if self.source is not None and len(self.seeds) != 1:
            raise ValueError("seeds: a source run has one seed; list one seed (its audits' seed)")
        for i, r in enumerate(self.forget):
            if r.kind == "worst_case" and r.worst_case_objective == "retrain_gap" \
                    and not self.audits.reference_mia.n_models:
                raise ValueError(f"forget.{i}: a worst_case request with objective retrain_gap (the default) needs "
                                 "the per-example attack's reference models; expected audits.reference_mia.n_models "
                                 "> 0, got 0; set audits: {reference_mia: {n_models: 4}} or the request's "
                                 "objective: forget_loss")
        return self

    def original_digest(self, seed: int) -> str:
        """Identifies the original model: its training spec and seed (the retrain cache key's base)."""
        if self.source is not None:   # "strategy": its references are the run's strategy retrained (0.3)
            return hashlib.sha256(f"{self.source.run}@{self.source.step}#strategy".encode()).hexdigest()[:16]
        payload = json.dumps({"train": identity(self.train), "seed": seed}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def method_entries(self) -> list[tuple[str, str, dict]]:
        """(label, registry name, settings) of every method other than the reference itself."""
        return [(m.display, m.name, m.settings) for m in self.methods if m.name != REFERENCE]


@dataclass
class TrainingData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]


@dataclass
class Origin:
    """The model requests are made against: its training data, recipe and identity."""

    data: TrainingData
    make_model: Callable[[], torch.nn.Module]
    training: TrainingConfig
    key: str
    source: str
    # a source run's counterfactual: (forget rows, seed, device) -> (model, wall, cpu seconds) of its
    # strategy retrained on its stream without those rows (None: retrain offline with `training`)
    retrain: Callable[[np.ndarray, int, Any], tuple[torch.nn.Module, float, float]] | None = None


def load_training_data(t: OriginalSpec) -> TrainingData:
    data = _datasets.load_dataset(t.dataset, **({"root": t.root} if t.root else {}))
    if t.train_subset or t.test_subset:
        data = data.subsample(t.train_subset, t.test_subset, seed=0)
    return TrainingData(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train.astype(np.int64)),
                        torch.from_numpy(data.x_test), torch.from_numpy(data.y_test.astype(np.int64)),
                        data.n_classes, data.input_shape)


def model_factory(m: ModelSpec, input_shape, n_classes: int, classes=None) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        model = create_model(m.name, input_shape, n_classes, head="single", **m.settings)
        model.observe_classes(range(n_classes) if classes is None else classes)  # trained on these classes at once
        return model
    return make


def origin_from_run(run: dict, spec_yaml: str, step: int, key: str, source: str) -> Origin:
    """A stored continual-learning run as the target of forget requests: the examples that trained
    it (every experience scheduled up to `step`), the recipe of its run."""
    from ..spec import parse_spec
    from .learn import build_stream
    spec = parse_spec(yaml.safe_load(spec_yaml), "stored spec")
    stream = build_stream(spec.benchmark, run["seed"])
    schedule = json.loads(run["schedule_json"])
    positions = sorted({p for s in schedule[: step + 1] for p in s})
    exps = [stream.train[p] for p in positions]
    data = TrainingData(torch.cat([e.inputs for e in exps]), torch.cat([e.targets for e in exps]),
                        torch.cat([e.inputs for e in stream.test]), torch.cat([e.targets for e in stream.test]),
                        stream.n_classes, stream.input_shape)
    classes = sorted({c for e in exps for c in e.classes})
    training = TrainingConfig(**json.loads(run["training_json"]))

    def retrain(forget_rows: np.ndarray, seed: int, device) -> tuple[torch.nn.Module, float, float]:
        """The run's strategy trained from scratch through the same steps of the same stream without
        the forget rows (issue 11: a continual learner is audited against its own counterfactual, not
        an offline joint model, whose gap to the strategy would enter the verdict unsaid)."""
        from .learn import strategy_from_run
        from .lifecycle import learned_ids, retrain_by_strategy
        forgotten = learned_ids(stream, positions)[np.asarray(forget_rows, dtype=np.int64)]
        learner, clock = retrain_by_strategy(spec.model, stream, strategy_from_run(run), training, schedule, step + 1,
                                             forgotten, seed, device)
        return learner.strategy.eval_model(learner.model).eval(), clock.wall, clock.cpu

    return Origin(data, model_factory(spec.model, stream.input_shape, stream.n_classes, classes),
                  training, key, source, retrain)


@KINDS.register("unlearn", summary="forget requests x methods on a trained model, audited against retraining")
class UnlearnKind(ExperimentKind):
    name = "unlearn"
    Spec = UnlearnSpec
    metrics = ("unlearning_audit",)
    tables = ("unlearning_summary",)
    figures = ("unlearning_bars",)

    def __init__(self) -> None:
        self._origin: tuple[str, Origin] | None = None

    # -- spec ---------------------------------------------------------------------------------------
    def problems(self, data: dict) -> list[str]:
        problems: list[str] = []
        train = data.get("train") if isinstance(data.get("train"), dict) else {}
        dataset = train.get("dataset", "fashion_mnist")
        known(DATASETS, dataset, "train.dataset", problems)
        problems += model_problems(train.get("model", {"name": "cnn"}), "train.model")
        n_classes = DATASETS.get(dataset).meta.get("n_classes") if isinstance(dataset, str) and dataset in DATASETS \
            else None
        for i, r in enumerate(data.get("forget") if isinstance(data.get("forget"), list) else []):
            if isinstance(r, dict) and n_classes and isinstance(r.get("classes"), list) and "source" not in data:
                bad = [c for c in r["classes"] if not isinstance(c, int) or not 0 <= c < n_classes]
                if bad:
                    problems.append(f"forget.{i}.classes: expected class ids in [0, {n_classes}), got {bad}")
        for i, m in enumerate(data.get("methods") if isinstance(data.get("methods"), list) else []):
            m = {"name": m} if isinstance(m, str) else m
            if not isinstance(m, dict):
                continue
            if known(UNLEARNERS, m.get("name"), f"methods.{i}.name", problems) and isinstance(m.get("settings", {}), dict):
                config = UNLEARNERS.get(m["name"]).obj.Config
                try:
                    config(**m.get("settings", {}))
                except ValidationError as err:
                    problems += pydantic_problems(err, f"methods.{i}.settings", config)
        return problems

    def describe(self, spec: UnlearnSpec) -> str:
        where = f"run {spec.source.run}" if spec.source else f"{spec.train.dataset}, model {spec.train.model.name}"
        return (f"valid unlearning spec ({len(spec.forget)} request(s) x {len(spec.methods)} method(s) x "
                f"{len(spec.seeds)} seeds on {where})")

    def jobs(self, spec: UnlearnSpec) -> list[Job]:
        out = []
        for seed in spec.seeds:
            base = f"seed{seed}"
            out.append(Job(f"{base}/original_model", seed, {"role": "original_model"}))
            if spec.audits.reference_mia.n_models:
                out.append(Job(f"{base}/references", seed, {"role": "references"}, (f"{base}/original_model",)))
            for i, request in enumerate(spec.forget):
                req = f"{base}/request{i}"
                select: tuple[str, ...] = ()
                if request.kind == "worst_case":
                    select = (f"{req}/select",)
                    out.append(Job(f"{req}/select", seed, {"role": "select", "request": i}, (f"{base}/original_model",)
                                   + ((f"{base}/references",) if request.worst_case_objective == "retrain_gap" else ())))
                out.append(Job(f"{req}/reference", seed, {"role": "reference", "request": i},
                               (f"{base}/original_model",) + select))
                needs = (f"{base}/original_model", f"{req}/reference") + \
                    ((f"{base}/references",) if spec.audits.reference_mia.n_models else ()) + select
                out.append(Job(f"{req}/original", seed, {"role": "entry", "request": i, "label": "original",
                                                         "method": "original", "settings": {}}, needs))
                out.append(Job(f"{req}/{REFERENCE}", seed, {"role": "entry", "request": i, "label": REFERENCE,
                                                            "method": REFERENCE, "settings": {}}, needs))
                for label, name, settings in spec.method_entries():
                    out.append(Job(f"{req}/{label}", seed, {"role": "entry", "request": i, "label": label,
                                                             "method": name, "settings": settings}, needs))
        return out

    # -- identities of cached models ----------------------------------------------------------------
    @staticmethod
    def _original_id(spec, seed) -> str:
        return f"original/{spec.original_digest(seed)}"

    @staticmethod
    def _references_id(spec, seed) -> str:
        a = spec.audits.reference_mia
        return f"mia_references/{spec.original_digest(seed)}_{a.n_models}_{a.pool_fraction}"

    @classmethod
    def _selection_id(cls, spec, seed, i) -> str:
        """A worst_case request's stored forget set: per original, request, run seed and (retrain_gap)
        the reference models it read."""
        r = spec.forget[i]
        payload = json.dumps({"request": identity(r), "seed": seed,
                              "references": cls._references_id(spec, seed)
                              if r.worst_case_objective == "retrain_gap" else None}, sort_keys=True)
        return f"forget_set/{spec.original_digest(seed)}_{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    # -- runner side --------------------------------------------------------------------------------
    def preflight(self, spec: UnlearnSpec, db: ResultsDB | None = None) -> None:
        """Every forget request must resolve on the original's training data (the classes exist, the
        forget set is neither empty nor everything) and the model must build, before anything is
        recorded. A source run is looked up in `db` (skipped without one)."""
        if spec.source is not None and db is None:
            return
        origin = self.origin(spec, spec.seeds[0], {"origin": self._origin_state(spec, spec.seeds[0], db)})
        with torch.random.fork_rng(devices=[]):
            origin.make_model()
        for i, request in enumerate(spec.forget):
            for seed in spec.seeds:
                if request.kind == "worst_case":   # selected later, by its own job; its size is checked now
                    worst_case_size(request, len(origin.data.y_train))
                else:
                    self._split(spec, origin, i, seed)

    def pending(self, spec: UnlearnSpec, exp_id, job, db: ResultsDB):
        seed, role = job.seed, job.info["role"]
        state: dict[str, Any] = {"origin": self._origin_state(spec, seed, db)}
        state["original"] = db.stored_model(self._original_id(spec, seed))
        if role == "original_model":
            return None if state["original"] is not None else state
        state["references"] = db.stored_model(self._references_id(spec, seed))
        if role == "references":
            return None if state["references"] is not None else state
        state["selection"] = self._stored_selection(spec, seed, job.info["request"], db)
        if role == "select":
            return None if state["selection"] is not None else state
        reference_job = f"{exp_id}/seed{seed}/request{job.info['request']}/reference"
        state["reference_job"] = reference_job
        done_file = db.root / _folder(reference_job) / "reference.json"
        state["reference"] = json.loads(done_file.read_text()) if done_file.is_file() else None
        if role == "reference":
            prefix = f"retrain/{spec.original_digest(seed)}_"
            state["cached_reference"] = {e["id"]: e for e in db.model_entries(prefix) if db.file(e["path"]).is_file()}
            entries = [db.ledger_entry(f"{exp_id}/seed{seed}/request{job.info['request']}/{label}")
                       for label in ["original", REFERENCE] + [m[0] for m in spec.method_entries()]]
            if state["reference"] is not None or all(e and e["status"] == "finished" for e in entries):
                return None   # a resumed run skips finished requests without rebuilding their reference
            return state
        entry = db.ledger_entry(job_id(exp_id, job))
        return None if entry is not None and entry["status"] == "finished" else state

    def _stored_selection(self, spec, seed: int, i: int, db: ResultsDB) -> dict | None:
        """The model-table entry of a worst_case request's stored forget set (None: other kinds, or
        not selected yet)."""
        if spec.forget[i].kind != "worst_case":
            return None
        return db.stored_model(self._selection_id(spec, seed, i))

    def _origin_state(self, spec: UnlearnSpec, seed: int, db: ResultsDB) -> dict:
        if spec.source is None:
            return {"kind": "train"}
        run = db.run(spec.source.run)
        if run is None:
            db.record(spec.source.run)   # raises the clear not-found error
        source_kind = db.experiment(run["experiment_id"])["kind"]
        if source_kind != "learn":
            from ...core.errors import PalimpsestError
            raise PalimpsestError(f"run {spec.source.run} is a {source_kind} run", expected="a learning run "
                                  "(kind: learn) as the source of forget requests", got=source_kind,
                                  fix="forget from a run of a learning experiment")
        steps = [s for s in db.steps(run["id"]) if s["step"] >= 0]
        step = spec.source.step if spec.source.step is not None else (steps[-1]["step"] if steps else None)
        chosen = next((s for s in steps if s["step"] == step), None)
        if chosen is None or not chosen["model_path"] or not db.file(chosen["model_path"]).is_file():
            from ...core.errors import PalimpsestError
            kept = [s["step"] for s in steps if s["model_path"]]
            raise PalimpsestError(f"run {spec.source.run} has no stored model for step {step}",
                                  expected=f"a step whose model was kept: {kept or 'none'}", got=step,
                                  fix="forget from a step listed there, or rerun with `checkpoints: {models: all}`")
        return {"kind": "run", "run": run, "step": step, "model_path": chosen["model_path"],
                "spec_yaml": db.experiment(run["experiment_id"])["spec_yaml"]}

    # -- job side -----------------------------------------------------------------------------------
    def origin(self, spec: UnlearnSpec, seed: int, state: dict) -> Origin:
        key = spec.original_digest(seed)
        if self._origin is None or self._origin[0] != key:
            if state["origin"]["kind"] == "run":
                o = state["origin"]
                origin = origin_from_run(o["run"], o["spec_yaml"], o["step"], key, f"{o['run']['id']}@step{o['step']}")
            else:
                data = load_training_data(spec.train)
                origin = Origin(data, model_factory(spec.train.model, data.input_shape, data.n_classes),
                                spec.train.training, key, f"original/{key}")
            self._origin = (key, origin)
        return self._origin[1]

    def run_job(self, spec: UnlearnSpec, exp_id: str, job: Job, state: dict, outbox: Outbox) -> None:
        role = job.info["role"]
        {"original_model": self._original_model, "references": self._references, "select": self._select,
         "reference": self._reference, "entry": self._entry}[role](spec, exp_id, job, state, outbox)

    def _original_model(self, spec, exp_id, job, state, outbox) -> None:
        seed = job.seed
        origin = self.origin(spec, seed, state)
        device = pick_device(origin.training.device)
        if state["origin"]["kind"] == "run":   # the source run's model, as it was stored
            o = state["origin"]
            with Stopwatch() as clock:
                from .learn import rebuild_model
                model = rebuild_model(o["run"], o["spec_yaml"], outbox.root / o["model_path"]).to(device)
            cache: dict = {}
        else:
            with torch.random.fork_rng(devices=[]):
                seed_everything(derive_seed(seed, "original"))
                model = origin.make_model().to(device)
                with Stopwatch() as clock:
                    fit(model, origin.data.x_train, origin.data.y_train, origin.training, seed, device, stage="original")
                    cache = self._artifacts(spec, model, origin, seed, device)
        path = outbox.root / f"models/original_{origin.key}.safetensors"
        save_state(path, {"model": model.state_dict(), "cache": cache,
                          "cache_splits": {k: dict(TRAINING_TIME) for k in cache}})
        outbox.emit("model", model_id=self._original_id(spec, seed), experiment_id=exp_id, seed=seed, role="original",
                    path=outbox.rel(path), seconds=clock.wall,
                    info={"spec": spec.train.model_dump(mode="json") if spec.source is None else spec.source.model_dump(),
                          "cpu_seconds": clock.cpu})

    def _artifacts(self, spec, model, origin: Origin, seed: int, device) -> dict:
        """What methods keep with the model at training time (e.g. SSD's full-data importance),
        each computed from the whole training set."""
        out: dict = {}
        ctx = UnlearnContext(origin.training, origin.make_model, device, seed)
        for m in spec.methods:
            out.update(UNLEARNERS.create(m.name, **m.settings).artifacts(model, origin.data.x_train, origin.data.y_train,
                                                                          ctx))
        return out

    @staticmethod
    def _kept(cache: dict, splits: dict | None) -> dict[str, Artifact]:
        """Artefacts as stored with an original: each with the splits it was computed from (files
        written before provenance was stored hold training-time artefacts: the whole training set)."""
        splits = splits or {}
        return {k: Artifact(v, dict(splits.get(k) or TRAINING_TIME)) for k, v in cache.items()}

    def _load(self, origin: Origin, root, entry: dict, device) -> tuple[torch.nn.Module, dict[str, Artifact]]:
        """A stored model (an original or a retrained reference) and the artefacts kept with it."""
        with torch.random.fork_rng(devices=[]):
            model = origin.make_model().to(device)
        state = load_state(root / entry["path"])
        model.load_state_dict(state["model"])
        return model, self._kept(state.get("cache", {}), state.get("cache_splits"))

    def _references(self, spec, exp_id, job, state, outbox) -> None:
        """Reference models of the per-example attack, each trained with the original recipe on a
        random share of the training set (once per original model, seed and attack setting)."""
        from ...evaluate.mia import train_reference_models
        seed, a = job.seed, spec.audits.reference_mia
        origin = self.origin(spec, seed, state)
        device = pick_device(origin.training.device)
        with Stopwatch() as clock:
            refs = train_reference_models(
                lambda: origin.make_model().to(device),
                lambda m, x, y, s: fit(m, x, y, origin.training, s, device, stage="reference"),
                origin.data.x_train, origin.data.y_train, a.n_models, seed=seed, fraction=a.pool_fraction)
        path = outbox.root / f"models/mia_references_{origin.key}_{a.n_models}_{a.pool_fraction}.safetensors"
        save_state(path, {"models": [m.state_dict() for m in refs.models], "masks": torch.from_numpy(refs.masks),
                          "seed": refs.seed})
        outbox.emit("model", model_id=self._references_id(spec, seed), experiment_id=exp_id, seed=seed,
                    role="mia_references", path=outbox.rel(path), seconds=clock.wall,
                    info={"n_models": a.n_models, "pool_fraction": a.pool_fraction, "cpu_seconds": clock.cpu})

    def _load_references(self, origin: Origin, root, entry: dict, device):
        from ...evaluate.mia import ReferenceModels
        saved = load_state(root / entry["path"])
        models = []
        for weights in saved["models"]:
            with torch.random.fork_rng(devices=[]):
                model = origin.make_model().to(device)
            model.load_state_dict(weights)
            models.append(model.eval())
        return ReferenceModels(models, saved["masks"].numpy(), int(saved["seed"]))

    def _select(self, spec, exp_id, job, state, outbox) -> None:
        """A worst_case request's forget set: the bi-level selection (forget/worst_case.py) on the
        original model, with each example's out-of-training confidence from the per-example attack's
        reference models (objective retrain_gap); stored with its objective trace."""
        from ...evaluate.mia import out_of_training_confidence
        from ...forget.worst_case import worst_case_forget_set
        seed, i = job.seed, job.info["request"]
        request = spec.forget[i]
        origin = self.origin(spec, seed, state)
        device = pick_device(origin.training.device)
        x, y = origin.data.x_train, origin.data.y_train
        model = self._load(origin, outbox.root, state["original"], device)[0].eval()
        with Stopwatch() as clock:
            q = None
            if request.worst_case_objective == "retrain_gap":
                q = out_of_training_confidence(self._load_references(origin, outbox.root, state["references"], device),
                                               x, y)
            chosen = worst_case_forget_set(model, x, y, worst_case_size(request, len(y)),
                                           objective=request.worst_case_objective, lower=request.worst_case_lower,
                                           out_confidence=q, device=device)
        model_id = self._selection_id(spec, seed, i)
        path = outbox.root / f"models/{model_id.replace('/', '_')}.safetensors"
        save_state(path, {"indices": torch.as_tensor(chosen["indices"], dtype=torch.int64),
                          "objective": torch.as_tensor(chosen["objective"], dtype=torch.float64)})
        outbox.emit("model", model_id=model_id, experiment_id=exp_id, seed=seed, role="forget_set",
                    path=outbox.rel(path), seconds=clock.wall,
                    info={"request": request.model_dump(mode="json"), "size": len(chosen["indices"]),
                          "objective": chosen["objective"], "cpu_seconds": clock.cpu})

    @staticmethod
    def _selected(root, entry: dict | None) -> np.ndarray | None:
        return None if entry is None else load_state(root / entry["path"])["indices"].numpy()

    def _split(self, spec, origin: Origin, i: int, seed: int, selected: np.ndarray | None = None) -> ForgetSplit:
        """Request i on the original's training data; a random request without its own seed draws
        its forget set from the run's seed (each seed forgets its own sample); a worst_case request
        takes its stored selection, `selected`."""
        return resolve(spec.forget[i], origin.data.y_train.numpy(), origin.data.n_classes, run_seed=seed,
                       selected=selected)

    def _reference(self, spec, exp_id, job, state, outbox) -> None:
        """The model retrained from scratch on the retain set with the original recipe (built once
        per original model and forget set, and cached), audited; plus the reference models' outputs
        on this request's forget set."""
        seed, i = job.seed, job.info["request"]
        entry_id = f"{exp_id}/seed{seed}/request{i}/{REFERENCE}"
        origin = self.origin(spec, seed, state)
        device = pick_device(origin.training.device)
        split = None
        try:
            split = self._split(spec, origin, i, seed, self._selected(outbox.root, state.get("selection")))
            model_id = f"retrain/{origin.key}_{split.key()}"
            cached = state.get("cached_reference") or {}
            entry = cached.get(model_id)
            with torch.random.fork_rng(devices=[]):
                seed_everything(derive_seed(seed, "retrain"))
                if entry is not None:
                    model, _ = self._load(origin, outbox.root, entry, device)
                    model_path = entry["path"]
                    info = {"seconds": entry["seconds"], "cpu_seconds": json.loads(entry["info_json"] or "{}")
                            .get("cpu_seconds"), "cached": True}
                else:
                    if origin.retrain is not None:   # a continual run: its strategy again, without the forget set
                        model, wall, cpu = origin.retrain(split.forget, seed, device)
                    else:
                        model = origin.make_model().to(device)
                        retain = torch.as_tensor(split.retain)
                        with Stopwatch() as clock:
                            fit(model, origin.data.x_train[retain], origin.data.y_train[retain], origin.training,
                                seed, device, stage="retrain")
                        wall, cpu = clock.wall, clock.cpu
                    path = outbox.root / f"models/retrain_{origin.key}_{split.key()}.safetensors"
                    save_state(path, {"model": model.state_dict(), "cache": {}})
                    model_path = outbox.rel(path)
                    outbox.emit("model", model_id=model_id, experiment_id=exp_id, seed=seed, role="retrain",
                                path=outbox.rel(path), seconds=wall,
                                info={"spec": spec.train.model_dump(mode="json") if spec.source is None
                                      else spec.source.model_dump(), "cpu_seconds": cpu,
                                      "reference": "offline" if origin.retrain is None else "strategy"})
                    info = {"seconds": wall, "cpu_seconds": cpu, "cached": False,
                            "reference": "offline" if origin.retrain is None else "strategy"}
            mia = None
            if state.get("references") is not None:
                refs = self._load_references(origin, outbox.root, state["references"], device)
                mia = reference_mia_outputs(refs, origin.data, split)
                outbox.save_arrays("mia.npz", **mia)
            outputs = collect_outputs(model, origin.data, split, spec.audits, seed)
            audit = audit_from_outputs(outputs, split, spec.audits, None, mia, seed)
            outputs_path = outbox.save_arrays("outputs.npz", **outputs) if spec.audits.keep_outputs else None
        except BaseException as err:  # a failed reference leaves a visible record too
            outbox.emit("ledger_open", entry_id=entry_id, experiment_id=exp_id, source=origin.source, seed=seed,
                        request=spec.forget[i].model_dump(mode="json"), forget_key=split.key() if split else "",
                        method=REFERENCE, label=REFERENCE, settings={})
            _close_failed(outbox, entry_id, err)
            raise
        done = {"audit": audit, "info": info, "outputs_path": outputs_path, "model_path": model_path,
                "mia_path": outbox.rel(outbox.path("mia.npz")) if mia is not None else None}
        outbox.path("reference.json").write_text(json.dumps(done))

    def _entry(self, spec, exp_id, job, state, outbox) -> None:
        """One ledger entry: the original, the retrained reference, or a method on a copy of the original."""
        seed, i, label, method = job.seed, job.info["request"], job.info["label"], job.info["method"]
        entry_id = job_id(exp_id, job)
        origin = self.origin(spec, seed, state)
        device = pick_device(origin.training.device)
        split = self._split(spec, origin, i, seed, self._selected(outbox.root, state.get("selection")))
        reference = state["reference"]
        outbox.emit("ledger_open", entry_id=entry_id, experiment_id=exp_id, source=origin.source, seed=seed,
                    request=spec.forget[i].model_dump(mode="json"), forget_key=split.key(), method=method, label=label,
                    settings=job.info["settings"])
        try:
            ref_info = reference["info"]
            report: dict = {}
            if label == REFERENCE:
                audit, outputs_path = dict(reference["audit"]), reference["outputs_path"]
                seconds, cpu = ref_info["seconds"], ref_info.get("cpu_seconds")
                model_path = reference.get("model_path")
            else:
                original, cache = self._load(origin, outbox.root, state["original"], device)
                if label == "original":
                    model, seconds, cpu = original, 0.0, 0.0
                    model_path = state["original"]["path"]
                else:
                    unlearner, model, report, seconds, cpu = self._unlearn(method, job.info["settings"], origin,
                                                                           original, cache, split, seed, device)
                    # the unlearned model is kept by the spec's checkpoint policy, like a run's last model
                    model_path = outbox.save_state("model.safetensors", unlearner.stored(model)) \
                        if spec.checkpoints.keeps_models(seed, spec.seeds) else None
                mia = load_arrays(outbox.root / reference["mia_path"]) if reference.get("mia_path") else None
                outputs = collect_outputs(model, origin.data, split, spec.audits, seed)
                audit = audit_from_outputs(outputs, split, spec.audits, reference["audit"], mia, seed)
                outputs_path = outbox.save_arrays("outputs.npz", **outputs) if spec.audits.keep_outputs else None
            ref_cpu = ref_info.get("cpu_seconds")
            # retrain_time_cached: the reference came from an earlier run, so its time was
            # measured then, under whatever load the machine had
            audit = dict(audit, seconds=seconds, retrain_seconds=ref_info["seconds"],
                         retrain_time_cached=bool(ref_info.get("cached")),
                         speedup_vs_retrain=ref_info["seconds"] / seconds if seconds else None,
                         cpu_seconds=cpu, retrain_cpu_seconds=ref_cpu,
                         speedup_vs_retrain_cpu=ref_cpu / cpu if cpu and ref_cpu else None)
            if model_path is not None:
                # the entry's model, by the entry's id (the original's and the retrained model's files are shared)
                outbox.emit("model", model_id=entry_id, experiment_id=exp_id, seed=seed, role="entry", path=model_path,
                            seconds=seconds, info={"label": label, "method": method, "request": i})
            diverged = report.get("finite") is False
            error = (f"{label} diverged: its loss became NaN or infinite during unlearning; lower its lr (now "
                     f"{job.info['settings'].get('lr', 'the default')}) or its number of steps") if diverged else None
            outbox.emit("ledger_close", entry_id=entry_id, status="diverged" if diverged else "finished",
                        seconds=seconds, audit=audit, report=report, outputs_path=outputs_path, error=error)
        except BaseException as err:
            _close_failed(outbox, entry_id, err)
            raise

    def _unlearn(self, name, settings, origin: Origin, original, cache, split, seed, device):
        import copy
        method = UNLEARNERS.create(name, **settings)
        guarded = UnlearningData(origin.data.x_train, origin.data.y_train, split, method.declared(),
                                 origin.data.n_classes)
        ctx = UnlearnContext(origin.training, origin.make_model, device, seed,
                             cache=ArtifactCache(cache, method.declared()), original=frozen_copy(original))
        model = copy.deepcopy(original).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "unlearn", name))
            with Stopwatch() as clock:
                model, report = method.unlearn(model, guarded, ctx)
        return method, model, report, clock.wall, clock.cpu

    def summarize(self, db, exp_id):
        from ..summary import summarize_ledger
        return summarize_ledger(db, exp_id)

    def load_stored(self, db, model_id):
        return load_stored_model(db, model_id)


def load_stored_model(db: ResultsDB, model_id: str, device: str | torch.device = "cpu"):
    """A model an unlearning experiment stored, rebuilt: a ledger entry's model (`<exp>/seed<k>/
    request<i>/<label>`: the original, the retrained reference or a method's unlearned model, as the
    checkpoint policy kept it) or a stored model by its id in the models table (`original/...`,
    `retrain/...`, `mia_references/...`, `forget_set/...`; the third gives the attack's
    ReferenceModels, the last a worst_case request's selection as {"indices", "objective"}). Returns
    (model, info): info has the spec, the role, the ledger entry and the forget / retain split of
    its request (None for models of no single request)."""
    from ...core.errors import PalimpsestError
    from ..spec import parse_spec
    entry = db.model_entry(model_id)
    ledger = db.ledger_entry(model_id)
    if entry is None:
        if ledger is not None:
            raise PalimpsestError(f"ledger entry {model_id} kept no model", expected="an entry whose model was stored",
                                  got=ledger["status"], fix="the spec's checkpoint policy decides what is kept "
                                  "(`checkpoints: {models: last, seeds: all}` keeps every entry's model); entries "
                                  "written before palimpsest kept unlearned models have none: run the spec again")
        raise PalimpsestError(f"no stored model {model_id!r}", expected="a run id, a ledger entry id or a stored "
                              "model id", got=model_id, fix="list them with `palimpsest runs` / `palimpsest ledger`")
    exp = db.experiment(entry["experiment_id"])
    spec = parse_spec(yaml.safe_load(exp["spec_yaml"]), "stored spec")
    kind, seed = UnlearnKind(), entry["seed"]
    origin = kind.origin(spec, seed, {"origin": kind._origin_state(spec, seed, db)})
    device = torch.device(device)
    split = None
    if ledger is not None:
        request = int(model_id.split("/request")[1].split("/")[0])
        split = kind._split(spec, origin, request, seed,
                            kind._selected(db.root, kind._stored_selection(spec, seed, request, db)))
    role = entry["role"]
    if role == "mia_references":
        model = kind._load_references(origin, db.root, entry, device)
    elif role == "forget_set":   # a worst_case request's selection: {"indices", "objective"}, not a model
        model = {k: v.numpy() for k, v in load_state(db.file(entry["path"])).items()}
    elif role == "entry" and ledger["label"] not in ("original", REFERENCE):
        with torch.random.fork_rng(devices=[]):
            model = UNLEARNERS.get(ledger["method"]).obj.restore(lambda: origin.make_model().to(device),
                                                                 load_state(db.file(entry["path"])))
    else:
        model = kind._load(origin, db.root, entry, device)[0].eval()
    return model, {"spec": spec, "role": role, "entry": ledger, "split": split, "seed": seed,
                   "source": origin.source}


def _folder(job_id_: str) -> str:
    from ..store.writer import job_folder
    return job_folder(job_id_)


def _close_failed(outbox: Outbox, entry_id: str, err: BaseException) -> None:
    """Close a ledger entry as interrupted (Ctrl-C) or failed, with the traceback."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    outbox.emit("ledger_close", entry_id=entry_id, status=status, error=traceback.format_exc(limit=5))


def run_unlearning(spec: UnlearnSpec, root="palimpsest-results", resume: bool = False, progress: bool = True,
                   on_entry: Callable[[str], None] | None = None) -> str:
    """Run an unlearning spec; return the experiment id. Results are in the ledger table."""
    from ..runner import Runner
    runner = Runner(spec, root, progress=progress, on_job=on_entry)
    try:
        return runner.run(resume)
    finally:
        runner.close()


def parse_unlearning_spec(data: Any, source: str = "spec") -> UnlearnSpec:
    """An unlearning spec from a mapping (`kind: unlearn` is implied)."""
    from ..spec import parse_spec
    return parse_spec({"kind": "unlearn", **data} if isinstance(data, dict) else data, source)


def forget_from_run(root, run_id: str, requests, methods, step: int | None = None, name: str = "forget",
                    seed: int = 0, progress: bool = False, plugins: list[str] | tuple = ()) -> str:
    """Run forget requests with `methods` ([(label, name, settings)]) on a stored learning run's
    model: an unlearning spec whose source is the run, through the one runner; returns its id.
    `plugins` (files already loaded) are recorded in the spec."""
    spec = UnlearnSpec(name=name, source=SourceSpec(run=run_id, step=step), forget=list(requests),
                       methods=[MethodSpec(name=n, label=lb, settings=st) for lb, n, st in methods], seeds=[seed],
                       plugins=list(plugins))
    return run_unlearning(spec, root, progress=progress)


UnlearningSpec = UnlearnSpec  # the name of palimpsest 0.1.0

__all__ = ["load_stored_model", "AuditSpec", "MethodSpec", "Origin", "OriginalSpec", "ReferenceAttackSpec", "RelearnSpec", "SourceSpec",
           "TrainingData", "UnlearnKind", "UnlearnSpec", "UnlearningSpec", "forget_from_run", "load_training_data",
           "origin_from_run", "parse_unlearning_spec", "run_unlearning"]
