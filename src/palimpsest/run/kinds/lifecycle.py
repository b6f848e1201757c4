"""kind: lifecycle. One model's life under a continual-learning strategy: learning steps and forget
requests interleaved (learn, forget, learn more, forget again), every audit re-run after each
event, against the model the same strategy would have trained on the same stream without the data
forgotten so far.

    events:
      - {learn: 2}                                  # the next 2 steps of the strategy's schedule
      - {forget: {kind: classes, classes: [0]}}     # a forget request on what was learned so far
      - {learn: 3}
      - {forget: {kind: random, fraction: 0.05}}

Jobs, per seed (ids `seed<k>/...`):

    retrain     the reference lineage: after each event, the strategy's model trained from scratch
                (its own seed) on the stream's steps learned so far, every example forgotten so far
                removed from every experience; audited, its outputs kept. A learn event with
                nothing newly forgotten continues the lineage (bit-identical to starting over:
                the same seeds draw the same batches)
    original    the lineage that ignores forget requests (doing nothing), audited at every event
    <label>     one lineage per unlearning method: the strategy learns, the method serves each
                forget request on the live model

Every lineage writes one ledger entry per event (`seed<k>/<label>/event<j>`), audited against the
reference at that event: forget accuracy on everything forgotten so far and on each request
(`forget_accuracy_request<i>`: does earlier forgetting hold up?), retain and test accuracy (the
classes learned so far), the population attack, relearning and the probe when asked for, and the
verdict (evaluate/unlearning.py). The per-example attack needs reference models per event and is
not run here.

What a forget request does to a lineage: it is resolved against the live data learned so far (what
was learned minus what was forgotten before); the method reads the forget / retain split of that
live data (its declared reads); afterwards every replay memory of the strategy drops the forgotten
examples (`Strategy.forget_examples`) and the optimizer's state is reset, so nothing forgotten is
replayed or pushed back by momentum; later learning never sees a forgotten example again. Other
strategy state computed from forgotten data (EWC's Fisher, LwF's teacher) is kept: it is what a
deployment would hold, and the audit says whether it shows.

`retrain_by_strategy` is also what an unlearning request on a stored learning run (`kind: unlearn`
with `source:`) is audited against.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from ...core.config import Settings
from ...core.errors import PalimpsestError
from ...core.registry import KINDS, UNLEARNERS
from ...core.seeding import derive_seed, pick_device, seed_everything
from ...core.timing import Stopwatch
from ...data.scenarios import Stream, merge
from ...evaluate.audits import accuracy
from ...evaluate.unlearning import audit_from_outputs, collect_outputs
from ...forget.base import ArtifactCache, UnlearnContext, UnlearningData
from ...forget.request import ForgetRequest, ForgetSplit, resolve
from ...learn.strategy import Strategy, TrainContext
from ...learn.trainer import train_step
from ...train.config import TrainingConfig, build_optimizer
from ...train.snapshot import frozen_copy
from ..spec import EntriesSpec, ModelSpec, StrategySpec
from ..store.db import ResultsDB
from ..store.files import load_state
from ..store.writer import Outbox
from .base import ExperimentKind, Job
from .learn import BenchmarkSpec, build_model, build_stream, load_model_checkpoint, model_checkpoint, \
    strategy_from_spec
from .unlearn import REFERENCE, AuditSpec, MethodSpec, TrainingData

ORIGINAL = "original"


# -- the stream without forgotten examples -----------------------------------------------------


def offsets(stream: Stream) -> np.ndarray:
    """Global id of the first example of each training experience (ids run over the stream's
    training experiences in order: experience p, row r -> offsets[p] + r)."""
    return np.concatenate([[0], np.cumsum([len(e) for e in stream.train])]).astype(np.int64)


def learned_ids(stream: Stream, positions) -> np.ndarray:
    """Global ids of the examples of the experiences at `positions` (sorted), in that order."""
    start = offsets(stream)
    return np.concatenate([np.arange(start[p], start[p + 1]) for p in sorted(positions)] or [np.zeros(0, np.int64)])


def without(stream: Stream, forgotten: np.ndarray) -> Stream:
    """The stream with every forgotten example (global ids) removed from its training experiences."""
    if not len(forgotten):
        return stream
    start, gone = offsets(stream), np.asarray(forgotten, dtype=np.int64)
    train = []
    for p, exp in enumerate(stream.train):
        keep = np.flatnonzero(~np.isin(np.arange(start[p], start[p + 1]), gone))
        train.append(exp if len(keep) == len(exp) else exp.subset(keep))
    return replace(stream, train=tuple(train))


def rows_of(stream: Stream, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of the examples with these global ids."""
    start = offsets(stream)
    xs, ys = [], []
    for p in range(len(stream.train)):
        mine = ids[(ids >= start[p]) & (ids < start[p + 1])] - start[p]
        if len(mine):
            pos = torch.as_tensor(mine)
            xs.append(stream.train[p].inputs[pos])
            ys.append(stream.train[p].targets[pos])
    return torch.cat(xs), torch.cat(ys)


