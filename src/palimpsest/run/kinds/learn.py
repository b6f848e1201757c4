"""kind: learn. Continual learning: a benchmark stream, a model, strategies x seeds.

Jobs: one per (strategy label, seed), `<label>/seed<k>`. A job trains the model through the
stream's steps with its strategy; after every step it writes the model and the resume state
(optimizer, strategy components, random generator) into its folder, evaluates every test
experience (class-IL and task-IL from one pass), writes the predictions, and records the step in
one transaction. A killed job resumes from its last recorded step and gives the same numbers as an
uninterrupted one. When every job is done, each run's metrics are computed from what was stored
(forward transfer against the from_scratch run of the same seed, when there is one).
"""
from __future__ import annotations

import json
import traceback
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from ...core.config import Settings, since
from ...core.errors import PalimpsestError, SpecError
from ...core.registry import DATASETS, KINDS, STRATEGIES
from ...core.seeding import derive_seed, pick_device, seed_everything
from ...data import datasets as _datasets
from ...data.scenarios import Stream, class_incremental, domain_incremental, merge, online, recurring
from ...evaluate.evaluator import evaluate_stream
from ...evaluate.metrics import METRIC_NAMES, compute_metrics
from ...learn.defaults import defaults_for
from ...learn.strategy import Composite, Strategy, TrainContext
from ...learn.trainer import train_step
from ...models import create_model
from ...models.adapters import freeze
from ...train.config import TrainingConfig, build_optimizer
from ...train.snapshot import frozen_digest, trainable_state
from ..spec import EntriesSpec, ModelSpec, StrategySpec, model_problems, strategy_problems
from ..store.db import ResultsDB
from ..store.files import load_state
from ..store.schema import INITIAL_STEP
from ..store.writer import Outbox
from .base import ExperimentKind, Job, job_id


class RecurrenceSpec(Settings):
    length: int = Field(..., ge=1, description="number of training steps")
    distribution: Literal["uniform", "power_law", "zipf"] = Field(
        "uniform", description="how a step that introduces no new task picks an earlier one: uniformly, with "
        "probability proportional to (steps since it was last seen)^-alpha (power_law), or by a fixed Zipf law "
        "over tasks (zipf)")
    alpha: float = Field(1.0, gt=0, description="power_law / zipf: the exponent")
    introduce: Literal["first", "spread"] = Field("spread", description="new tasks all first, or spread evenly")


class BenchmarkSpec(Settings):
    dataset: str = Field("fashion_mnist", description="a registered dataset (`palimpsest ls benchmarks`; listed "
                         "below with its options); npz reads your own arrays")
    root: str | None = Field(None, description="folder or file of the dataset (for npz: the .npz file); None = "
                             "the dataset's default location")
    scenario: Literal["class", "task", "domain"] = Field(
        "class", description="class: disjoint classes per experience, no task id at test time; task: the same "
        "split with the task id given to the model; domain: every class in every experience, the inputs "
        "transformed differently in each (see transform)")
    n_experiences: int = Field(5, ge=1, description="experiences in the stream (class and task: the classes split "
                               "evenly among them, unless first_experience_classes is set)")
    class_order: list[int] | None = Field(None, description="class ids in the order they are split into "
                                          "experiences; None = 0, 1, 2, ... (or a seeded shuffle, see "
                                          "shuffle_classes)")
    shuffle_classes: bool = Field(False, description="draw the class order from the run's seed")
    first_experience_classes: int | None = Field(None, ge=1, description="classes in the first experience "
                                                 "(the rest split evenly among the others), e.g. 4 for 4, 2, 2, 2")
    transform: Literal["permutation", "rotation"] = Field(
        "permutation", description="domain scenario: a fixed random pixel permutation per experience (seeded by "
        "the run's seed), or a rotation by evenly spaced angles in [0, 180) degrees")
    online_batch_size: int | None = Field(None, ge=1, description="set for a single pass in mini-batches")
    recurrence: RecurrenceSpec | None = Field(None, description="a training sequence in which experiences "
                                              "recur (length steps); None = each experience once, in order")
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="share of each training experience held "
                                       "out (seeded) as a validation split; it is not trained on")
    train_subset: int | None = Field(None, ge=1, description="use this many training examples (random subset)")
    test_subset: int | None = Field(None, ge=1, description="use this many test examples (random subset)")
    standardize: bool = Field(True, json_schema_extra=since("0.2"), description="scale inputs by the training "
                              "mean and standard deviation; false keeps pixels in [0, 1] (Avalanche's and Mammoth's "
                              "ToTensor without Normalize)")
    keep_first: bool = Field(False, json_schema_extra=since("0.2"), description="domain scenario with permutations: "
                             "leave the first experience unpermuted (as some permuted-MNIST benchmarks do)")
    options: dict[str, Any] = Field(default_factory=dict, json_schema_extra=since("0.2"),
                                    description="keyword arguments of the dataset loader (e.g. {remap_labels: true} for "
                                                "npz); `palimpsest ls benchmarks` lists each loader")

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


