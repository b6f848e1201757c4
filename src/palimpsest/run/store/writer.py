"""The single writer and the jobs' outboxes.

A job never touches the database. It writes its files into its own folder and sends records through
its `Outbox`; the `Writer` applies each record in one transaction. In-process the outbox hands
records straight to the writer (the call returns once the record is committed); a distributed
executor would send the same records to one writer actor. Files first, then the record that names
them: a killed job leaves at worst files no record points to, never a record without its files.

Records (`Outbox.emit(type, **payload)`; `Writer.apply` dispatches on `type`):

    stream        a stream's description, train indices and test-label file, once per digest
    run_start     a learning/adaptation run: label, method, settings, seed, stream, schedule, folder
    step          one finished step: tasks, timing, accuracies and the files it wrote (models it prunes)
    run_status    running / failed / interrupted / diverged, with the error
    run_finish    the run's metrics; status finished; resume state released
    metrics       (re)computed metrics of a run
    model         a model shared across experiments (an unlearning original or retrained reference)
    ledger_open   a forget request about to be served (written before the method runs)
    ledger_close  its outcome: audit, the method's report, stored outputs, error
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .db import ResultsDB, to_blob
from .files import relative, save_arrays, save_state

Sink = Callable[[dict], None]


def job_folder(job_id: str) -> str:
    """The folder of a job, from its id (never from a user's label): `jobs/<16 hex digits>`."""
    return f"jobs/{hashlib.sha256(job_id.encode()).hexdigest()[:16]}"


def _finite(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


class Writer:
    """Applies records to the database, one transaction each (see the module docstring)."""

    def __init__(self, db: ResultsDB) -> None:
        self.db = db
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def apply(self, record: dict) -> None:
        kind = record["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            raise ValueError(f"unknown store record {kind!r}")
        with self.db.transaction() as c:
            handler(c, **{k: v for k, v in record.items() if k != "type"})

    # -- experiments --------------------------------------------------------------------------
    def new_experiment(self, kind: str, name: str, spec_yaml: str, spec_hash: str, version: str) -> str:
        """Record a new experiment and return its id, `<name>-<date>-<time>` or, when another
        process took that id in the same second, `...-2`, `-3`: chosen and inserted in one
        transaction, so concurrent processes never collide."""
        base = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        with self.db.transaction() as c:
            taken = {r[0] for r in c.execute("SELECT id FROM experiments WHERE id=? OR id LIKE ?", (base, base + "-%"))}
            exp_id, n = base, 1
            while exp_id in taken:
                n += 1
                exp_id = f"{base}-{n}"
            now = time.time()
            c.execute("INSERT INTO experiments (id, kind, name, spec_yaml, spec_hash, status, created, "
                      "palimpsest_version, heartbeat, owner) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (exp_id, kind, name, spec_yaml, spec_hash, "running", now, version, now, self.owner))
        return exp_id

    def experiment_status(self, exp_id: str, status: str) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE experiments SET status=?, finished=?, heartbeat=?, owner=? WHERE id=?",
                      (status, time.time() if status != "running" else None, time.time(), self.owner, exp_id))

    def heartbeat(self, exp_id: str) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE experiments SET heartbeat=? WHERE id=?", (time.time(), exp_id))

    # -- record handlers ------------------------------------------------------------------------
    def _on_stream(self, c, digest: str, description: dict, test_path: str | None,
                   train_data: list[tuple[int, int, str, list[int]]]) -> None:
        if c.execute("SELECT 1 FROM streams WHERE digest=?", (digest,)).fetchone():
            return
        c.execute("INSERT INTO streams (digest, description_json, test_path, created) VALUES (?,?,?,?)",
                  (digest, json.dumps(description), test_path, time.time()))
        c.executemany("INSERT INTO stream_data (digest, position, task, split, indices) VALUES (?,?,?,?,?)",
                      [(digest, pos, task, split, to_blob(np.asarray(idx, dtype=np.int64)))
                       for pos, task, split, idx in train_data])

    def _on_run_start(self, c, run_id: str, experiment_id: str, label: str, strategy: str, settings: dict,
                      training: dict, seed: int, stream_digest: str, schedule: list, folder: str) -> None:
        # a job that restarts from nothing sends its run_start again: the first one stands
        c.execute("INSERT INTO runs (id, experiment_id, label, strategy, settings_json, training_json, seed, status, "
                  "stream_digest, schedule_json, folder, state_format, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                  "ON CONFLICT(id) DO NOTHING",
                  (run_id, experiment_id, label, strategy, json.dumps(settings), json.dumps(training), seed, "running",
                   stream_digest, json.dumps(schedule), folder, 2, time.time()))

    def _on_run_status(self, c, run_id: str, status: str, error: str | None = None) -> None:
        c.execute("UPDATE runs SET status=?, finished=?, error=? WHERE id=?",
                  (status, time.time() if status in ("finished", "diverged") else None, error, run_id))

    def _on_step(self, c, run_id: str, step: int, tasks: list[int], stats: dict[str, Any],
                 accuracy: dict[str, list[float]], predictions_path: str | None, model_path: str | None = None,
                 state_path: str | None = None, pruned_models: tuple[str, ...] = (),
                 pruned_states: tuple[str, ...] = ()) -> None:
        c.execute("INSERT OR REPLACE INTO steps (run_id, step, tasks_json, train_seconds, eval_seconds, mean_loss, "
                  "n_examples, model_path, state_path, predictions_path) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (run_id, step, json.dumps(tasks), stats.get("train_seconds"), stats.get("eval_seconds"),
                   _finite(stats.get("mean_loss")), stats.get("n_examples"), model_path, state_path, predictions_path))
        c.executemany("INSERT OR REPLACE INTO accuracy (run_id, step, task, view, value) VALUES (?,?,?,?,?)",
                      [(run_id, step, t, view, _finite(v)) for view, accs in accuracy.items()
                       for t, v in enumerate(accs)])
        for path in pruned_models:
            c.execute("UPDATE steps SET model_path=NULL WHERE run_id=? AND model_path=?", (run_id, path))
        for path in pruned_states:
            c.execute("UPDATE steps SET state_path=NULL WHERE run_id=? AND state_path=?", (run_id, path))

    def _on_metrics(self, c, run_id: str, metrics: dict[str, float]) -> None:
        c.executemany("INSERT OR REPLACE INTO metrics (run_id, name, value) VALUES (?,?,?)",
                      [(run_id, k, _finite(v)) for k, v in metrics.items()])

    def _on_run_finish(self, c, run_id: str, metrics: dict[str, float], status: str = "finished",
                       error: str | None = None, dropped_models: tuple[str, ...] = ()) -> None:
        self._on_metrics(c, run_id, metrics)
        c.execute("UPDATE steps SET state_path=NULL WHERE run_id=?", (run_id,))
        for path in dropped_models:
            c.execute("UPDATE steps SET model_path=NULL WHERE run_id=? AND model_path=?", (run_id, path))
        self._on_run_status(c, run_id, status, error)

    def _on_model(self, c, model_id: str, experiment_id: str, seed: int, role: str, path: str, seconds: float,
                  info: dict) -> None:
        c.execute("INSERT OR REPLACE INTO models (id, experiment_id, seed, role, path, seconds, info_json, created) "
                  "VALUES (?,?,?,?,?,?,?,?)", (model_id, experiment_id, seed, role, path, seconds, json.dumps(info),
                                               time.time()))

    def _on_ledger_open(self, c, entry_id: str, experiment_id: str, source: str, seed: int, request: dict,
                        forget_key: str, method: str, label: str, settings: dict) -> None:
        c.execute("INSERT OR REPLACE INTO ledger (id, experiment_id, source, seed, request_json, forget_key, method, "
                  "label, settings_json, status, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                  (entry_id, experiment_id, source, seed, json.dumps(request), forget_key, method, label,
                   json.dumps(settings), "running", time.time()))

    def _on_ledger_close(self, c, entry_id: str, status: str, seconds: float | None = None, audit: dict | None = None,
                         report: dict | None = None, outputs_path: str | None = None, error: str | None = None) -> None:
        c.execute("UPDATE ledger SET status=?, finished=?, seconds=?, audit_json=?, report_json=?, outputs_path=?, "
                  "error=? WHERE id=?",
                  (status, time.time(), seconds, json.dumps(audit) if audit is not None else None,
                   json.dumps(report, default=str) if report is not None else None, outputs_path, error, entry_id))


class Outbox:
    """What a job writes through: files in its own folder, then records for the writer, and
    events (progress, a finished step) for whoever runs it."""

    def __init__(self, root: str | Path, job_id: str, folder: str, sink: Sink,
                 events: Callable[[str, dict], None] | None = None) -> None:
        self.root, self.job_id, self.folder = Path(root), job_id, folder
        self._sink, self._events = sink, events

    @property
    def directory(self) -> Path:
        return self.root / self.folder

    def path(self, name: str) -> Path:
        return self.directory / name

    def rel(self, path: str | Path) -> str:
        return relative(self.root, path)

    def save_state(self, name: str, state: dict) -> str:
        path = self.path(name)
        save_state(path, state)
        return self.rel(path)

    def save_arrays(self, name: str, **arrays) -> str:
        return self.rel(save_arrays(self.path(name), **arrays))

    def save_shared_arrays(self, rel_path: str, **arrays) -> str:
        """Arrays at a path shared by jobs (e.g. a stream's test labels), written once."""
        path = self.root / rel_path
        if not path.is_file():
            save_arrays(path, **arrays)
        return rel_path

    def remove(self, *rel_paths: str | None) -> None:
        """Delete files (call after the record that stops naming them has been emitted)."""
        for rel in rel_paths:
            if rel:
                for p in (self.root / rel, self.root / (rel + ".json")):
                    p.unlink(missing_ok=True)

    def emit(self, type: str, **payload) -> None:
        self._sink({"type": type, **payload})

    def event(self, name: str, **payload) -> None:
        if self._events is not None:
            self._events(name, payload)


class Heartbeat:
    """A background thread that refreshes an experiment's heartbeat every `every` seconds through
    its own connection, so a killed process is seen as crashed once its lease runs out."""

    def __init__(self, root: Path, exp_id: str, every: float = 10.0) -> None:
        self.root, self.exp_id, self.every = root, exp_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="palimpsest-heartbeat", daemon=True)

    def _beat(self) -> None:
        try:
            db = ResultsDB(self.root)
        except Exception:  # noqa: BLE001  (a heartbeat must never take the run down)
            return
        try:
            while not self._stop.wait(self.every):
                try:
                    Writer(db).heartbeat(self.exp_id)
                except Exception:  # noqa: BLE001
                    pass
        finally:
            db.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["Heartbeat", "Outbox", "Writer", "job_folder", "save_state"]
