"""kind: memory. Recall benchmarks for sequence models whose token mixer is attention or a test-time
memory (palimpsest.memory): a recall task generated on the fly (data/recall.py), a small model
(models/sequence.py RecallLM), mixers x learning rates x seeds.

    kind: memory
    name: memory_mqar
    task: {name: mqar, settings: {vocab_size: 256, seq_len: 64, n_pairs: 4}}
    model: {dim: 64, blocks: 2}
    mixers: [attention, deltanet, {name: titans, settings: {chunk_size: 16}}]
    training: {steps: 1000, batch_size: 32, lrs: [0.001, 0.003]}
    evaluation: {every: 250, examples: 500}
    seeds: [0, 1, 2]

Jobs: one per (mixer label, learning rate, seed), `<label>/lr<lr>/seed<k>`. A job trains through the one
loop (train/loop.py `run_loop`) on a fresh batch at every step, drawn from a generator seeded by (seed,
step), so a resumed run sees the batches an uninterrupted one sees; the learning-rate schedule is set
from the global step for the same reason. Every `evaluation.every` steps it evaluates on a fixed set (per
seed, the same for every mixer and learning rate), writes the model and resume state, and records a step
(accuracy in the `recall` view). Runs, steps and accuracies live in the store like learning runs; the
report shows a table of every mixer and learning rate and the accuracy curves.
"""
from __future__ import annotations

import json
import traceback
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from ...core.config import LABEL_PATTERN, Settings
from ...core.errors import PalimpsestError
from ...core.registry import KINDS, MEMORY_LAYERS
from ...core.seeding import derive_seed, generator, seed_everything
from ...memory.associative import NonFiniteInput
from ...data.recall import RECALL_TASKS, RecallTask, recall_task
from ...models.adapters import TokenAdapter
from ...models.sequence import RecallLM
from ...train.config import TrainingConfig, build_optimizer, schedule_factor
from ...train.loop import StepHooks, run_loop
from ..spec import EntriesSpec, PluginSpec, known
from ..store.db import ResultsDB
from ..store.files import load_state
from ..store.schema import INITIAL_STEP
from ..store.writer import Outbox
from .base import ExperimentKind, Job, job_id

VIEW = "recall"


class TaskSpec(Settings):
    name: str = "mqar"
    settings: dict[str, Any] = Field(default_factory=dict)


class SequenceModelSpec(Settings):
    dim: int = Field(64, ge=4)
    blocks: int = Field(2, ge=1)
    mlp_ratio: float = Field(4.0, ge=0)
    positions: bool = Field(True, description="learned absolute position embeddings")


class MixerSpec(Settings):
    """One model of the comparison: `name` (a registered memory layer) in every block, or `layers`, one
    {name, settings} per block (e.g. a sliding window below an HCAM layer)."""

    name: str | None = None
    label: str | None = Field(None, pattern=LABEL_PATTERN, max_length=100)
    settings: dict[str, Any] = Field(default_factory=dict)
    layers: list[PluginSpec] = Field(default_factory=list)
    lrs: list[float] | None = Field(None, min_length=1, description="learning rates of this mixer (default: "
                                    "training.lrs)")

    @model_validator(mode="after")
    def _named(self):
        if not self.name and not self.layers:
            raise ValueError("give a mixer `name` or its `layers` (one {name, settings} per block)")
        if self.layers and not self.label:
            raise ValueError("a mixer given by `layers` needs a `label`")
        if self.lrs is not None and any(not (lr > 0) for lr in self.lrs):
            raise ValueError(f"lrs: expected positive learning rates, got {self.lrs}")
        return self

    @property
    def display(self) -> str:
        return self.label or self.name

    def layer_list(self, blocks: int) -> list[tuple[str, dict]]:
        if self.layers:
            return [(p.name, dict(p.settings)) for p in self.layers]
        return [(self.name, dict(self.settings))] * blocks