class LearnSpec(EntriesSpec):
    kind: Literal["learn"] = Field("learn", json_schema_extra=since("0.2"),
                                   description="continual learning (the default when `kind` is left out)")
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec, description="the dataset and how it is split "
                                     "into a stream of experiences")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the network every strategy starts from")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="optimisation settings shared by "
                                     "every strategy (a strategy's `training` overrides them)")
    strategies: list[StrategySpec] = Field(..., min_length=1, description="the strategies compared; `- naive` is "
                                           "short for `- {name: naive}`; one run per strategy and seed")
    init_seed: Literal["derived", "plain"] = Field(
        "derived", json_schema_extra=since("0.2"), description="how the model's initial weights are drawn: from a seed "
        "derived from the run's seed (default), or after torch.manual_seed(seed) as a plain script does")

    def training_for(self, strategy: StrategySpec) -> TrainingConfig:
        return TrainingConfig(**{**self.training.model_dump(), **strategy.training})

    def strategy(self, label: str) -> StrategySpec:
        return next(s for s in self.strategies if s.display == label)


def build_stream(b: BenchmarkSpec, seed: int) -> Stream:
    """The stream a benchmark spec describes, for one seed (class order and permutations may
    depend on it)."""
    kwargs = {"root": b.root} if b.root else {}
    kwargs.update(b.options)
    if not b.standardize:
        kwargs["standardize"] = False
    data = _datasets.load_dataset(b.dataset, **kwargs)
    if b.train_subset or b.test_subset:
        data = data.subsample(b.train_subset, b.test_subset, seed=0)
    if b.scenario == "domain":
        stream = domain_incremental(data, b.n_experiences, transform=b.transform, seed=seed, keep_first=b.keep_first,
                                    validation_fraction=b.validation_fraction)
    else:
        stream = class_incremental(data, b.n_experiences, class_order=b.class_order,
                                   shuffle_classes=b.shuffle_classes, seed=seed,
                                   first_experience_classes=b.first_experience_classes,
                                   validation_fraction=b.validation_fraction, task_labels=b.scenario == "task")
    if b.recurrence:
        r = b.recurrence
        stream = recurring(stream, r.length, r.distribution, r.alpha, seed=seed, introduce=r.introduce)
    if b.online_batch_size:
        stream = online(stream, b.online_batch_size)
    return stream


def make_strategy(name: str, settings: dict, plus: list[dict] | tuple = (), dataset: str = "",
                  scenario: str = "") -> Strategy:
    """A registered strategy with its tuned defaults for (dataset, scenario) under the given settings,
    composed with plug-ins ({name, settings}) when there are any."""
    def one(n: str, s: dict) -> Strategy:
        return STRATEGIES.create(n, **{**defaults_for(n, dataset, scenario), **s})

    main = one(name, settings)
    plugins = [one(p["name"], p.get("settings", {})) for p in plus]
    return Composite(main, plugins) if plugins else main