@dataclass
class Learner:
    """A model with its strategy, optimizer and context, trained step by step through a schedule."""

    model: torch.nn.Module
    strategy: Strategy
    ctx: TrainContext
    done: int = 0      # schedule steps trained

    def learn(self, schedule: list[list[int]], stream: Stream, until: int) -> float:
        """Train schedule steps done..until-1 on `stream`; returns the seconds spent."""
        seconds = 0.0
        self.ctx.stream = stream
        for k in range(self.done, until):
            self.ctx.step = k
            if self.ctx.training.reset_optimizer:
                self.ctx.optimizer.state.clear()
            parts = [stream.train[i] for i in schedule[k] if len(stream.train[i])]
            if parts:
                stats = train_step(self.ctx, self.strategy, merge(parts))
                if not stats.finite:
                    raise PalimpsestError(f"training diverged at step {k}", expected="a finite loss",
                                          got=f"lr {self.ctx.training.lr}", fix="lower training.lr")
                seconds += stats.seconds
        self.done = until
        return seconds


def start_learner(model_spec: ModelSpec, stream: Stream, strategy: Strategy, training: TrainingConfig, seed: int,
                  init_seed: int, device) -> Learner:
    """A fresh model (initialised under `init_seed`), prepared by the strategy, with its optimizer
    and the strategy set up for a run of seed `seed`."""
    strategy.check_stream(stream)
    strategy.check_training(training)
    with torch.random.fork_rng(devices=[]):
        seed_everything(init_seed)
        model = build_model(model_spec, stream, strategy).to(device)
    optimizer = build_optimizer(strategy.parameters(model), training)
    ctx = TrainContext(model, optimizer, stream, training, device, seed)
    strategy.setup(ctx)
    return Learner(model, strategy, ctx)


def retrain_by_strategy(model_spec: ModelSpec, stream: Stream, strategy: Strategy, training: TrainingConfig,
                        schedule: list[list[int]], steps: int, forgotten: np.ndarray, seed: int,
                        device) -> tuple[Learner, Stopwatch]:
    """The counterfactual of a continual learner: `strategy` trained from scratch through the first
    `steps` steps of `schedule` on `stream` without the `forgotten` examples (global ids), with a
    seed of its own (another training run, as the offline retrained model is); returns the learner
    and the clock of its training (wall and CPU seconds)."""
    retrain_seed = derive_seed(seed, "retrain")
    learner = start_learner(model_spec, stream, strategy, training, retrain_seed, retrain_seed, device)
    with Stopwatch() as clock:
        learner.learn(schedule, without(stream, forgotten), steps)
    return learner, clock


# -- the spec ----------------------------------------------------------------------------------


