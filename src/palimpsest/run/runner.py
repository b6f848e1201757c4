"""The runner: strategies x seeds, every finished step stored, killed runs resumable."""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..core.registry import STRATEGIES
from ..core.seeding import configure_torch, derive_seed, pick_device, seed_everything
from ..data import datasets as _datasets
from ..data.scenarios import Stream, class_incremental, domain_incremental, online, recurring
from ..evaluate.evaluator import evaluate_stream
from ..evaluate.metrics import compute_metrics
from ..learn import make_optimizer, merge, train_step
from ..learn.defaults import defaults_for
from ..learn.strategy import Strategy, TrainContext
from ..models import create_model
from .checkpoint import load_state, save_state
from .db import INITIAL_STEP, ResultsDB
from .spec import BenchmarkSpec, ExperimentSpec, StrategySpec

StepCallback = Callable[[str, int], None]


def build_stream(b: BenchmarkSpec, seed: int) -> Stream:
    """The stream a benchmark spec describes, for one seed (class order and permutations may
    depend on it)."""
    kwargs = {"root": b.root} if b.root else {}
    data = _datasets.load_dataset(b.dataset, **kwargs)
    if b.train_subset or b.test_subset:
        data = data.subsample(b.train_subset, b.test_subset, seed=0)
    if b.scenario == "domain":
        stream = domain_incremental(data, b.n_experiences, transform=b.transform, seed=seed,
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


def run_id_for(exp_id: str, label: str, seed: int) -> str:
    return f"{exp_id}/{label}/seed{seed}"


class Runner:
    def __init__(self, spec: ExperimentSpec, root: str | Path = "palimpsest-results",
                 on_step: StepCallback | None = None, progress: bool = True) -> None:
        self.spec, self.db, self.on_step, self.show_progress = spec, ResultsDB(root), on_step, progress
        self._streams: dict[int, Stream] = {}

    def stream(self, seed: int) -> Stream:
        if seed not in self._streams:
            self._streams = {seed: build_stream(self.spec.benchmark, seed)}  # keep one in memory
        return self._streams[seed]

    def start(self, resume: bool | str = False) -> str:
        spec = self.spec
        if isinstance(resume, str):
            return self.db.experiment(resume)["id"]
        if resume:
            found = self.db.latest_unfinished(spec.digest())
            if found:
                return found
        return self.db.new_experiment(spec.name, spec.to_yaml(), spec.digest(), __version__)

    def run(self, resume: bool | str = False) -> str:
        configure_torch()
        exp_id = self.start(resume)
        jobs = [(s, seed) for seed in self.spec.seeds for s in self.spec.strategies]
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not self.show_progress, transient=False) as progress:
            overall = progress.add_task(f"{exp_id}", total=len(jobs))
            try:
                for strategy_spec, seed in jobs:
                    self.run_one(exp_id, strategy_spec, seed, progress)
                    progress.advance(overall)
            except BaseException:
                self.db.set_experiment_status(exp_id, "failed")
                raise
        self.finish(exp_id)
        return exp_id

    def finish(self, exp_id: str) -> None:
        compute_experiment_metrics(self.db, exp_id)
        self.db.set_experiment_status(exp_id, "finished")

    def run_one(self, exp_id: str, s: StrategySpec, seed: int, progress=None) -> str:
        run_id = run_id_for(exp_id, s.display, seed)
        existing = self.db.run(run_id)
        if existing and existing["status"] == "finished":
            return run_id
        training = self.spec.training_for(s)
        stream = self.stream(seed)
        b = self.spec.benchmark
        strategy: Strategy = STRATEGIES.create(s.name, **{**defaults_for(s.name, b.dataset, b.scenario), **s.settings})
        strategy.check_stream(stream)
        schedule = strategy.schedule(stream)
        device = pick_device(training.device)
        seed_everything(derive_seed(seed, "init"))
        m = self.spec.model
        model = create_model(m.name, stream=stream, head=m.head, **m.settings).to(device)
        optimizer = make_optimizer(model.parameters(), training)
        ctx = TrainContext(model, optimizer, stream, training, device, seed)
        strategy.setup(ctx)
        ckpt_dir = self.db.checkpoint_dir(run_id)
        if existing is None:
            train_data = [(pos, e.task_id, e.split, e.indices) for pos, e in enumerate(stream.train)]
            self.db.create_run(run_id, exp_id, s.display, s.name, strategy.settings(), training.model_dump(), seed,
                               stream.describe(), schedule, train_data)
        done = [k for k in self.db.finished_steps(run_id) if k != INITIAL_STEP]
        if done:
            # The database is the source of truth: a state file written for a step whose rows never
            # committed (a kill between the two writes) is ignored and overwritten.
            state = load_state(ckpt_dir / f"state_step{done[-1]}.safetensors")
            model.load_state_dict(load_state(ckpt_dir / f"model_step{done[-1]}.safetensors")["model"])
            optimizer.load_state_dict(state["optimizer"])
            strategy.load_state_dict(state["strategy"])
            # draws a strategy makes from the global generator continue as if never interrupted
            torch.set_rng_state(state["torch_rng"])
        else:
            self._evaluate_and_store(run_id, INITIAL_STEP, [], model, stream, training, device, {}, None,
                                     store_test_set=True)
        task = progress.add_task(f"{s.display} seed {seed}", total=len(schedule), completed=len(done)) if progress else None
        self.db.set_run_status(run_id, "running")
        try:
            for k, exp_ids in enumerate(schedule):
                if k in done:
                    continue
                ctx.step = k
                if training.reset_optimizer:
                    optimizer.state.clear()
                exp = merge([stream.train[i] for i in exp_ids])
                stats = train_step(ctx, strategy, exp)
                path = ckpt_dir / f"model_step{k}.safetensors"
                save_state(path, {"model": model.state_dict()})
                save_state(ckpt_dir / f"state_step{k}.safetensors", {"step": k, "optimizer": optimizer.state_dict(),
                                                                    "strategy": strategy.state_dict(),
                                                                    "torch_rng": torch.get_rng_state()})
                tasks = sorted({stream.train[i].task_id for i in exp_ids})
                self._evaluate_and_store(run_id, k, tasks, strategy.eval_model(model), stream, training, device,
                                         {"train_seconds": stats.seconds, "mean_loss": stats.mean_loss,
                                          "n_examples": stats.n_examples}, str(path))
                _remove_older_states(ckpt_dir, keep=k)
                if progress:
                    progress.advance(task)
                if self.on_step:
                    self.on_step(run_id, k)
        except KeyboardInterrupt:
            self.db.set_run_status(run_id, "interrupted")
            raise
        except BaseException:
            self.db.set_run_status(run_id, "failed", traceback.format_exc(limit=5))
            raise
        self.db.save_metrics(run_id, compute_metrics(self.db.record(run_id)))
        self.db.set_run_status(run_id, "finished")
        return run_id

    def _evaluate_and_store(self, run_id, step, tasks, model, stream, training, device, stats, checkpoint,
                            store_test_set=False):
        if step == INITIAL_STEP:
            # The untrained reference is a random classifier over every class (GEM's b_j), not a
            # model that may predict nothing yet.
            active = model.active.clone()
            model.active.fill_(True)
            ev = evaluate_stream(model, stream, training.eval_batch_size, device)
            model.active.copy_(active)
        else:
            ev = evaluate_stream(model, stream, training.eval_batch_size, device)
        stats = dict(stats, eval_seconds=ev.seconds)
        self.db.record_step(run_id, step, tasks, stats, {"class": ev.accuracy("class"), "task": ev.accuracy("task")},
                            {"class": ev.class_pred, "task": ev.task_pred}, checkpoint,
                            (ev.targets, ev.test_task) if store_test_set else None)


