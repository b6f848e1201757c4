"""The results database: SQLite in WAL mode. Each finished training step is written in one
transaction, after its checkpoint is on disk, so a killed run never leaves half a step behind."""
from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.errors import PalimpsestError
from ..evaluate.records import RunRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, spec_yaml TEXT NOT NULL, spec_hash TEXT NOT NULL,
  status TEXT NOT NULL, created REAL NOT NULL, finished REAL, palimpsest_version TEXT);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL REFERENCES experiments(id), label TEXT NOT NULL,
  strategy TEXT NOT NULL, settings_json TEXT NOT NULL, training_json TEXT NOT NULL, seed INTEGER NOT NULL,
  status TEXT NOT NULL, stream_json TEXT NOT NULL, schedule_json TEXT NOT NULL, created REAL NOT NULL,
  finished REAL, error TEXT);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL REFERENCES runs(id), step INTEGER NOT NULL, tasks_json TEXT NOT NULL,
  train_seconds REAL, eval_seconds REAL, mean_loss REAL, n_examples INTEGER, checkpoint TEXT,
  PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS accuracy (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, task INTEGER NOT NULL, view TEXT NOT NULL, value REAL,
  PRIMARY KEY (run_id, step, task, view));
CREATE TABLE IF NOT EXISTS predictions (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, view TEXT NOT NULL, labels BLOB NOT NULL,
  PRIMARY KEY (run_id, step, view));
