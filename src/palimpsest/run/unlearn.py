"""The unlearning runner: train the original model, build the retrained reference once per forget
set, run every method on a copy of the original, audit each against the reference, and record
everything in the ledger (before a method runs, so a crash leaves a visible failed record)."""
from __future__ import annotations

import copy
import hashlib
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from .. import __version__
from ..core.registry import UNLEARNERS
from ..core.seeding import configure_torch, derive_seed, pick_device, seed_everything
from ..core.timing import Stopwatch
from ..data import datasets as _datasets
from ..forget.base import UnlearnContext, UnlearningData
from ..forget.request import ForgetSplit, resolve
from ..train.config import TrainingConfig
from ..learn.trainer import fit
from ..models import create_model
from .checkpoint import load_state, save_state
from .db import ResultsDB
from .unlearn_spec import AuditSpec, MethodSpec, UnlearningSpec

REFERENCE = "retrain"


@dataclass
class TrainingData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]


def load_training_data(spec: UnlearningSpec) -> TrainingData:
    t = spec.train
    data = _datasets.load_dataset(t.dataset, **({"root": t.root} if t.root else {}))
    if t.train_subset or t.test_subset:
        data = data.subsample(t.train_subset, t.test_subset, seed=0)
    return TrainingData(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train.astype(np.int64)),
                        torch.from_numpy(data.x_test), torch.from_numpy(data.y_test.astype(np.int64)),
                        data.n_classes, data.input_shape)


def model_factory(spec: UnlearningSpec, data: TrainingData) -> Callable[[], torch.nn.Module]:
    m = spec.train.model

    def make() -> torch.nn.Module:
        model = create_model(m.name, data.input_shape, data.n_classes, head="single", **m.settings)
        model.observe_classes(range(data.n_classes))  # trained on all classes at once
        return model
    return make


AuditFn = Callable[..., dict]


@dataclass
class Origin:
    """The model requests are made against: its training data, recipe and identity."""

    data: TrainingData
    make_model: Callable[[], torch.nn.Module]
    training: TrainingConfig
    key: str
    source: str
    model: torch.nn.Module
    info: dict