class LifecycleEvent(Settings):
    """One event of a model's life: `learn: N` (the next N steps of the schedule) or `forget:` a
    request on what was learned so far."""

    learn: int | None = Field(None, ge=1, description="train the next N steps of the strategy's schedule")
    forget: ForgetRequest | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.learn is None) == (self.forget is None):
            raise ValueError("an event is either `learn: N` or `forget: {...}`, exactly one of them")
        return self

    def describe(self) -> str:
        return f"learn {self.learn} step(s)" if self.learn is not None else f"forget {self.forget.describe()}"


class LifecycleSpec(EntriesSpec):
    kind: Literal["lifecycle"] = "lifecycle"
    name: str = Field("lifecycle", pattern=r"^[A-Za-z0-9_.-]+$")
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec(name="naive"))
    events: list[LifecycleEvent] = Field(..., min_length=1)
    methods: list[MethodSpec] = Field(..., min_length=1)
    audits: AuditSpec = Field(default_factory=AuditSpec)
    entries_field = "methods"

    @model_validator(mode="after")
    def _checks(self):
        if self.audits.reference_mia.n_models:
            raise ValueError("audits.reference_mia: the per-example attack needs reference models per event and is "
                             "not run in a lifecycle; set n_models: 0 (the default)")
        if not any(e.learn for e in self.events[:1]):
            raise ValueError("events: the first event must be `learn: N` (there is nothing to forget before)")
        labels = [m.display for m in self.methods]
        for reserved in (ORIGINAL, REFERENCE):
            if reserved in labels:
                raise ValueError(f"methods: {reserved!r} is a lineage every lifecycle has; leave it out of methods")
        return self

    def method_entries(self) -> list[tuple[str, str, dict]]:
        return [(m.display, m.name, m.settings) for m in self.methods]

    @property
    def training_config(self) -> TrainingConfig:
        return TrainingConfig(**{**self.training.model_dump(), **self.strategy.training})


# -- the kind ----------------------------------------------------------------------------------


@dataclass
class State:
    """Where a lifecycle stands after an event: schedule steps learned, the global ids learned and
    forgotten, and each forget request's ids."""

    steps: int
    learned: np.ndarray
    forgotten: np.ndarray
    requests: list[np.ndarray]
    classes: tuple[int, ...]
    forget_classes: tuple[int, ...] = ()   # the classes forgotten so far, when every request was whole classes


@KINDS.register("lifecycle", summary="one model's life: learning steps and forget requests interleaved, every "
                "audit re-run after each event against the strategy retrained without the forgotten data")