CREATE TABLE IF NOT EXISTS test_sets (
  run_id TEXT PRIMARY KEY, targets BLOB NOT NULL, test_task BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS train_data (
  run_id TEXT NOT NULL, position INTEGER NOT NULL, task INTEGER NOT NULL, split TEXT NOT NULL,
  indices BLOB NOT NULL, PRIMARY KEY (run_id, position));
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS models (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, seed INTEGER NOT NULL, role TEXT NOT NULL,
  path TEXT NOT NULL, seconds REAL, info_json TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, source TEXT NOT NULL, seed INTEGER NOT NULL,
  request_json TEXT NOT NULL, forget_key TEXT NOT NULL, method TEXT NOT NULL, label TEXT NOT NULL,
  settings_json TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL, finished REAL, seconds REAL,
  audit_json TEXT, error TEXT);
"""

INITIAL_STEP = -1  # the evaluation of the untrained model


def to_blob(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def from_blob(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class ResultsDB:
    """All experiments under one folder: `<root>/results.sqlite` plus `<root>/checkpoints/`."""

    def __init__(self, root: str | Path = "palimpsest-results") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "results.sqlite"
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.root / "checkpoints" / run_id.replace("/", "__")

    # -- experiments --------------------------------------------------------------------------
    def create_experiment(self, exp_id: str, name: str, spec_yaml: str, spec_hash: str, version: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO experiments VALUES (?,?,?,?,?,?,?,?)",
                      (exp_id, name, spec_yaml, spec_hash, "running", time.time(), None, version))

    def new_experiment(self, name: str, spec_yaml: str, spec_hash: str, version: str) -> str:
        """Record a new experiment under a unique id `<name>-<date>-<time>[-n]` and return the id."""
        exp_id = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        known = {e["id"] for e in self.experiments()}
        base, n = exp_id, 1
        while exp_id in known:
            n += 1
            exp_id = f"{base}-{n}"
        self.create_experiment(exp_id, name, spec_yaml, spec_hash, version)
        return exp_id

    def set_experiment_status(self, exp_id: str, status: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE experiments SET status=?, finished=? WHERE id=?", (status, time.time(), exp_id))

    def experiments(self) -> list[dict]:
        rows = self.conn.execute("SELECT id, name, status, created, spec_hash FROM experiments ORDER BY created")
        return [dict(zip(("id", "name", "status", "created", "spec_hash"), r)) for r in rows]

    def experiment(self, exp_id: str | None = None) -> dict:
        """One experiment by id (or unique prefix); None means the latest."""
        rows = self.experiments()
        if not rows:
            raise PalimpsestError(f"no experiments in {self.root}", expected="a results folder with runs",
                                  got=str(self.root), fix="run `palimpsest run` first, or pass --root")
        if exp_id is None:
            pick = rows[-1]
        else:
            matches = [r for r in rows if r["id"] == exp_id] or [r for r in rows if r["id"].startswith(exp_id)]
            if len(matches) != 1:
                raise PalimpsestError(f"experiment {exp_id!r} {'is ambiguous' if matches else 'not found'}",
                                      expected="an experiment id (or unique prefix) from `palimpsest runs`",
                                      got=exp_id, fix="known: " + ", ".join(r["id"] for r in rows[-5:]))
            pick = matches[0]
        spec = self.conn.execute("SELECT spec_yaml FROM experiments WHERE id=?", (pick["id"],)).fetchone()[0]
        return dict(pick, spec_yaml=spec)

    # -- unlearning: stored models and the ledger of forget requests ---------------------------
    def model_entry(self, model_id: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM models WHERE id=?", (model_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def add_model(self, model_id: str, exp_id: str, seed: int, role: str, path: str, seconds: float,
                  info: dict) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?)",
                      (model_id, exp_id, seed, role, path, seconds, json.dumps(info), time.time()))

    def ledger_open(self, entry_id: str, exp_id: str, source: str, seed: int, request: dict, forget_key: str,
                    method: str, label: str, settings: dict) -> None:
        """Record a request before its method runs, so a crash leaves a visible record."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (entry_id, exp_id, source, seed, json.dumps(request), forget_key, method, label,
                       json.dumps(settings), "running", time.time(), None, None, None, None))

    def ledger_close(self, entry_id: str, status: str, seconds: float | None = None, audit: dict | None = None,
                     error: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE ledger SET status=?, finished=?, seconds=?, audit_json=?, error=? WHERE id=?",
                      (status, time.time(), seconds, json.dumps(audit) if audit is not None else None, error,
                       entry_id))

    def ledger(self, exp_id: str | None = None) -> list[dict]:
        query = "SELECT * FROM ledger" + (" WHERE experiment_id=?" if exp_id else "") + " ORDER BY created"
        cur = self.conn.execute(query, (exp_id,) if exp_id else ())
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for r in rows:
            r["request"] = json.loads(r.pop("request_json"))
            r["settings"] = json.loads(r.pop("settings_json"))
            audit = r.pop("audit_json")
            r["audit"] = json.loads(audit) if audit is not None else None
        return rows

    def latest_unfinished(self, spec_hash: str) -> str | None:
        row = self.conn.execute("SELECT id FROM experiments WHERE spec_hash=? AND status!='finished' "
                                "ORDER BY created DESC LIMIT 1", (spec_hash,)).fetchone()
        return row[0] if row else None

    # -- runs ---------------------------------------------------------------------------------
    def run(self, run_id: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def runs(self, exp_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM runs WHERE experiment_id=? ORDER BY created", (exp_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def create_run(self, run_id: str, exp_id: str, label: str, strategy: str, settings: dict,
                   training: dict, seed: int, stream: dict, schedule: list, train_data: list[tuple]) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (run_id, exp_id, label, strategy, json.dumps(settings), json.dumps(training), seed,
                       "running", json.dumps(stream), json.dumps(schedule), time.time(), None, None))
            c.executemany("INSERT INTO train_data VALUES (?,?,?,?,?)",
                          [(run_id, pos, task, split, to_blob(idx)) for pos, task, split, idx in train_data])

    def set_run_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET status=?, finished=?, error=? WHERE id=?",
                      (status, time.time() if status == "finished" else None, error, run_id))

    def record_step(self, run_id: str, step: int, tasks: list[int], stats: dict[str, Any],
                    accuracy: dict[str, np.ndarray], predictions: dict[str, np.ndarray],
                    checkpoint: str | None, test_set: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?)",
                      (run_id, step, json.dumps(tasks), stats.get("train_seconds"), stats.get("eval_seconds"),
                       stats.get("mean_loss"), stats.get("n_examples"), checkpoint))
            c.executemany("INSERT OR REPLACE INTO accuracy VALUES (?,?,?,?,?)",
                          [(run_id, step, t, view, None if np.isnan(v) else float(v))
                           for view, accs in accuracy.items() for t, v in enumerate(accs)])
            c.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?)",
                          [(run_id, step, view, to_blob(p.astype(np.int16))) for view, p in predictions.items()])
            if test_set is not None:
                c.execute("INSERT OR REPLACE INTO test_sets VALUES (?,?,?)",
                          (run_id, to_blob(test_set[0].astype(np.int16)), to_blob(test_set[1].astype(np.int16))))

    def finished_steps(self, run_id: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT step FROM steps WHERE run_id=? ORDER BY step", (run_id,))]

    def save_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?)",
                          [(run_id, k, None if v is None or np.isnan(v) else float(v)) for k, v in metrics.items()])

    def metrics(self, run_id: str) -> dict[str, float]:
        return {k: (np.nan if v is None else v) for k, v in
                self.conn.execute("SELECT name, value FROM metrics WHERE run_id=?", (run_id,))}

    def steps(self, run_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM steps WHERE run_id=? ORDER BY step", (run_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def train_indices(self, run_id: str) -> list[dict]:
        rows = self.conn.execute("SELECT position, task, split, indices FROM train_data WHERE run_id=? "
                                 "ORDER BY position", (run_id,))
        return [{"position": p, "task": t, "split": s, "indices": from_blob(b)} for p, t, s, b in rows]

    # -- records for metrics and reports ------------------------------------------------------
    def record(self, run_id: str) -> RunRecord:
        run = self.run(run_id)
        if run is None:
            raise PalimpsestError(f"run {run_id!r} not found", expected="a run id of this results database",
                                  got=run_id, fix="list runs with `palimpsest runs`")
        n_tasks = json.loads(run["stream_json"])["n_tasks"]
        steps = [s for s in self.steps(run_id) if s["step"] != INITIAL_STEP]
        acc: dict[str, np.ndarray] = {}
        initial: dict[str, np.ndarray] = {}
        for view in ("class", "task"):
            m = np.full((len(steps), n_tasks), np.nan)
            init = np.full(n_tasks, np.nan)
            for step, task, value in self.conn.execute(
                    "SELECT step, task, value FROM accuracy WHERE run_id=? AND view=?", (run_id, view)):
                target = init if step == INITIAL_STEP else (m[step] if step < len(steps) else None)
                if target is not None:
                    target[task] = np.nan if value is None else value
            acc[view] = m
            initial[view] = init
        preds: dict[str, list[np.ndarray]] = {"class": [], "task": []}
        for step, view, blob in self.conn.execute(
                "SELECT step, view, labels FROM predictions WHERE run_id=? AND step>=0 ORDER BY step", (run_id,)):
            preds[view].append(from_blob(blob).astype(np.int64))
        ts = self.conn.execute("SELECT targets, test_task FROM test_sets WHERE run_id=?", (run_id,)).fetchone()
        targets, test_task = (from_blob(ts[0]).astype(np.int64), from_blob(ts[1]).astype(np.int64)) if ts else (None, None)
        return RunRecord(strategy=run["label"], seed=run["seed"], acc=acc,
                         step_tasks=[json.loads(s["tasks_json"]) for s in steps], initial=initial,
                         predictions=preds if targets is not None else None, targets=targets, test_task=test_task,
                         extra={"run_id": run_id, "strategy_name": run["strategy"], "status": run["status"],
                                "train_seconds": sum(s["train_seconds"] or 0 for s in steps)})