def _remove_older_states(ckpt_dir: Path, keep: int) -> None:
    """Optimizer and strategy state is only needed to resume from the last stored step."""
    for path in ckpt_dir.glob("state_step*.safetensors*"):
        step = path.name.removeprefix("state_step").split(".")[0]
        if step.isdigit() and int(step) < keep:
            path.unlink(missing_ok=True)


def compute_experiment_metrics(db: ResultsDB, exp_id: str) -> None:
    """(Re)compute every run's metrics from stored results; forward transfer uses the
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
        db.save_metrics(r["id"], compute_metrics(rec))


def run_experiment(spec: ExperimentSpec, root: str | Path = "palimpsest-results", resume: bool | str = False,
                   progress: bool = True, on_step: StepCallback | None = None) -> str:
    """Run every strategy x seed of `spec`, store everything under `root`, return the experiment id."""
    runner = Runner(spec, root, on_step=on_step, progress=progress)
    try:
        return runner.run(resume)
    finally:
        runner.db.close()


def load_model(root: str | Path, run_id: str, step: int | None = None):
    """The model of `run_id` after training step `step` (default: the last), with the spec and
    the stream description that trained it (class order, tasks, train indices per experience)."""
    import json

    import yaml
    from .spec import parse_spec
    db = ResultsDB(root)
    try:
        run = db.run(run_id)
        if run is None:
            db.record(run_id)  # raises the clear not-found error
        steps = [s for s in db.steps(run_id) if s["step"] != INITIAL_STEP]
        if not steps:
            raise RuntimeError(f"run {run_id} has no finished step yet")
        chosen = steps[-1] if step is None else next((s for s in steps if s["step"] == step), None)
        if chosen is None:
            from ..core.errors import PalimpsestError
            raise PalimpsestError(f"run {run_id} has no step {step}", expected=f"a step in 0..{steps[-1]['step']}",
                                  got=step)
        exp = db.experiment(run["experiment_id"])
        spec = parse_spec(yaml.safe_load(exp["spec_yaml"]), "stored spec")
        stream_info = json.loads(run["stream_json"])
        m = spec.model
        model = create_model(m.name, tuple(stream_info["input_shape"]), stream_info["n_classes"], head=m.head,
                             task_classes=[tuple(c) for c in stream_info["task_classes"]], **m.settings)
        model.load_state_dict(load_state(chosen["checkpoint"])["model"])
        model.eval()
        return model, {"spec": spec, "run": run, "stream": stream_info, "step": chosen["step"],
                       "train_data": db.train_indices(run_id)}
    finally:
        db.close()