class LifecycleKind(ExperimentKind):
    name = "lifecycle"
    Spec = LifecycleSpec
    metrics = ("unlearning_audit",)
    tables = ("lifecycle_summary",)
    figures = ("lifecycle_curves",)

    def __init__(self) -> None:
        self._streams: dict[tuple, Stream] = {}

    def problems(self, data: dict) -> list[str]:
        from .unlearn import UnlearnKind
        problems = UnlearnKind().problems({"methods": data.get("methods", []), "forget": []})
        for i, m in enumerate(data.get("methods") if isinstance(data.get("methods"), list) else []):
            name = m if isinstance(m, str) else m.get("name") if isinstance(m, dict) else None
            if name in UNLEARNERS and UNLEARNERS.get(name).obj.exact and name != REFERENCE:
                problems.append(f"methods.{i}.name: {name!r} replaces the model with another kind of model, which "
                                "the strategy cannot go on training; use it in an unlearning spec")
        return problems

    def describe(self, spec: LifecycleSpec) -> str:
        return (f"valid lifecycle spec ({len(spec.events)} events x {len(spec.methods) + 2} lineages x "
                f"{len(spec.seeds)} seeds, strategy {spec.strategy.display} on {spec.benchmark.dataset})")

    def jobs(self, spec: LifecycleSpec) -> list[Job]:
        out = []
        for seed in spec.seeds:
            ref = f"seed{seed}/{REFERENCE}"
            out.append(Job(ref, seed, {"label": REFERENCE}))
            out.append(Job(f"seed{seed}/{ORIGINAL}", seed, {"label": ORIGINAL, "method": None, "settings": {}},
                           (ref,)))
            for label, name, settings in spec.method_entries():
                out.append(Job(f"seed{seed}/{label}", seed, {"label": label, "method": name, "settings": settings},
                               (ref,)))
        return out

    def stream(self, spec: LifecycleSpec, seed: int) -> Stream:
        key = (spec.benchmark.model_dump_json(), seed)
        if key not in self._streams:
            self._streams = {key: build_stream(spec.benchmark, seed)}
        return self._streams[key]

    def strategy(self, spec: LifecycleSpec) -> Strategy:
        return strategy_from_spec(spec.strategy, spec.benchmark)

    def preflight(self, spec: LifecycleSpec, db: ResultsDB | None = None) -> None:
        """The stream builds, the events fit its schedule and every request resolves."""
        for seed in spec.seeds:
            self.states(spec, seed)

    # -- what every lineage shares: the states after each event ------------------------------
    def states(self, spec: LifecycleSpec, seed: int) -> list[State]:
        """Where the lifecycle stands after each event (pure: the same for every lineage)."""
        stream = self.stream(spec, seed)
        schedule = self.strategy(spec).schedule(stream)
        steps, forgotten, requests, out = 0, np.zeros(0, np.int64), [], []
        forget_classes: set[int] = set()
        class_requests_only = True
        for j, event in enumerate(spec.events):
            if event.learn is not None:
                if steps + event.learn > len(schedule):
                    raise PalimpsestError(f"events.{j}: learns past the end of the schedule",
                                          expected=f"at most {len(schedule)} steps in all",
                                          got=steps + event.learn, fix="learn fewer steps")
                steps += event.learn
            learned = learned_ids(stream, {p for s in schedule[:steps] for p in s})
            if event.forget is not None:
                live = learned[~np.isin(learned, forgotten)]
                targets = torch.cat([stream.train[p].targets for p in sorted({p for s in schedule[:steps] for p in s})])
                live_targets = targets.numpy()[~np.isin(learned, forgotten)]
                split = resolve(event.forget, live_targets, stream.n_classes, run_seed=derive_seed(seed, "event", j))
                requests.append(live[split.forget])
                forgotten = np.union1d(forgotten, live[split.forget])
                forget_classes.update(split.forget_classes)
                class_requests_only &= event.forget.kind == "classes"
            classes = tuple(sorted({c for s in schedule[:steps] for p in s for c in stream.train[p].classes}))
            out.append(State(steps, learned, forgotten.copy(), [r.copy() for r in requests], classes,
                             tuple(sorted(forget_classes)) if class_requests_only else ()))
        return out

    def audit_data(self, spec, stream: Stream, state: State) -> tuple[TrainingData, ForgetSplit | None]:
        """The data an audit after this state reads: every example learned (forgotten ones included)
        as the training set, the test examples of the classes learned so far, and the split."""
        x, y = rows_of(stream, state.learned)
        test_x = torch.cat([e.inputs for e in stream.test])
        test_y = torch.cat([e.targets for e in stream.test])
        seen = torch.as_tensor(np.isin(test_y.numpy(), state.classes))
        data = TrainingData(x, y, test_x[seen], test_y[seen], stream.n_classes, stream.input_shape)
        if not len(state.forgotten):
            return data, None
        position = {int(g): i for i, g in enumerate(state.learned)}
        forget = np.asarray([position[int(g)] for g in state.forgotten], dtype=np.int64)
        retain = np.setdiff1d(np.arange(len(state.learned)), forget)
        request = ForgetRequest(kind="indices", indices=forget.tolist())
        return data, ForgetSplit(forget, retain, request, state.forget_classes)

    def audit(self, spec, model, strategy, stream: Stream, state: State, reference: dict | None, seed: int):
        """Every audit of a lineage's model after an event, and its per-example outputs."""
        data, split = self.audit_data(spec, stream, state)
        model = strategy.eval_model(model).eval()
        if split is None:
            from ...evaluate.audits import model_outputs
            out = model_outputs(model, data.x_train, data.y_train)
            test = model_outputs(model, data.x_test, data.y_test)
            return {"retain_accuracy": accuracy(out["pred"], out["targets"]),
                    "test_accuracy": accuracy(test["pred"], test["targets"])}, None
        outputs = collect_outputs(model, data, split, spec.audits, seed)
        audit = audit_from_outputs(outputs, split, spec.audits, reference, None, seed)
        position = {int(g): i for i, g in enumerate(state.learned)}
        for i, ids in enumerate(state.requests):
            rows = np.asarray([position[int(g)] for g in ids])
            audit[f"forget_accuracy_request{i}"] = accuracy(outputs["train.pred"][rows], outputs["train.targets"][rows])
        return audit, outputs

    # -- runner side -------------------------------------------------------------------------
    def pending(self, spec, exp_id, job, db: ResultsDB):
        n = len(spec.events)
        entries = [db.ledger_entry(f"{exp_id}/{job.key}/event{j}") for j in range(n)]
        if all(e is not None and e["status"] == "finished" for e in entries):
            return None
        state: dict[str, Any] = {}
        if job.info["label"] != REFERENCE:
            from .unlearn import _folder
            done = db.root / _folder(f"{exp_id}/seed{job.seed}/{REFERENCE}") / "reference.json"
            state["reference"] = json.loads(done.read_text()) if done.is_file() else None
        return state

    def run_job(self, spec, exp_id, job, state, outbox: Outbox) -> None:
        if job.info["label"] == REFERENCE:
            self._reference(spec, exp_id, job, outbox)
        else:
            self._lineage(spec, exp_id, job, state, outbox)

    def _open(self, outbox, spec, exp_id, job, j, state: State, method: str, label: str, settings: dict) -> str:
        entry_id = f"{exp_id}/{job.key}/event{j}"
        event = spec.events[j]
        key = ForgetSplit(state.forgotten, np.zeros(0, np.int64), ForgetRequest(kind="indices")).key() \
            if len(state.forgotten) else ""
        outbox.emit("ledger_open", entry_id=entry_id, experiment_id=exp_id, source=f"lifecycle event {j}",
                    seed=job.seed, request=event.model_dump(mode="json"), forget_key=key, method=method,
                    label=label, settings=settings)
        return entry_id

    def _keep(self, spec, seed: int, j: int) -> bool:
        """The checkpoint policy: every event's model (`all`), the last event's (`last`) or none."""
        if not spec.checkpoints.keeps_models(seed, spec.seeds):
            return False
        return spec.checkpoints.models == "all" or j == len(spec.events) - 1

    def _store(self, outbox, spec, exp_id, job, j, entry_id, model, label, method) -> None:
        if self._keep(spec, job.seed, j):
            path = outbox.save_state(f"model_event{j}.safetensors", model_checkpoint(model))
            outbox.emit("model", model_id=entry_id, experiment_id=exp_id, seed=job.seed, role="entry", path=path,
                        seconds=0.0, info={"label": label, "method": method, "event": j})

    def _reference(self, spec: LifecycleSpec, exp_id, job, outbox) -> None:
        """The reference lineage: the strategy retrained without what was forgotten so far."""
        seed = job.seed
        stream, states = self.stream(spec, seed), self.states(spec, seed)
        schedule = self.strategy(spec).schedule(stream)
        device = pick_device(spec.training_config.device)
        learner, cost, done = None, 0.0, []
        for j, st in enumerate(states):
            entry_id = self._open(outbox, spec, exp_id, job, j, st, REFERENCE, REFERENCE, {})
            try:
                fresh = learner is None or len(st.forgotten) != len(states[j - 1].forgotten)
                if fresh:   # something new was forgotten: train again from scratch without it
                    learner, clock = retrain_by_strategy(spec.model, stream, self.strategy(spec),
                                                         spec.training_config, schedule, st.steps, st.forgotten,
                                                         seed, device)
                    cost = clock.wall
                else:       # nothing new forgotten: go on learning (what starting over would give)
                    cost += learner.learn(schedule, without(stream, st.forgotten), st.steps)
                audit, outputs = self.audit(spec, learner.model, learner.strategy, stream, st, None, seed)
                outputs_path = outbox.save_arrays(f"outputs_event{j}.npz", **outputs) \
                    if outputs is not None and spec.audits.keep_outputs else None
                audit = dict(audit, seconds=cost, cpu_seconds=None, retrain_seconds=cost)
                done.append({"audit": audit, "seconds": cost})
                self._store(outbox, spec, exp_id, job, j, entry_id, learner.model, REFERENCE, REFERENCE)
                outbox.emit("ledger_close", entry_id=entry_id, status="finished", seconds=cost, audit=audit,
                            report={"retrained_from_scratch": fresh}, outputs_path=outputs_path)
            except BaseException as err:
                _close_failed(outbox, entry_id, err)
                raise
        outbox.path("reference.json").write_text(json.dumps(done))

    def _lineage(self, spec: LifecycleSpec, exp_id, job, state, outbox) -> None:
        """One lineage: the strategy learns; the method (none for `original`) serves each request."""
        seed, label, name = job.seed, job.info["label"], job.info["method"]
        stream, states = self.stream(spec, seed), self.states(spec, seed)
        strategy = self.strategy(spec)
        schedule = strategy.schedule(stream)
        training = spec.training_config
        device = pick_device(training.device)
        learner = start_learner(spec.model, stream, strategy, training, seed, derive_seed(seed, "init"), device)
        reference = state["reference"]
        previous = np.zeros(0, np.int64)
        for j, (event, st) in enumerate(zip(spec.events, states)):
            entry_id = self._open(outbox, spec, exp_id, job, j, st, name or ORIGINAL, label, job.info["settings"])
            try:
                report: dict = {}
                seconds = cpu = 0.0
                if event.learn is not None:
                    learner.learn(schedule, without(stream, previous if name else np.zeros(0, np.int64)), st.steps)
                elif name is not None:
                    report, seconds, cpu = self._forget(spec, learner, stream, st, previous, name,
                                                        job.info["settings"], seed, j, device)
                    previous = st.forgotten
                audit, outputs = self.audit(spec, learner.model, learner.strategy, stream, st, reference[j]["audit"],
                                            seed)
                ref_seconds = reference[j]["seconds"]
                audit = dict(audit, seconds=seconds, cpu_seconds=cpu, retrain_seconds=ref_seconds,
                             speedup_vs_retrain=ref_seconds / seconds if seconds else None)
                outputs_path = outbox.save_arrays(f"outputs_event{j}.npz", **outputs) \
                    if outputs is not None and spec.audits.keep_outputs else None
                self._store(outbox, spec, exp_id, job, j, entry_id, learner.model, label, name or ORIGINAL)
                diverged = report.get("finite") is False
                outbox.emit("ledger_close", entry_id=entry_id, status="diverged" if diverged else "finished",
                            seconds=seconds, audit=audit, report=report, outputs_path=outputs_path,
                            error=f"{label} diverged while unlearning" if diverged else None)
            except BaseException as err:
                _close_failed(outbox, entry_id, err)
                raise

    def _forget(self, spec, learner: Learner, stream: Stream, st: State, previous: np.ndarray, name: str,
                settings: dict, seed: int, j: int, device) -> tuple[dict, float, float]:
        """Serve the newest request on the live model: the method reads the live data's split; then
        replay memories drop the forgotten examples and the optimizer's state is reset."""
        live = st.learned[~np.isin(st.learned, previous)]
        new = st.requests[-1]
        x, y = rows_of(stream, live)
        forget = np.flatnonzero(np.isin(live, new))
        split = ForgetSplit(forget, np.setdiff1d(np.arange(len(live)), forget), spec.events[j].forget,
                            tuple(sorted(spec.events[j].forget.classes)) if spec.events[j].forget.kind == "classes"
                            else ())
        method = UNLEARNERS.create(name, **settings)
        guarded = UnlearningData(x, y, split, method.declared(), stream.n_classes)

        def make_model():
            fresh = build_model(spec.model, stream, self.strategy(spec)).to(device)
            fresh.observe_classes(st.classes)
            return fresh

        ctx = UnlearnContext(learner.ctx.training, make_model, device, derive_seed(seed, "event", j),
                             cache=ArtifactCache({}, method.declared()), original=frozen_copy(learner.model))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "unlearn", name, j))
            with Stopwatch() as clock:
                model, report = method.unlearn(learner.model, guarded, ctx)
        if model is not learner.model:
            try:
                learner.model.load_state_dict(model.state_dict())
            except (RuntimeError, KeyError) as err:
                raise PalimpsestError(f"unlearner {name!r} returned a model of another kind", expected="the live "
                                      "model (or one of its architecture), which the strategy goes on training",
                                      got=type(model).__name__, fix="use this method in an unlearning spec") from err
        removed = learner.strategy.forget_examples(x[torch.as_tensor(forget)])
        learner.ctx.optimizer.state.clear()
        return dict(report, replay_examples_dropped=removed), clock.wall, clock.cpu

    def summarize(self, db, exp_id):
        return summarize_lifecycle(db, exp_id)

    def load_stored(self, db: ResultsDB, model_id: str):
        """A lineage's model after an event (as the checkpoint policy kept it), rebuilt."""
        import yaml

        from ..spec import parse_spec
        entry = db.model_entry(model_id)
        if entry is None:
            raise PalimpsestError(f"lifecycle entry {model_id} kept no model", expected="an event whose model was "
                                  "kept", got=model_id, fix="`checkpoints: {models: all}` keeps every event's model")
        spec = parse_spec(yaml.safe_load(db.experiment(entry["experiment_id"])["spec_yaml"]), "stored spec")
        stream = self.stream(spec, entry["seed"])
        with torch.random.fork_rng(devices=[]):
            model = build_model(spec.model, stream, self.strategy(spec))
        load_model_checkpoint(model, load_state(db.file(entry["path"])), entry["path"])
        return model.eval(), {"spec": spec, "entry": db.ledger_entry(model_id), "seed": entry["seed"]}