class MemoryTraining(Settings):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lrs: list[float] = Field(default_factory=lambda: [1e-3], min_length=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    weight_decay: float = Field(0.1, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(50, ge=0)
    scheduler: Literal["constant", "cosine", "linear"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _positive(self):
        if any(not (lr > 0) for lr in self.lrs):
            raise ValueError(f"lrs: expected positive learning rates, got {self.lrs}")
        return self

    def config(self, lr: float) -> TrainingConfig:
        """The loop's settings (the schedule is applied by the kind from the global step)."""
        return TrainingConfig(batch_size=self.batch_size, optimizer=self.optimizer, lr=lr, momentum=self.momentum,
                              weight_decay=self.weight_decay, grad_clip=self.grad_clip, device="cpu")


class EvaluationSpec(Settings):
    every: int = Field(250, ge=1, description="evaluate (and checkpoint) every this many steps")
    examples: int = Field(500, ge=1)
    batch_size: int = Field(250, ge=1)


class MemorySpec(EntriesSpec):
    kind: Literal["memory"] = "memory"
    name: str = Field("memory", pattern=r"^[A-Za-z0-9_.-]+$")
    task: TaskSpec = Field(default_factory=TaskSpec)
    model: SequenceModelSpec = Field(default_factory=SequenceModelSpec)
    mixers: list[MixerSpec] = Field(..., min_length=1)
    training: MemoryTraining = Field(default_factory=MemoryTraining)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    target: float | None = Field(None, gt=0, le=1, description="accuracy a learning rate must reach to be in "
                                 "a mixer's window (default: within 0.02 of the mixer's best)")
    entries_field = "mixers"

    def mixer(self, label: str) -> MixerSpec:
        return next(m for m in self.mixers if m.display == label)

    def lrs(self, m: MixerSpec) -> list[float]:
        return list(m.lrs or self.training.lrs)


def _lr_key(lr: float) -> str:
    return f"{lr:g}"


def build_recall_model(spec: MemorySpec, m: MixerSpec, task: RecallTask) -> RecallLM:
    md = spec.model
    return RecallLM(task.vocab_size, md.dim, mixer="", layers=m.layer_list(md.blocks), mlp_ratio=md.mlp_ratio,
                    max_len=task.seq_len if md.positions else None)


def evaluate_recall(model: RecallLM, batches: list) -> float:
    model.eval()
    correct = answered = 0
    with torch.no_grad():
        for b in batches:
            mask = b["labels"] != -100
            logits = model(b["input_ids"], select=mask)
            c, n = int((logits.argmax(-1) == b["labels"][mask]).sum()), int(mask.sum())
            correct, answered = correct + c, answered + n
    model.train()
    return correct / answered


class _Hooks(StepHooks):
    """The loop's hooks: the task loss, the learning rate of the global step, and an evaluation and a
    checkpoint every `evaluation.every` steps (through `after_step`)."""

    def __init__(self, adapter, optimizer, base_lr, training, total, start, on_eval) -> None:
        self.adapter, self.optimizer, self.base_lr = adapter, optimizer, base_lr
        self.training, self.total, self.step, self.on_eval = training, total, start, on_eval
        self.losses: list[float] = []

    def loss(self, batch, values):
        loss = self.adapter.task_loss(batch, self.adapter(batch))
        self.losses.append(float(loss.detach()))
        return loss

    def before_step(self, batch, values):
        factor = schedule_factor(self.training, self.step, self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * factor

    def after_step(self, batch, values):
        self.step += 1
        self.on_eval(self.step, self.losses)


@KINDS.register("memory", summary="recall benchmarks (MQAR, passkey, ...) for attention and test-time memories")
class MemoryKind(ExperimentKind):
    name = "memory"
    Spec = MemorySpec
    metrics = ()
    tables = ("memory_summary",)
    figures = ("recall_curves",)

    def problems(self, data: dict) -> list[str]:
        from ... import memory  # noqa: F401  (registers the memory layers)
        problems: list[str] = []
        task = data.get("task") if isinstance(data.get("task"), dict) else {}
        name = task.get("name", "mqar")
        if known(RECALL_TASKS, name, "task.name", problems) and isinstance(task.get("settings", {}), dict):
            try:
                recall_task(name, **task.get("settings", {}))
            except PalimpsestError as err:
                problems.append(str(err).replace("\n", " ").replace(f"recall task {name!r}", "task.settings"))
        for i, m in enumerate(data.get("mixers") if isinstance(data.get("mixers"), list) else []):
            m = {"name": m} if isinstance(m, str) else m
            if not isinstance(m, dict):
                continue
            if m.get("name") is not None:
                known(MEMORY_LAYERS, m.get("name"), f"mixers.{i}.name", problems)
            for j, layer in enumerate(m.get("layers") or []):
                layer = {"name": layer} if isinstance(layer, str) else layer
                if isinstance(layer, dict):
                    known(MEMORY_LAYERS, layer.get("name"), f"mixers.{i}.layers.{j}.name", problems)
        return problems

    def describe(self, spec: MemorySpec) -> str:
        return (f"{len(spec.mixers)} mixers x {len(self.jobs(spec)) // len(spec.seeds)} (mixer, lr) x "
                f"{len(spec.seeds)} seeds on {spec.task.name}")

    def jobs(self, spec: MemorySpec) -> list[Job]:
        return [Job(f"{m.display}/lr{_lr_key(lr)}/seed{seed}", seed, {"label": m.display, "lr": lr})
                for seed in spec.seeds for m in spec.mixers for lr in spec.lrs(m)]

    def task(self, spec: MemorySpec) -> RecallTask:
        return recall_task(spec.task.name, **spec.task.settings)

    def preflight(self, spec: MemorySpec, db=None) -> None:
        """Every mixer builds, and one forward pass runs on a small batch (a chunk size that does not
        divide the sequence fails here, before anything is recorded)."""
        from ... import memory  # noqa: F401
        task = self.task(spec)
        batch = task.sample(2, generator(0, "preflight"))
        problems = []
        for i, m in enumerate(spec.mixers):
            try:
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    build_recall_model(spec, m, task)(batch["input_ids"])
            except PalimpsestError as err:
                problems.append(f"mixers.{i} ({m.display}): {err.what}" + (f"; {err.fix}" if err.fix else ""))
        if problems:
            from ...core.errors import SpecError
            raise SpecError(problems, "spec")

    def pending(self, spec, exp_id, job, db):
        run = db.run(job_id(exp_id, job))
        if run is not None and run["status"] in ("finished", "diverged"):
            return None        # a diverged run is a result (its learning rate is outside the window)
        steps = db.steps(job_id(exp_id, job)) if run is not None else []
        return {"run": run, "done": [s for s in steps if s["step"] != INITIAL_STEP],
                "initial_done": any(s["step"] == INITIAL_STEP for s in steps),
                "folder": run["folder"] if run is not None else None}

    def run_job(self, spec: MemorySpec, exp_id: str, job: Job, state: dict, outbox: Outbox) -> None:
        from ... import memory  # noqa: F401
        m, lr, seed = spec.mixer(job.info["label"]), float(job.info["lr"]), job.seed
        run_id = job_id(exp_id, job)
        task = self.task(spec)
        training = spec.training.config(lr)
        every, total = spec.evaluation.every, spec.training.steps
        seed_everything(derive_seed(seed, "init"))
        model = build_recall_model(spec, m, task)
        adapter = TokenAdapter(model)
        optimizer = build_optimizer(model.parameters(), training)
        ev_gen = generator(seed, "eval")
        ev = spec.evaluation
        eval_batches = [task.sample(min(ev.batch_size, ev.examples - i), ev_gen) for i in range(0, ev.examples, ev.batch_size)]
        if state["run"] is None:
            description = {"name": f"{task.name}", "scenario": "recall", "n_tasks": 1, "task": task.describe(),
                           "n_classes": task.vocab_size, "input_shape": [task.seq_len]}
            digest = "recall-" + __import__("hashlib").sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
            outbox.emit("stream", digest=digest, description=description, test_path=None, train_data=[])
            outbox.emit("run_start", run_id=run_id, experiment_id=exp_id, label=f"{m.display} lr {_lr_key(lr)}",
                        strategy=m.display, settings={"mixer": m.model_dump(mode="json"), "lr": lr,
                                                      "model": spec.model.model_dump(),
                                                      "parameters": sum(p.numel() for p in model.parameters())},
                        training=spec.training.model_dump(mode="json"), seed=seed, stream_digest=digest,
                        schedule=[[0]] * -(-total // every), folder=outbox.folder)
        done = sorted(d["step"] for d in state["done"])
        start = 0
        states = [d["state_path"] for d in state["done"] if d["state_path"]]
        models = [d["model_path"] for d in state["done"] if d["model_path"]]
        if done:
            last = next(d for d in state["done"] if d["step"] == done[-1])
            saved = load_state(outbox.root / last["model_path"])
            resume = load_state(outbox.root / last["state_path"])
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(resume["optimizer"])
            start = int(resume["step"])
        elif not state["initial_done"]:
            outbox.emit("step", run_id=run_id, step=INITIAL_STEP, tasks=[0], stats={"eval_seconds": 0.0},
                        accuracy={VIEW: [evaluate_recall(model, eval_batches)]}, predictions_path=None)
        outbox.event("start", label=f"{m.display} lr {_lr_key(lr)} seed {seed}", total=-(-total // every),
                     completed=len(done))
        outbox.emit("run_status", run_id=run_id, status="running")
        clock = {"t": __import__("time").perf_counter()}

        def on_eval(step: int, losses: list[float]) -> None:
            if step % every and step != total:
                return
            k = (step - 1) // every
            accuracy = evaluate_recall(model, eval_batches)
            now = __import__("time").perf_counter()
            model_path = outbox.save_state(f"model_step{k}.safetensors", {"model": model.state_dict()})
            state_path = outbox.save_state(f"state_step{k}.safetensors", {"optimizer": optimizer.state_dict(),
                                                                           "step": step})
            mean_loss = float(np.mean(losses)) if losses else None
            pruned_s, pruned_m = states[:-1], (models[:-1] if spec.checkpoints.models != "all" else [])
            outbox.emit("step", run_id=run_id, step=k, tasks=[0],
                        stats={"train_seconds": now - clock["t"], "mean_loss": mean_loss,
                               "n_examples": len(losses) * spec.training.batch_size, "eval_seconds": 0.0},
                        accuracy={VIEW: [accuracy]}, predictions_path=None, model_path=model_path,
                        state_path=state_path, pruned_models=tuple(pruned_m), pruned_states=tuple(pruned_s))
            outbox.remove(*pruned_m, *pruned_s)
            states[:] = [x for x in states if x not in pruned_s] + [state_path]
            models[:] = [x for x in models if x not in pruned_m] + [model_path]
            losses.clear()
            clock["t"] = __import__("time").perf_counter()
            if mean_loss is not None and not np.isfinite(mean_loss):
                raise FloatingPointError(f"training loss became {mean_loss} by step {step}")
            outbox.event("step", run_id=run_id, step=k)

        def batches():
            for i in range(start, total):
                yield task.sample(spec.training.batch_size, generator(seed, "train", i))

        hooks = _Hooks(adapter, optimizer, lr, TrainingConfig(warmup_steps=spec.training.warmup_steps,
                                                              scheduler=spec.training.scheduler), total, start, on_eval)
        model.train()
        try:
            if start < total:
                run_loop(hooks, optimizer, batches(), training)
        except KeyboardInterrupt:
            outbox.emit("run_status", run_id=run_id, status="interrupted")
            raise
        except (FloatingPointError, NonFiniteInput) as err:
            outbox.emit("run_status", run_id=run_id, status="diverged", error=str(err))
            outbox.remove(*states)
            return
        except BaseException:
            outbox.emit("run_status", run_id=run_id, status="failed", error=traceback.format_exc(limit=5))
            raise
        keep = spec.checkpoints.keeps_models(seed, spec.seeds)
        dropped = models if not keep else (models[:-1] if spec.checkpoints.models == "last" else [])
        outbox.emit("run_finish", run_id=run_id, metrics={}, dropped_models=tuple(dropped))
        outbox.remove(*states, *dropped)

    def job_done(self, spec, exp_id, job, db: ResultsDB, emit) -> None:
        run_id = job_id(exp_id, job)
        curve = recall_curve(db, run_id)
        if not curve:
            return
        values = [a for _, a in curve]
        emit({"type": "metrics", "run_id": run_id, "metrics": {"final_recall": values[-1], "best_recall": max(values)}})

    def summarize(self, db: ResultsDB, exp_id: str) -> list[dict]:
        return summarize_memory(db, exp_id)


def recall_curve(db: ResultsDB, run_id: str) -> list[tuple[int, float]]:
    """(training step, accuracy) of a memory run's evaluations, the untrained model's at step 0."""
    run = db.run(run_id)
    if run is None:
        return []
    training = json.loads(run["training_json"])
    spec_every = None
    exp = db.experiment(run["experiment_id"])
    try:
        import yaml
        spec_every = (yaml.safe_load(exp["spec_yaml"]).get("evaluation") or {}).get("every")
    except Exception:  # noqa: BLE001  (a stored spec that does not read only loses the step axis)
        pass
    every = spec_every or EvaluationSpec().every
    total = training.get("steps", 0)
    rows = db.conn.execute("SELECT step, value FROM accuracy WHERE run_id=? AND view=? ORDER BY step",
                           (run_id, VIEW)).fetchall()
    out = []
    for step, value in rows:
        x = 0 if step == INITIAL_STEP else min((step + 1) * every, total)
        out.append((x, float("nan") if value is None else value))
    return out


def summarize_memory(db: ResultsDB, exp_id: str) -> list[dict]:
    """One row per mixer label: per learning rate the final accuracy over seeds (mean, std, n), the best
    learning rate, the window of learning rates that reach the target (or come within 0.02 of the best),
    and the curves of the best learning rate."""
    import yaml

    from ...evaluate.aggregate import stat
    exp = db.experiment(exp_id)
    spec = yaml.safe_load(exp["spec_yaml"]) or {}
    target = spec.get("target")
    runs = db.runs(exp["id"])
    labels: list[str] = []
    for r in runs:
        if r["strategy"] not in labels:
            labels.append(r["strategy"])
    rows = []
    for label in labels:
        mine = [r for r in runs if r["strategy"] == label]
        per_lr: dict[float, dict] = {}
        curves: dict[float, list] = {}
        for r in mine:
            lr = json.loads(r["settings_json"])["lr"]
            entry = per_lr.setdefault(lr, {"final": [], "seconds": [], "status": [], "seeds": []})
            entry["status"].append(r["status"])
            if r["status"] == "finished":
                curve = recall_curve(db, r["id"])
                entry["final"].append(curve[-1][1])
                entry["seeds"].append(r["seed"])
                entry["seconds"].append(sum(s["train_seconds"] or 0 for s in db.steps(r["id"])))
                curves.setdefault(lr, []).append(curve)
            elif r["status"] == "diverged":
                entry["final"].append(float("nan"))
        lr_rows = {lr: {"final": stat(e["final"]), "seconds": stat(e["seconds"]), "n_runs": len(e["status"]),
                        "diverged": e["status"].count("diverged"), "seeds": e["seeds"]}
                   for lr, e in sorted(per_lr.items())}
        means = {lr: v["final"]["mean"] for lr, v in lr_rows.items() if v["final"]["n"]}
        best = max(means, key=means.get) if means else None
        if best is None:
            window = []
        elif target is not None:
            window = [lr for lr, v in means.items() if v >= target]
        else:
            window = [lr for lr, v in means.items() if v >= means[best] - 0.02]
        rows.append({"experiment": exp["id"], "kind": "memory", "strategy": label, "mixer": label, "lrs": lr_rows,
                     "best_lr": best, "best": lr_rows[best]["final"] if best is not None else stat([]),
                     "window": sorted(window), "target": target, "curves": curves,
                     "n_seeds": lr_rows[best]["final"]["n"] if best is not None else 0,
                     "metrics": {"final_recall": lr_rows[best]["final"]} if best is not None else {}})
    return rows


__all__ = ["MemoryKind", "MemorySpec", "MixerSpec", "build_recall_model", "evaluate_recall", "recall_curve",
           "summarize_memory"]