def strategy_from_spec(s: StrategySpec, b: BenchmarkSpec) -> Strategy:
    return make_strategy(s.name, s.settings, [p.model_dump() for p in s.plus], b.dataset, b.scenario)


def strategy_from_run(run: dict, benchmark: BenchmarkSpec | None = None) -> Strategy:
    """The strategy of a stored run, rebuilt from its resolved settings."""
    settings = json.loads(run["settings_json"])
    plus = settings.pop("plus", [])
    return make_strategy(run["strategy"], settings, plus)


def build_model(m: ModelSpec, stream: Stream, strategy: Strategy) -> nn.Module:
    """The model of a spec for a stream: created by name, initial weights loaded, prefixes frozen,
    then prepared by the strategy (wrapped, injected or frozen further) before any optimizer exists."""
    model = create_model(m.name, stream=stream, head=m.head, mask_unseen=m.mask_unseen, **m.settings)
    if m.weights:
        from safetensors.torch import load_file
        weights = load_file(m.weights)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected:
            raise PalimpsestError(f"the weights in {m.weights} do not fit model {m.name!r}",
                                  expected="parameter names of the model", got=sorted(unexpected)[:5],
                                  fix="save the weights from the same model (model.state_dict())")
    if m.freeze:
        freeze(model, m.freeze)
    return strategy.prepare(model)


def model_checkpoint(model: nn.Module) -> dict:
    """What a model checkpoint holds: the whole state, or only the trainable part plus the digest
    of the frozen base when some parameters are frozen."""
    digest = frozen_digest(model)
    if digest is None:
        return {"model": model.state_dict()}
    return {"model": trainable_state(model), "frozen_digest": digest}