def _close_failed(outbox: Outbox, entry_id: str, err: BaseException) -> None:
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    outbox.emit("ledger_close", entry_id=entry_id, status=status, error=traceback.format_exc(limit=5))


def summarize_lifecycle(db: ResultsDB, exp_id: str | None) -> list[dict]:
    """One row per (event, lineage) over seeds, in event order: "stats" aggregates every numeric
    audit key (mean, sample std, ci95)."""
    from ..summary import ledger_rows
    exp_id = db.experiment(exp_id)["id"]
    rows = ledger_rows(exp_id, db.ledger(exp_id), lambda e: int(e["id"].rsplit("/event", 1)[1]),
                       lambda request: LifecycleEvent(**request).describe())
    for row in rows:
        row["event"] = row["request_index"]
    return sorted(rows, key=lambda r: r["event"])


def run_lifecycle(spec: LifecycleSpec, root="palimpsest-results", resume: bool = False, progress: bool = False) -> str:
    """Run a lifecycle spec; return the experiment id."""
    from ..runner import Runner
    runner = Runner(spec, root, progress=progress)
    try:
        return runner.run(resume)
    finally:
        runner.close()


__all__ = ["Learner", "LifecycleEvent", "LifecycleKind", "LifecycleSpec", "learned_ids", "offsets",
           "retrain_by_strategy", "rows_of", "run_lifecycle", "start_learner", "summarize_lifecycle", "without"]