class UnlearningRunner:
    def __init__(self, spec: UnlearningSpec, root: str | Path = "palimpsest-results", progress: bool = True,
                 audit_fn: AuditFn | None = None, on_entry: Callable[[str], None] | None = None) -> None:
        self.spec, self.db, self.progress, self.on_entry = spec, ResultsDB(root), progress, on_entry
        from ..evaluate.unlearning import audit_model
        self.audit_fn = audit_fn or audit_model

    # -- models ---------------------------------------------------------------------------------
    def _stored(self, model_id: str, make, train: Callable[[torch.nn.Module], dict], exp_id: str, seed: int,
                role: str, path: Path, device) -> tuple[torch.nn.Module, dict]:
        entry = self.db.model_entry(model_id)
        model = make().to(device)
        if entry and Path(entry["path"]).exists():
            state = load_state(entry["path"])
            model.load_state_dict(state["model"])
            info = json.loads(entry["info_json"] or "{}")
            return model, {"seconds": entry["seconds"], "cpu_seconds": info.get("cpu_seconds"), "cached": True,
                           "cache": state.get("cache", {})}
        with Stopwatch() as clock:
            extra = train(model) or {}
        save_state(path, {"model": model.state_dict(), "cache": extra.get("cache", {})})
        self.db.add_model(model_id, exp_id, seed, role, str(path), clock.wall,
                          {"spec": self.spec.train.model_dump(mode="json"), "cpu_seconds": clock.cpu})
        return model, {"seconds": clock.wall, "cpu_seconds": clock.cpu, "cached": False,
                       "cache": extra.get("cache", {})}

    def original(self, exp_id: str, seed: int, data: TrainingData, device) -> tuple[torch.nn.Module, dict]:
        key = self.spec.original_digest(seed)
        make = model_factory(self.spec, data)

        def train(model):
            fit(model, data.x_train, data.y_train, self.spec.train.training, seed, device, stage="original")
            return {"cache": self._artifacts(model, data, seed, device)}

        with torch.random.fork_rng(devices=[]):
            seed_everything(derive_seed(seed, "original"))
            return self._stored(f"original/{key}", make, train, exp_id, seed, "original",
                                self.db.root / "models" / f"original_{key}.safetensors", device)

    def _artifacts(self, model, data: TrainingData, seed: int, device) -> dict:
        """What methods keep with the model at training time (e.g. SSD's full-data importance)."""
        out: dict = {}
        ctx = UnlearnContext(self.spec.train.training, model_factory(self.spec, data), device, seed)
        for m in self.spec.methods:
            out.update(UNLEARNERS.create(m.name, **m.settings).artifacts(model, data.x_train, data.y_train, ctx))
        return out

    def reference(self, exp_id: str, seed: int, origin: "Origin", split: ForgetSplit, device):
        """The model retrained from scratch on the retain set with the original recipe: built once
        per (original model, forget set) and cached."""
        key = f"{origin.key}_{split.key()}"
        data = origin.data

        def train(model):
            retain = torch.as_tensor(split.retain)
            fit(model, data.x_train[retain], data.y_train[retain], origin.training, seed, device, stage="retrain")

        with torch.random.fork_rng(devices=[]):
            seed_everything(derive_seed(seed, "retrain"))
            return self._stored(f"retrain/{key}", origin.make_model, train, exp_id, seed, "retrain",
                                self.db.root / "models" / f"retrain_{key}.safetensors", device)

    # -- the experiment --------------------------------------------------------------------------
    def run(self, resume: bool = False) -> str:
        configure_torch()
        spec = self.spec
        exp_id = None
        if resume:
            exp_id = self.db.latest_unfinished(spec.digest())
        if exp_id is None:
            exp_id = self.db.new_experiment(spec.name, spec.to_yaml(), spec.digest(), __version__)
        try:
            for seed in spec.seeds:
                self.run_seed(exp_id, seed)
        except BaseException:
            self.db.set_experiment_status(exp_id, "failed")
            raise
        self.db.set_experiment_status(exp_id, "finished")
        return exp_id

    def run_seed(self, exp_id: str, seed: int) -> None:
        spec = self.spec
        device = pick_device(spec.train.training.device)
        data = load_training_data(spec)
        original, orig_info = self.original(exp_id, seed, data, device)
        origin = Origin(data, model_factory(spec, data), spec.train.training, spec.original_digest(seed),
                        f"original/{spec.original_digest(seed)}", original, orig_info)
        self.run_requests(exp_id, seed, origin, list(spec.forget), [(m.display, m.name, m.settings) for m in spec.methods])

    def run_requests(self, exp_id: str, seed: int, origin: "Origin", requests, methods) -> None:
        """Every (request, method) pair on `origin`'s model, each audited against the retrained
        reference; finished ledger entries are skipped, so a resumed run continues."""
        device = pick_device(origin.training.device)
        done = {e["id"] for e in self.db.ledger(exp_id) if e["status"] == "finished"}
        self._refs = None
        for r_i, request in enumerate(requests):
            entries = [("original", "original", {}), (REFERENCE, REFERENCE, {})] + \
                      [m for m in methods if m[1] != REFERENCE]
            ids = {label: f"{exp_id}/seed{seed}/request{r_i}/{label}" for label, _, _ in entries}
            if all(i in done for i in ids.values()):
                continue  # a resumed run skips finished requests without rebuilding their reference
            split = resolve(request, origin.data.y_train.numpy(), origin.data.n_classes)
            try:
                if self._refs is None:
                    self._refs = self._reference_models(origin, seed, device)
                reference, ref_info = self.reference(exp_id, seed, origin, split, device)
                ref_audit = self._audit(reference, origin.data, split, None, seed)
            except BaseException as err:  # a failed reference leaves a visible record too
                self.db.ledger_open(ids[REFERENCE], exp_id, origin.source, seed, request.model_dump(mode="json"),
                                    split.key(), REFERENCE, REFERENCE, {})
                self._close_failed(ids[REFERENCE], err)
                raise
            for label, method_name, settings in entries:
                entry_id = ids[label]
                if entry_id in done:
                    continue
                self.db.ledger_open(entry_id, exp_id, origin.source, seed, request.model_dump(mode="json"),
                                    split.key(), method_name, label, settings)
                try:
                    if label == "original":
                        model, seconds, cpu = origin.model, 0.0, 0.0
                    elif label == REFERENCE:
                        model, seconds, cpu = reference, ref_info["seconds"], ref_info.get("cpu_seconds")
                    else:
                        model, seconds, cpu = self._unlearn(method_name, settings, origin, split, seed, device)
                    audit = ref_audit if label == REFERENCE else self._audit(model, origin.data, split, ref_audit,
                                                                             seed)
                    ref_cpu = ref_info.get("cpu_seconds")
                    # retrain_time_cached: the reference came from an earlier run, so its time was
                    # measured then, under whatever load the machine had
                    audit = dict(audit, seconds=seconds, retrain_seconds=ref_info["seconds"],
                                 retrain_time_cached=bool(ref_info.get("cached")),
                                 speedup_vs_retrain=ref_info["seconds"] / seconds if seconds else None,
                                 cpu_seconds=cpu, retrain_cpu_seconds=ref_cpu,
                                 speedup_vs_retrain_cpu=ref_cpu / cpu if cpu and ref_cpu else None)
                    self.db.ledger_close(entry_id, "finished", seconds, audit)
                except BaseException as err:
                    self._close_failed(entry_id, err)
                    raise
                if self.on_entry:
                    self.on_entry(entry_id)

    def _close_failed(self, entry_id: str, err: BaseException) -> None:
        """Close a ledger entry as interrupted (Ctrl-C) or failed, with the traceback."""
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        self.db.ledger_close(entry_id, status, error=traceback.format_exc(limit=5))

    def _unlearn(self, name, settings, origin: "Origin", split, seed, device):
        method = UNLEARNERS.create(name, **settings)
        guarded = UnlearningData(origin.data.x_train, origin.data.y_train, split, method.reads, origin.data.n_classes)
        ctx = UnlearnContext(origin.training, origin.make_model, device, seed, cache=dict(origin.info.get("cache", {})))
        model = copy.deepcopy(origin.model).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "unlearn", name))
            with Stopwatch() as clock:
                model, _report = method.unlearn(model, guarded, ctx)
        return model, clock.wall, clock.cpu

    def _reference_models(self, origin: "Origin", seed: int, device):
        """Reference models of the per-example attack, each trained with the original recipe on a
        random half of the training set (once per original model and seed)."""
        n = self.spec.audits.reference_mia.n_models
        if not n:
            return None
        from ..evaluate.mia import train_reference_models
        recipe = origin.training
        return train_reference_models(
            lambda: origin.make_model().to(device),
            lambda m, x, y, s: fit(m, x, y, recipe, s, device, stage="reference"),
            origin.data.x_train, origin.data.y_train, n, seed=seed,
            fraction=self.spec.audits.reference_mia.pool_fraction)

    def _audit(self, model, data: TrainingData, split: ForgetSplit, reference: dict | None, seed: int) -> dict:
        """The audit's own randomness (attack splits, relearning picks, probe rows) follows the seed."""
        return self.audit_fn(model, data, split, self.spec.audits, reference,
                             reference_models=getattr(self, "_refs", None), seed=seed)