def load_model_checkpoint(model: nn.Module, saved: dict, path) -> None:
    """Load a checkpoint written by `model_checkpoint` into a freshly built model of the same spec."""
    digest = saved.get("frozen_digest")
    if digest is None:
        model.load_state_dict(saved["model"])
        return
    now = frozen_digest(model)
    if now != digest:
        raise PalimpsestError(f"{path} holds the trainable part of a model whose frozen base differs from this one",
                              expected=f"frozen base digest {digest}", got=now,
                              fix="build the model from the same weights file (model.weights) it was trained on")
    missing, unexpected = model.load_state_dict(saved["model"], strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise PalimpsestError(f"{path} does not fit the model", expected="its trainable parameters and buffers",
                              got=f"missing {sorted(set(missing) - frozen)[:5]}, unexpected {sorted(unexpected)[:5]}")


class Diverged(PalimpsestError):
    """A run whose training loss became NaN or infinite: stopped, stored as diverged, never finished."""

    def __init__(self, run_id: str, step: int, training: TrainingConfig) -> None:
        self.run_id, self.step = run_id, step
        super().__init__(f"run {run_id} diverged at step {step}: its training loss became NaN or infinite",
                         expected="a finite loss", got=f"lr {training.lr}, optimizer {training.optimizer}",
                         fix="lower training.lr (or the strategy's penalty weight: see the warnings above), or "
                             "set training.grad_clip; then run the spec again")


def _evaluate(model, stream, training, device, initial: bool):
    if initial:
        # The untrained reference is a random classifier over every class (GEM's b_j), not a
        # model that may predict nothing yet.
        active = model.active.clone()
        model.active.fill_(True)
        ev = evaluate_stream(model, stream, training.eval_batch_size, device)
        model.active.copy_(active)
        return ev
    return evaluate_stream(model, stream, training.eval_batch_size, device)


@KINDS.register("learn", summary="continual learning: strategies x seeds on a stream of experiences")
class LearnKind(ExperimentKind):
    name = "learn"
    Spec = LearnSpec
    metrics = METRIC_NAMES
    tables = ("strategy_summary",)
    figures = ("stream_contents", "accuracy_heatmaps", "accuracy_curves", "metric_bars", "task_accuracy_heatmaps",
               "task_accuracy_curves", "resolved_settings")
    # A task-incremental experiment is read in task-IL first; class-IL follows for reference.
    task_figures = ("stream_contents", "task_accuracy_heatmaps", "task_accuracy_curves", "metric_bars",
                    "accuracy_heatmaps", "accuracy_curves", "resolved_settings")
    recurring_figures = ("recurring_accuracy", "recurring_reappearances")

    @classmethod
    def report_parts(cls, exp: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        import yaml
        try:
            spec = yaml.safe_load(exp.get("spec_yaml") or "") or {}
        except yaml.YAMLError:
            spec = {}
        scenario = ((spec.get("benchmark") or {}) if isinstance(spec, dict) else {}).get("scenario")
        # streams whose tasks come back: the recurrence studies' plots (report/recurring.py)
        recurring = cls.recurring_figures if ((spec.get("benchmark") or {}) if isinstance(spec, dict) else {}).get(
            "recurrence") else ()
        if scenario == "task":
            return cls.tables, cls.task_figures + recurring
        if scenario == "domain":   # one head over the same classes: the task view repeats the class view
            return cls.tables, tuple(f for f in cls.figures if not f.startswith("task_")) + recurring
        return cls.tables, cls.figures + recurring

    def __init__(self) -> None:
        self._streams: dict[tuple, Stream] = {}

    def problems(self, data: dict) -> list[str]:
        from pathlib import Path
        problems: list[str] = []

        def section(key: str) -> dict:
            value = data.get(key)
            return value if isinstance(value, dict) else {}

        from ..spec import known
        b, training = section("benchmark"), section("training")
        dataset = b.get("dataset", BenchmarkSpec.model_fields["dataset"].default)
        if known(DATASETS, dataset, "benchmark.dataset", problems):
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
        problems += model_problems(data.get("model"), "model")
        strategies = data.get("strategies")
        problems += strategy_problems(strategies, "strategies", str(dataset), str(b.get("scenario", "class")))
        for i, s in enumerate(strategies if isinstance(strategies, list) else []):
            if isinstance(s, dict) and isinstance(s.get("training"), dict) and s["training"]:
                from pydantic import ValidationError

                from ...core.config import pydantic_problems
                try:
                    TrainingConfig(**{**training, **s["training"]})
                except ValidationError as err:
                    problems += [p for p in pydantic_problems(err, f"strategies.{i}.training")
                                 if p.split(":")[0].split(".")[-1] in s["training"]]
        return problems

    def describe(self, spec: LearnSpec) -> str:
        return (f"{len(spec.strategies)} strategies x {len(spec.seeds)} seeds on {spec.benchmark.dataset}, "
                f"{spec.benchmark.scenario}-incremental")

    def notes(self, spec: LearnSpec) -> list[str]:
        """One line per strategy (or plug-in) given tuned defaults the spec did not set."""
        b, lines = getattr(spec, "benchmark", None), []
        if b is None:   # a kind built on this one without a benchmark (adapt): no tuned defaults
            return []
        for s in spec.strategies:
            for name, given, where in [(s.name, s.settings, s.display),
                                       *((p.name, p.settings, f"{s.display} (plus {p.name})") for p in s.plus)]:
                filled = {k: v for k, v in defaults_for(name, b.dataset, b.scenario).items() if k not in given}
                if filled:
                    lines.append(f"{where}: " + ", ".join(f"{k}={v}" for k, v in filled.items()))
        if lines:
            lines = [f"tuned defaults for {b.dataset}/{b.scenario} (learn/defaults.py; write a setting in the "
                     "strategy's settings to override it):", *(f"  {line}" for line in lines)]
        return lines

    def jobs(self, spec: LearnSpec) -> list[Job]:
        return [Job(f"{s.display}/seed{seed}", seed, {"label": s.display}) for seed in spec.seeds
                for s in spec.strategies]

    def stream(self, spec: LearnSpec, seed: int) -> Stream:
        key = (spec.benchmark.model_dump_json(), seed)
        if key not in self._streams:
            self._streams = {key: build_stream(spec.benchmark, seed)}  # keep one in memory
        return self._streams[key]

    # -- runner side: what a job needs from the store -------------------------------------------
    def preflight(self, spec, db=None) -> None:
        """What only data can tell, before anything is recorded: the stream builds (first seed), and
        every strategy supports it and its training settings and can prepare the model."""
        stream = self.stream(spec, spec.seeds[0])
        problems = []
        for i, s in enumerate(spec.strategies):
            try:
                strategy = strategy_from_spec(s, spec.benchmark)
                strategy.check_stream(stream)
                strategy.check_training(spec.training_for(s))
                with torch.random.fork_rng(devices=[]):
                    build_model(spec.model, stream, strategy)
            except PalimpsestError as err:
                problems.append(f"strategies.{i} ({s.display}): {err.what}" + (f"; {err.fix}" if err.fix else ""))
        if problems:
            raise SpecError(problems, spec.name)

    def pending(self, spec, exp_id, job, db):
        run_id = job_id(exp_id, job)
        run = db.run(run_id)
        if run is not None and run["status"] == "finished":
            return None
        steps = db.steps(run_id) if run is not None else []
        done = [s for s in steps if s["step"] != INITIAL_STEP]
        return {"run": run, "done": done, "initial_done": any(s["step"] == INITIAL_STEP for s in steps),
                "folder": run["folder"] if run is not None else None,
                "state_format": run["state_format"] if run is not None else 2}

    # -- the job ---------------------------------------------------------------------------------
    def run_job(self, spec: LearnSpec, exp_id: str, job: Job, state: dict, outbox: Outbox) -> None:
        s = spec.strategy(job.info["label"])
        stream = self.stream(spec, job.seed)
        strategy = strategy_from_spec(s, spec.benchmark)
        self.train_run(spec, exp_id, job, state, outbox, s.display, s.name, strategy, stream, spec.training_for(s),
                       lambda: build_model(spec.model, stream, strategy))

    def train_run(self, spec, exp_id: str, job: Job, state: dict, outbox: Outbox, label: str, method: str,
                  strategy: Strategy, stream: Stream, training: TrainingConfig, make_model,
                  label_free: bool = False) -> None:
        """Train one run through the stream's steps (see the module docstring); `make_model()` builds
        the prepared model (under the run's initialisation seed); `label_free` withholds the labels
        from the strategy."""
        seed, run_id = job.seed, job_id(exp_id, job)
        strategy.check_stream(stream)
        strategy.check_training(training)
        schedule = strategy.schedule(stream)
        device = pick_device(training.device)
        seed_everything(seed if getattr(spec, "init_seed", "derived") == "plain" else derive_seed(seed, "init"))
        model = make_model().to(device)
        optimizer = build_optimizer(strategy.parameters(model), training)
        ctx = TrainContext(model, optimizer, stream, training, device, seed)
        strategy.setup(ctx)
        if state["run"] is None:
            digest = stream.digest()
            test = outbox.save_shared_arrays(f"streams/{digest}/test.npz", **_test_labels(stream))
            outbox.emit("stream", digest=digest, description=stream.describe(), test_path=test,
                        train_data=[(pos, e.task_id, e.split, e.indices.tolist()) for pos, e in enumerate(stream.train)])
            outbox.emit("run_start", run_id=run_id, experiment_id=exp_id, label=label, strategy=method,
                        settings=strategy.settings(), training=training.model_dump(), seed=seed, stream_digest=digest,
                        schedule=schedule, folder=outbox.folder)
        done = {d["step"]: d for d in state["done"]}
        models = [d["model_path"] for d in state["done"] if d["model_path"]]
        states = [d["state_path"] for d in state["done"] if d["state_path"]]
        if done:
            resumed = self._restore(outbox, run_id, done, model, optimizer, strategy, state["state_format"])
            done = {k: d for k, d in done.items() if k <= resumed}   # steps after a fall-back are redone
            models = [m for m in models if m == done[resumed]["model_path"] or int(_step_of(m)) < resumed]
            states = [x for x in states if int(_step_of(x)) <= resumed]
        elif not state["initial_done"]:
            self._store_step(outbox, run_id, INITIAL_STEP, [], _evaluate(model, stream, training, device, True), {},
                             None, None)
        outbox.event("start", label=f"{label} seed {seed}", total=len(schedule), completed=len(done))
        outbox.emit("run_status", run_id=run_id, status="running")
        try:
            for k, exp_ids in enumerate(schedule):
                if k in done:
                    continue
                ctx.step = k
                if training.reset_optimizer:
                    optimizer.state.clear()
                stats = train_step(ctx, strategy, merge([stream.train[i] for i in exp_ids]), label_free=label_free)
                if not stats.finite:
                    raise Diverged(run_id, k, training)
                model_path = outbox.save_state(f"model_step{k}.safetensors", model_checkpoint(model))
                state_path = outbox.save_state(f"state_step{k}.safetensors", {
                    "step": k, "optimizer": optimizer.state_dict(), "strategy": strategy.state_dict(),
                    "torch_rng": torch.get_rng_state()})
                tasks = sorted({stream.train[i].task_id for i in exp_ids})
                ev = _evaluate(strategy.eval_model(model), stream, training, device, False)
                # while the run goes on, the previous step's model and state stay as a fall-back
                pruned_models = models[:-1] if spec.checkpoints.models != "all" else []
                pruned_states = states[:-1]
                self._store_step(outbox, run_id, k, tasks, ev, {"train_seconds": stats.seconds,
                                 "mean_loss": stats.mean_loss, "n_examples": stats.n_examples},
                                 model_path, state_path, pruned_models, pruned_states)
                outbox.remove(*pruned_models, *pruned_states)
                models = [m for m in models if m not in pruned_models] + [model_path]
                states = [x for x in states if x not in pruned_states] + [state_path]
                outbox.event("step", run_id=run_id, step=k)
        except KeyboardInterrupt:
            outbox.emit("run_status", run_id=run_id, status="interrupted")
            raise
        except Diverged as err:
            outbox.emit("run_status", run_id=run_id, status="diverged", error=str(err))
            outbox.remove(*states)   # nothing to resume from: the run must change its settings
            raise
        except BaseException:
            outbox.emit("run_status", run_id=run_id, status="failed", error=traceback.format_exc(limit=5))
            raise
        keep = spec.checkpoints.keeps_models(seed, spec.seeds)
        dropped = (models if not keep else models[:-1] if spec.checkpoints.models == "last" else [])
        outbox.emit("run_finish", run_id=run_id, metrics={}, dropped_models=tuple(dropped))
        outbox.remove(*states, *dropped)

    @staticmethod
    def _restore(outbox, run_id, done, model, optimizer, strategy, state_format) -> int:
        """Load the newest step whose model and resume state are both intact (the last, or the one
        before it, kept as a fall-back); return its step. Damaged or missing files are skipped; when
        none is intact the error names them and how to start the run again."""
        failures = []
        for k in sorted(done, reverse=True):
            d = done[k]
            if not d["model_path"] or not d["state_path"]:
                continue
            try:
                saved = load_state(outbox.root / d["model_path"])
                resume = load_state(outbox.root / d["state_path"])
                load_model_checkpoint(model, saved, d["model_path"])
            except Exception as err:  # noqa: BLE001  (any unreadable file: try the fall-back)
                failures.append(f"{d['model_path']} / {d['state_path']}: {type(err).__name__}: {err}"[:300])
                continue
            optimizer.load_state_dict(resume["optimizer"])
            strategy_state = resume["strategy"]
            if state_format < 2:
                strategy_state = type(strategy).upgrade_state(strategy_state, state_format)
            strategy.load_state_dict(strategy_state)
            # draws a strategy makes from the global generator continue as if never interrupted
            torch.set_rng_state(resume["torch_rng"])
            if failures:
                import warnings
                warnings.warn(f"run {run_id}: resumed from step {k} because a later checkpoint is damaged "
                              f"({failures[0]}); the steps after {k} are trained again", RuntimeWarning, stacklevel=2)
            return k
        raise PalimpsestError(f"run {run_id} cannot resume: no intact checkpoint of its finished steps",
                              expected="the model and resume state of its last (or previous) step",
                              got="; ".join(failures) or "no checkpoint recorded",
                              fix=f"start that run again: `palimpsest doctor --root {outbox.root} --reset-run "
                                  f"{run_id}`, then `palimpsest run SPEC --resume`")

    @staticmethod
    def _store_step(outbox, run_id, step, tasks, ev, stats, model_path, state_path, pruned_models=(),
                    pruned_states=()) -> None:
        predictions = outbox.save_arrays(f"predictions_step{step}.npz", **{
            "class": ev.class_pred.astype(np.int32), "task": ev.task_pred.astype(np.int32)})
        outbox.emit("step", run_id=run_id, step=step, tasks=tasks, stats=dict(stats, eval_seconds=ev.seconds),
                    accuracy={"class": ev.accuracy("class").tolist(), "task": ev.accuracy("task").tolist()},
                    predictions_path=predictions, model_path=model_path, state_path=state_path,
                    pruned_models=tuple(pruned_models), pruned_states=tuple(pruned_states))

    # -- runner side, after jobs ------------------------------------------------------------------
    def job_done(self, spec, exp_id, job, db: ResultsDB, emit) -> None:
        run_id = job_id(exp_id, job)
        emit({"type": "metrics", "run_id": run_id, "metrics": compute_metrics(db.record(run_id))})

    def finish(self, spec, exp_id, db: ResultsDB, emit) -> None:
        compute_experiment_metrics(db, exp_id, emit)

    def summarize(self, db, exp_id):
        from ..summary import summarize_runs
        return summarize_runs(db, exp_id)

    def base_weights(self, exp: dict, run: dict, db: ResultsDB) -> dict | None:
        """Weights a run's model starts from before its strategy prepares it, beyond the spec's
        `model.weights` (none for learning runs)."""
        return None


def _step_of(path: str) -> str:
    """The step number in a checkpoint file name (model_step<k>.safetensors)."""
    return path.rsplit("_step", 1)[1].split(".")[0]


def _test_labels(stream: Stream) -> dict[str, np.ndarray]:
    targets = np.concatenate([e.targets.numpy() for e in stream.test]).astype(np.int32)
    test_task = np.concatenate([np.full(len(e), e.task_id) for e in stream.test]).astype(np.int32)
    return {"targets": targets, "test_task": test_task}


def compute_experiment_metrics(db: ResultsDB, exp_id: str, emit) -> None:
    """(Re)compute every finished run's metrics from stored results; forward transfer uses the
    from_scratch run of the same seed when the experiment has one."""
    runs = [r for r in db.runs(exp_id) if r["status"] == "finished"]
    references = {}
    for r in runs:
        if r["strategy"] == "from_scratch":
            rec = db.record(r["id"])
            references[r["seed"]] = {v: np.diag(rec.acc[v]) for v in rec.acc if rec.acc[v].shape[0] == rec.acc[v].shape[1]}
    for r in runs:
        rec = db.record(r["id"])
        rec.reference = references.get(r["seed"])
        emit({"type": "metrics", "run_id": r["id"], "metrics": compute_metrics(rec)})


def rebuild_model(run: dict, spec_yaml: str, path, base: dict | None = None) -> nn.Module:
    """The model a stored run saved at `path`, rebuilt from the run's spec and strategy (which may
    have wrapped it, e.g. with LoRA adapters) and loaded, in eval mode. `base` are weights loaded
    before the strategy prepares the model (an adaptation run's source model). Reads no database."""
    import yaml

    from ..spec import parse_spec
    spec = parse_spec(yaml.safe_load(spec_yaml), "stored spec")
    stream_info = json.loads(run["stream_json"])
    m = spec.model
    model = create_model(m.name, tuple(stream_info["input_shape"]), stream_info["n_classes"], head=m.head,
                         task_classes=[tuple(c) for c in stream_info["task_classes"]], mask_unseen=m.mask_unseen,
                         **m.settings)
    if m.weights:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(m.weights), strict=False)
    if base is not None:
        model.load_state_dict(base)
    if m.freeze:
        freeze(model, m.freeze)
    model = strategy_from_run(run).prepare(model)
    load_model_checkpoint(model, load_state(path), path)
    return model.eval()


def load_model(root, run_id: str, step: int | None = None):
    """The model of `run_id` after training step `step` (default: the last), with the spec and
    the stream description that trained it (class order, tasks, train indices per experience).
    An id that is not a run's but a model another kind stored (an unlearning ledger entry, a
    lifecycle event) loads that model instead (`ExperimentKind.load_stored`)."""
    import yaml

    from ..spec import parse_spec
    with ResultsDB(root, create=False) as db:
        run = db.run(run_id)
        stored = db.model_entry(run_id) or db.ledger_entry(run_id) if run is None else None
        if stored is not None:   # a model another kind stored by id (e.g. an unlearning ledger entry)
            from ...core.registry import KINDS
            return KINDS.get(db.experiment(stored["experiment_id"])["kind"]).obj().load_stored(db, run_id)
        if run is None:
            db.record(run_id)  # raises the clear not-found error
        steps = [s for s in db.steps(run_id) if s["step"] != INITIAL_STEP]
        if not steps:
            raise PalimpsestError(f"run {run_id} has no finished step yet", expected="a run with stored steps",
                                  got=run["status"], fix="wait for the run, or resume it with `palimpsest run SPEC --resume`")
        chosen = steps[-1] if step is None else next((s for s in steps if s["step"] == step), None)
        if chosen is None:
            raise PalimpsestError(f"run {run_id} has no step {step}", expected=f"a step in 0..{steps[-1]['step']}",
                                  got=step)
        path = db.file(chosen["model_path"])
        if path is None or not path.is_file():
            kept = [s["step"] for s in steps if s["model_path"] and db.file(s["model_path"]).is_file()]
            raise PalimpsestError(f"run {run_id} kept no model for step {chosen['step']}",
                                  expected=f"a step whose model was kept: {kept or 'none'}",
                                  got=chosen["step"], fix="the spec's checkpoint policy decides what is kept; use "
                                  "`checkpoints: {models: all}` to keep every step's model")
        exp = db.experiment(run["experiment_id"])
        from ...core.registry import KINDS
        kind = KINDS.get(exp["kind"]).obj()
        model = rebuild_model(run, exp["spec_yaml"], path, kind.base_weights(exp, run, db))
        return model, {"spec": parse_spec(yaml.safe_load(exp["spec_yaml"]), "stored spec"), "run": run,
                       "stream": json.loads(run["stream_json"]), "step": chosen["step"],
                       "train_data": db.train_indices(run_id)}


ExperimentSpec = LearnSpec  # the name of palimpsest 0.1.0

__all__ = ["BenchmarkSpec", "Diverged", "ExperimentSpec", "LearnKind", "LearnSpec", "RecurrenceSpec", "build_model",
           "build_stream", "compute_experiment_metrics", "load_model", "load_model_checkpoint", "make_strategy",
           "model_checkpoint", "rebuild_model", "strategy_from_run", "strategy_from_spec"]
