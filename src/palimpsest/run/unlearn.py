"""The unlearning runner: train the original model, build the retrained reference once per forget
set, run every method on a copy of the original, audit each against the reference, and record
everything in the ledger (before a method runs, so a crash leaves a visible failed record)."""
from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..core.registry import UNLEARNERS
from ..core.seeding import configure_torch, derive_seed, pick_device, seed_everything
from ..data import datasets as _datasets
from ..forget.base import UnlearnContext, UnlearningData
from ..forget.request import ForgetSplit, resolve
from ..learn.trainer import fit
from ..models import create_model
from .checkpoint import load_state, save_state
from .db import ResultsDB
from .unlearn_spec import UnlearningSpec

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


class UnlearningRunner:
    def __init__(self, spec: UnlearningSpec, root: str | Path = "palimpsest-results", progress: bool = True,
                 audit_fn: AuditFn | None = None, on_entry: Callable[[str], None] | None = None) -> None:
        self.spec, self.db, self.progress, self.on_entry = spec, ResultsDB(root), progress, on_entry
        from ..evaluate.unlearning import audit_model
        self.audit_fn = audit_fn or audit_model

    # -- models ---------------------------------------------------------------------------------
    def _stored(self, model_id: str, make, train: Callable[[torch.nn.Module], dict], exp_id: str, seed: int,
                role: str, path: Path) -> tuple[torch.nn.Module, dict]:
        entry = self.db.model_entry(model_id)
        model = make()
        if entry and Path(entry["path"]).exists():
            state = load_state(entry["path"])
            model.load_state_dict(state["model"])
            return model, {"seconds": entry["seconds"], "cache": state.get("cache", {})}
        start = time.perf_counter()
        extra = train(model) or {}
        seconds = time.perf_counter() - start
        save_state(path, {"model": model.state_dict(), "cache": extra.get("cache", {})})
        self.db.add_model(model_id, exp_id, seed, role, str(path), seconds, {"spec": self.spec.train.model_dump(mode="json")})
        return model, {"seconds": seconds, "cache": extra.get("cache", {})}

    def original(self, exp_id: str, seed: int, data: TrainingData, device) -> tuple[torch.nn.Module, dict]:
        key = self.spec.original_digest(seed)
        make = model_factory(self.spec, data)

        def train(model):
            fit(model, data.x_train, data.y_train, self.spec.train.training, seed, device, stage="original")
            return {"cache": self._artifacts(model, data, seed, device)}

        with torch.random.fork_rng(devices=[]):
            seed_everything(derive_seed(seed, "original"))
            return self._stored(f"original/{key}", make, train, exp_id, seed, "original",
                                self.db.root / "models" / f"original_{key}.safetensors")

    def _artifacts(self, model, data: TrainingData, seed: int, device) -> dict:
        """What methods keep with the model at training time (e.g. SSD's full-data importance)."""
        out: dict = {}
        ctx = UnlearnContext(self.spec.train.training, model_factory(self.spec, data), device, seed)
        for m in self.spec.methods:
            method = UNLEARNERS.create(m.name, **m.settings)
            prepare = getattr(method, "artifacts", None)
            if prepare is not None:
                out.update(prepare(model, data.x_train, data.y_train, ctx))
        return out

    def reference(self, exp_id: str, seed: int, data: TrainingData, split: ForgetSplit, device):
        key = f"{self.spec.original_digest(seed)}_{split.key()}"
        make = model_factory(self.spec, data)

        def train(model):
            retain = torch.as_tensor(split.retain)
            fit(model, data.x_train[retain], data.y_train[retain], self.spec.train.training, seed, device,
                stage="retrain")

        with torch.random.fork_rng(devices=[]):
            seed_everything(derive_seed(seed, "retrain"))
            return self._stored(f"retrain/{key}", make, train, exp_id, seed, "retrain",
                                self.db.root / "models" / f"retrain_{key}.safetensors")

    # -- the experiment --------------------------------------------------------------------------
    def run(self, resume: bool = False) -> str:
        configure_torch()
        spec = self.spec
        exp_id = None
        if resume:
            exp_id = self.db.latest_unfinished(spec.digest())
        if exp_id is None:
            exp_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            known = {e["id"] for e in self.db.experiments()}
            base, n = exp_id, 1
            while exp_id in known:
                n += 1
                exp_id = f"{base}-{n}"
            self.db.create_experiment(exp_id, spec.name, spec.to_yaml(), spec.digest(), __version__)
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
        done = {e["id"] for e in self.db.ledger(exp_id) if e["status"] == "finished"}
        for r_i, request in enumerate(spec.forget):
            split = resolve(request, data.y_train.numpy(), data.n_classes)
            reference, ref_info = self.reference(exp_id, seed, data, split, device)
            ref_audit = self._audit(reference, data, split, None)
            entries = [("original", "original", {}), (REFERENCE, REFERENCE, {})] + \
                      [(m.display, m.name, m.settings) for m in spec.methods if m.name != REFERENCE]
            for label, method_name, settings in entries:
                entry_id = f"{exp_id}/seed{seed}/request{r_i}/{label}"
                if entry_id in done:
                    continue
                self.db.ledger_open(entry_id, exp_id, f"original/{spec.original_digest(seed)}", seed,
                                    request.model_dump(mode="json"), split.key(), method_name, label, settings)
                try:
                    if label == "original":
                        model, seconds = original, 0.0
                    elif label == REFERENCE:
                        model, seconds = reference, ref_info["seconds"]
                    else:
                        model, seconds = self._unlearn(method_name, settings, original, orig_info, data, split,
                                                       seed, device)
                    audit = ref_audit if label == REFERENCE else self._audit(model, data, split, ref_audit)
                    audit = dict(audit, seconds=seconds, retrain_seconds=ref_info["seconds"],
                                 speedup_vs_retrain=ref_info["seconds"] / seconds if seconds else None)
                    self.db.ledger_close(entry_id, "finished", seconds, audit)
                except BaseException as err:
                    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
                    self.db.ledger_close(entry_id, status, error=traceback.format_exc(limit=5))
                    raise
                if self.on_entry:
                    self.on_entry(entry_id)

    def _unlearn(self, name, settings, original, orig_info, data, split, seed, device):
        method = UNLEARNERS.create(name, **settings)
        guarded = UnlearningData(data.x_train, data.y_train, split, method.reads, data.n_classes)
        ctx = UnlearnContext(self.spec.train.training, model_factory(self.spec, data), device, seed,
                             cache=dict(orig_info.get("cache", {})))
        model = copy.deepcopy(original)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "unlearn", name))
            start = time.perf_counter()
            model = method.unlearn(model, guarded, ctx)
            seconds = time.perf_counter() - start
        return model, seconds

    def _audit(self, model, data: TrainingData, split: ForgetSplit, reference: dict | None) -> dict:
        return self.audit_fn(model, data, split, self.spec.audits, reference)


def run_unlearning(spec: UnlearningSpec, root: str | Path = "palimpsest-results", resume: bool = False,
                   progress: bool = True, on_entry: Callable[[str], None] | None = None) -> str:
    """Run an unlearning spec; return the experiment id. Results are in the ledger table."""
    runner = UnlearningRunner(spec, root, progress=progress, on_entry=on_entry)
    try:
        return runner.run(resume)
    finally:
        runner.db.close()