def run_unlearning(spec: UnlearningSpec, root: str | Path = "palimpsest-results", resume: bool = False,
                   progress: bool = True, on_entry: Callable[[str], None] | None = None) -> str:
    """Run an unlearning spec; return the experiment id. Results are in the ledger table."""
    runner = UnlearningRunner(spec, root, progress=progress, on_entry=on_entry)
    try:
        return runner.run(resume)
    finally:
        runner.db.close()


def origin_from_run(root: str | Path, run_id: str, step: int | None = None) -> tuple[Origin, int]:
    """A stored continual-learning model as the target of forget requests: the examples that
    trained it (every experience up to `step`), the recipe of its run, and its weights."""
    from .runner import build_stream, load_model
    model, info = load_model(root, run_id, step)
    spec, run = info["spec"], info["run"]
    stream = build_stream(spec.benchmark, run["seed"])
    # The model after step k was trained on every experience scheduled at steps 0..k.
    schedule = json.loads(run["schedule_json"])
    positions = sorted({p for s in schedule[: info["step"] + 1] for p in s})
    exps = [stream.train[p] for p in positions]
    x = torch.cat([e.inputs for e in exps])
    y = torch.cat([e.targets for e in exps])
    xt = torch.cat([e.inputs for e in stream.test])
    yt = torch.cat([e.targets for e in stream.test])
    data = TrainingData(x, y, xt, yt, stream.n_classes, stream.input_shape)
    training = TrainingConfig(**json.loads(run["training_json"]))
    m = spec.model

    def make() -> torch.nn.Module:
        fresh = create_model(m.name, stream.input_shape, stream.n_classes, head="single", **m.settings)
        fresh.observe_classes(sorted({c for e in exps for c in e.classes}))
        return fresh

    key = hashlib.sha256(f"{run_id}@{info['step']}".encode()).hexdigest()[:16]
    return Origin(data, make, training, key, f"{run_id}@step{info['step']}", model, {"cache": {}}), run["seed"]


def forget_from_run(root: str | Path, run_id: str, requests, methods, step: int | None = None,
                    name: str = "forget") -> str:
    """Run forget requests with `methods` ([(label, name, settings)]) on a stored learning run's
    model; results go to the ledger of a new experiment, which this returns."""
    origin, seed = origin_from_run(root, run_id, step)
    spec_yaml = yaml.safe_dump({"forget_from": run_id, "step": step,
                                "forget": [r.model_dump(mode="json") for r in requests],
                                "methods": [{"label": lb, "name": n, "settings": st} for lb, n, st in methods]},
                               sort_keys=False)
    db = ResultsDB(root)
    exp_id = db.new_experiment(name, spec_yaml, hashlib.sha256(spec_yaml.encode()).hexdigest()[:16], __version__)
    db.close()
    shell = UnlearningSpec(name=name, forget=list(requests), methods=[MethodSpec(name=n, label=lb, settings=st)
                                                                      for lb, n, st in methods],
                           audits=AuditSpec())
    runner = UnlearningRunner(shell, root, progress=False)
    try:
        runner.run_requests(exp_id, seed, origin, list(requests), methods)
        runner.db.set_experiment_status(exp_id, "finished")
    except BaseException:
        runner.db.set_experiment_status(exp_id, "failed")
        raise
    finally:
        runner.db.close()
    return exp_id
