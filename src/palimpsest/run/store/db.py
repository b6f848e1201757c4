"""The results database: SQLite in WAL mode under `<root>/results.sqlite`, with array and checkpoint
files beside it. `ResultsDB` opens (and, for a folder written by an older palimpsest, migrates) the
store and answers every read; writes go through the single `Writer` (writer.py), one transaction
per record, after the files the record names are on disk.

Layout of a results folder:

    results.sqlite              experiments, runs, steps, accuracies, metrics, streams, models, ledger
    jobs/<hash of job id>/      each job's own folder: model and resume checkpoints, predictions
    streams/<digest>/test.npz   a stream's test labels and test-experience ids, once per stream
    models/                     models shared by unlearning experiments (originals, retrained references)
    reports/<experiment>/       HTML reports and CSV exports

Every path in the database is relative to the root, so a copied or moved folder still opens.
"""
from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ...core.errors import PalimpsestError
from ...evaluate.records import RunRecord
from .files import absolute, load_arrays
from .schema import INITIAL_STEP, SCHEMA, SCHEMA_VERSION

LEASE_SECONDS = 60.0   # a "running" experiment whose heartbeat is older than this is shown as crashed
DB_FILE = "results.sqlite"


def to_blob(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def from_blob(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def _rows(cur: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


class ResultsDB:
    """All experiments under one folder (see the module docstring). `create=False` opens an
    existing store only: a missing folder or database is an error, and nothing is created."""

    def __init__(self, root: str | Path = "palimpsest-results", create: bool = True, check: bool = True) -> None:
        self.root = Path(root)
        self.path = self.root / DB_FILE
        if not create and not self.path.is_file():
            raise PalimpsestError(f"no results database in {self.root}",
                                  expected=f"a folder holding {DB_FILE} (made by `palimpsest run`)",
                                  got=str(self.root.resolve()),
                                  fix="pass --root with the folder your runs wrote to, or run an experiment first")
        if self.root.exists() and not self.root.is_dir():
            raise PalimpsestError(f"the results root {self.root} is a file", expected="a folder (or a path to create one)",
                                  got=str(self.root), fix="pass --root with a folder")
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout=60000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if check:
                self.check_integrity(quick=True)
            self._open_schema()
        except sqlite3.DatabaseError as err:
            if hasattr(self, "conn"):
                self.conn.close()
            raise damaged(self.path, str(err)) from None

    def check_integrity(self, quick: bool = False) -> None:
        """Raise a PalimpsestError naming what is damaged unless SQLite's integrity check passes
        (`quick`: the fast check every open runs; otherwise the full one of `palimpsest doctor`)."""
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]
        except sqlite3.DatabaseError as err:
            raise damaged(self.path, str(err)) from None
        if rows != ["ok"]:
            raise damaged(self.path, "; ".join(rows[:3]))

    def _open_schema(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and "experiments" in tables:
            from .migrate import migrate_v1
            migrate_v1(self)
        elif version > SCHEMA_VERSION:
            raise PalimpsestError(f"{self.path} was written by a newer palimpsest (schema {version})",
                                  expected=f"schema {SCHEMA_VERSION} or older", got=version,
                                  fix="upgrade palimpsest (pip install -U palimpsest) to open this folder")
        elif version < SCHEMA_VERSION:
            with self.transaction() as c:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def file(self, stored: str | None) -> Path | None:
        """A path stored in the database, resolved against the root."""
        return absolute(self.root, stored)

    # -- experiments --------------------------------------------------------------------------
    def experiments(self) -> list[dict]:
        rows = _rows(self.conn.execute("SELECT id, kind, name, status, created, spec_hash, heartbeat FROM experiments "
                                       "ORDER BY created"))
        for r in rows:
            r["status"] = effective_status(r["status"], r.pop("heartbeat"))
        return rows

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

    def latest_unfinished(self, spec_hash: str) -> str | None:
        row = self.conn.execute("SELECT id FROM experiments WHERE spec_hash=? AND status!='finished' "
                                "ORDER BY created DESC LIMIT 1", (spec_hash,)).fetchone()
        return row[0] if row else None

    # -- runs ---------------------------------------------------------------------------------
    _RUN = ("SELECT runs.*, streams.description_json AS stream_json, experiments.status AS experiment_status, "
            "experiments.heartbeat AS heartbeat FROM runs LEFT JOIN streams ON streams.digest = runs.stream_digest "
            "LEFT JOIN experiments ON experiments.id = runs.experiment_id")

    def _run_rows(self, where: str, args: tuple) -> list[dict]:
        rows = _rows(self.conn.execute(f"{self._RUN} WHERE {where} ORDER BY runs.created", args))
        for r in rows:
            heartbeat, exp_status = r.pop("heartbeat"), r.pop("experiment_status")
            if r["status"] == "running" and effective_status(exp_status or "running", heartbeat) == "crashed":
                r["status"] = "crashed"
        return rows

    def run(self, run_id: str) -> dict | None:
        rows = self._run_rows("runs.id=?", (run_id,))
        return rows[0] if rows else None

    def runs(self, exp_id: str) -> list[dict]:
        return self._run_rows("runs.experiment_id=?", (exp_id,))

    def finished_steps(self, run_id: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT step FROM steps WHERE run_id=? ORDER BY step", (run_id,))]

    def steps(self, run_id: str) -> list[dict]:
        return _rows(self.conn.execute("SELECT * FROM steps WHERE run_id=? ORDER BY step", (run_id,)))

    def metrics(self, run_id: str) -> dict[str, float]:
        return {k: (np.nan if v is None else v) for k, v in
                self.conn.execute("SELECT name, value FROM metrics WHERE run_id=?", (run_id,))}

    def stream(self, digest: str) -> dict | None:
        rows = _rows(self.conn.execute("SELECT * FROM streams WHERE digest=?", (digest,)))
        return rows[0] if rows else None

    def has_stream(self, digest: str) -> bool:
        return self.conn.execute("SELECT 1 FROM streams WHERE digest=?", (digest,)).fetchone() is not None

    def train_indices(self, run_id: str) -> list[dict]:
        """Which dataset examples each training experience of the run's stream holds."""
        run = self.run(run_id)
        if run is None:
            return []
        rows = self.conn.execute("SELECT position, task, split, indices FROM stream_data WHERE digest=? "
                                 "ORDER BY position", (run["stream_digest"],))
        return [{"position": p, "task": t, "split": s, "indices": from_blob(b)} for p, t, s, b in rows]

    # -- records for metrics and reports ------------------------------------------------------
    def record(self, run_id: str) -> RunRecord:
        run = self.run(run_id)
        if run is None:
            raise PalimpsestError(f"run {run_id!r} not found", expected="a run id of this results database",
                                  got=run_id, fix="list runs with `palimpsest runs`")
        n_tasks = json.loads(run["stream_json"])["n_tasks"]
        steps = self.steps(run_id)
        trained = [s for s in steps if s["step"] != INITIAL_STEP]
        acc: dict[str, np.ndarray] = {}
        initial: dict[str, np.ndarray] = {}
        for view in ("class", "task"):
            m = np.full((len(trained), n_tasks), np.nan)
            init = np.full(n_tasks, np.nan)
            for step, task, value in self.conn.execute(
                    "SELECT step, task, value FROM accuracy WHERE run_id=? AND view=?", (run_id, view)):
                target = init if step == INITIAL_STEP else (m[step] if step < len(trained) else None)
                if target is not None:
                    target[task] = np.nan if value is None else value
            acc[view] = m
            initial[view] = init
        preds: dict[str, list[np.ndarray]] | None = {"class": [], "task": []}
        for s in trained:
            path = self.file(s["predictions_path"])
            if path is None or not path.is_file():
                preds = None
                break
            arrays = load_arrays(path)
            for view in preds:
                preds[view].append(arrays[view].astype(np.int64))
        stream = self.stream(run["stream_digest"]) or {}
        test = self.file(stream.get("test_path"))
        targets = test_task = None
        if test is not None and test.is_file():
            arrays = load_arrays(test)
            targets, test_task = arrays["targets"].astype(np.int64), arrays["test_task"].astype(np.int64)
        return RunRecord(strategy=run["label"], seed=run["seed"], acc=acc,
                         step_tasks=[json.loads(s["tasks_json"]) for s in trained], initial=initial,
                         predictions=preds if targets is not None else None, targets=targets, test_task=test_task,
                         extra={"run_id": run_id, "strategy_name": run["strategy"], "status": run["status"],
                                "train_seconds": sum(s["train_seconds"] or 0 for s in trained)})

    # -- unlearning: stored models and the ledger of forget requests ---------------------------
    def model_entry(self, model_id: str) -> dict | None:
        rows = _rows(self.conn.execute("SELECT * FROM models WHERE id=?", (model_id,)))
        return rows[0] if rows else None

    def stored_model(self, model_id: str) -> dict | None:
        """The model entry `model_id` when its file is on disk (None: never stored, or its file is gone,
        so it has to be built again)."""
        entry = self.model_entry(model_id)
        return entry if entry and self.file(entry["path"]).is_file() else None

    def model_entries(self, prefix: str) -> list[dict]:
        """Stored models whose id starts with `prefix`."""
        return _rows(self.conn.execute("SELECT * FROM models WHERE substr(id, 1, ?) = ?", (len(prefix), prefix)))

    def _ledger_rows(self, where: str, args: tuple) -> list[dict]:
        rows = _rows(self.conn.execute(f"SELECT * FROM ledger{where} ORDER BY created", args))
        for r in rows:
            r["request"] = json.loads(r.pop("request_json"))
            r["settings"] = json.loads(r.pop("settings_json"))
            for key in ("audit", "report"):
                text = r.pop(f"{key}_json")
                r[key] = json.loads(text) if text is not None else None
        return rows

    def ledger(self, exp_id: str | None = None) -> list[dict]:
        return self._ledger_rows(" WHERE experiment_id=?", (exp_id,)) if exp_id else self._ledger_rows("", ())

    def ledger_entry(self, entry_id: str) -> dict | None:
        rows = self._ledger_rows(" WHERE id=?", (entry_id,))
        return rows[0] if rows else None

    def size_bytes(self) -> int:
        """Bytes of the database file and its write-ahead log."""
        return sum(p.stat().st_size for p in self.root.glob(DB_FILE + "*") if p.is_file())


def damaged(path: Path, detail: str) -> PalimpsestError:
    """The error for a database SQLite cannot read or whose integrity check fails: nothing is
    written to it, and it says how to recover."""
    return PalimpsestError(f"the results database {path} is damaged ({detail})",
                           expected="an intact SQLite database", got=str(path),
                           fix=f"nothing was written to it. Restore it from a backup, or recover what SQLite still reads "
                               f"into a new file (`sqlite3 {path} .recover | sqlite3 recovered.sqlite`) and put that in "
                               f"its place; `palimpsest doctor --root {path.parent}` checks a folder")


def effective_status(status: str, heartbeat: float | None, now: float | None = None) -> str:
    """"crashed" for a running experiment whose process stopped sending heartbeats (it was killed
    or its machine went down), else the stored status."""
    if status == "running" and heartbeat is not None and (now or time.time()) - heartbeat > LEASE_SECONDS:
        return "crashed"
    return status


__all__ = ["damaged", "DB_FILE", "INITIAL_STEP", "LEASE_SECONDS", "ResultsDB", "effective_status", "from_blob", "to_blob"]
