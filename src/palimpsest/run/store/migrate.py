"""Upgrade a results folder written by palimpsest 0.1.0 (schema 1) to the current schema, in place.

What changes (data are kept, nothing is recomputed except identifiers):
- experiments gain their `kind` (learn, or unlearn for specs with forget requests and for
  `palimpsest forget` experiments, whose stored spec is rewritten in the current format) and their
  spec hash is recomputed with the current spec format, so `--resume` finds them;
- checkpoint and model paths become relative to the results root (0.1.0 stored them as given,
  relative to the working directory of the run); the files stay where they are;
- each run's stream indices move to the `streams` tables, once per stream;
- predictions move from SQLite blobs to one int32 .npz file per step beside the run's checkpoints,
  and each stream's test labels to `streams/<digest>/test.npz`;
- runs remember that their resume state has the 0.1.0 layout (state_format 1), which strategies
  upgrade when they resume.

Files are written before the database changes, and the database changes in one transaction, so an
interrupted migration leaves the folder as it was (and is simply run again).
"""
from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from .db import from_blob, to_blob
from .files import save_arrays
from .schema import SCHEMA, SCHEMA_VERSION


def _tail(stored: str | None, anchor: str) -> str | None:
    """The part of a 0.1.0 path from its `anchor` folder on ("checkpoints/...", "models/..."),
    which is where the file sits under the results root."""
    if not stored:
        return None
    parts = PurePosixPath(Path(stored).as_posix()).parts
    if anchor in parts:
        i = len(parts) - 1 - parts[::-1].index(anchor)
        return "/".join(parts[i:])
    return None


def _upgrade_spec(spec_yaml: str) -> tuple[str, str, str]:
    """(kind, spec yaml in the current format, spec hash) of a stored 0.1.0 spec."""
    from ..spec import parse_spec
    data = yaml.safe_load(spec_yaml) or {}
    if "forget_from" in data:   # `palimpsest forget RUN ...`: an unlearning spec whose source is a stored run
        data = {"kind": "unlearn", "name": data.get("name", "forget"),
                "source": {"run": data["forget_from"], "step": data.get("step")},
                "forget": data.get("forget", []), "methods": data.get("methods", []),
                "audits": {"population_mia": True}}
    elif "forget" in data:
        data = {"kind": "unlearn", **data}
    else:
        data = {"kind": "learn", **data}
    try:
        spec = parse_spec(data, "stored spec")
    except Exception:  # noqa: BLE001  (an unparsable stored spec keeps its text; it can still be reported)
        return data["kind"], yaml.safe_dump(data, sort_keys=False), hashlib.sha256(spec_yaml.encode()).hexdigest()[:16]
    return spec.kind, spec.to_yaml(), spec.digest()


def migrate_v1(db) -> None:
    """Migrate in one write transaction: a second process that opens the folder meanwhile waits for
    it, then finds the current schema and does nothing."""
    conn = db.conn
    conn.execute("PRAGMA foreign_keys=OFF")   # tables are renamed and rebuilt; references are restored below
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            _migrate(db)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("VACUUM")


def _migrate(db) -> None:
    conn, root = db.conn, db.root
    # -- files first --------------------------------------------------------------------------
    runs = [dict(zip(("id", "stream_json"), r)) for r in conn.execute("SELECT id, stream_json FROM runs")]
    digests, stream_rows, test_paths = {}, {}, {}
    for run in runs:
        data = conn.execute("SELECT position, task, split, indices FROM train_data WHERE run_id=? ORDER BY position",
                            (run["id"],)).fetchall()
        h = hashlib.sha256(b"v1:" + run["stream_json"].encode())
        for pos, task, split, blob in data:
            h.update(f"{pos}:{task}:{split}:".encode())
            h.update(from_blob(blob).astype(np.int64).tobytes())
        digest = "v1" + h.hexdigest()[:14]
        digests[run["id"]] = digest
        stream_rows.setdefault(digest, (run["stream_json"], data))
        test = conn.execute("SELECT targets, test_task FROM test_sets WHERE run_id=?", (run["id"],)).fetchone()
        if test is not None and digest not in test_paths:
            rel = f"streams/{digest}/test.npz"
            save_arrays(root / rel, targets=from_blob(test[0]).astype(np.int32),
                        test_task=from_blob(test[1]).astype(np.int32))
            test_paths[digest] = rel
    folders, step_paths = {}, []
    for run_id, step, checkpoint in conn.execute("SELECT run_id, step, checkpoint FROM steps").fetchall():
        model = _tail(checkpoint, "checkpoints")
        folder = str(PurePosixPath(model).parent) if model else f"checkpoints/{run_id.replace('/', '__')}"
        folders.setdefault(run_id, folder)
        state = f"{folder}/state_step{step}.safetensors"
        step_paths.append((run_id, step, model, state if (root / state).is_file() else None))
    predictions = {}
    for run_id, step, view, blob in conn.execute("SELECT run_id, step, view, labels FROM predictions").fetchall():
        predictions.setdefault((run_id, step), {})[view] = from_blob(blob).astype(np.int32)
    prediction_paths = {}
    for (run_id, step), arrays in predictions.items():
        folder = folders.get(run_id, f"checkpoints/{run_id.replace('/', '__')}")
        rel = f"{folder}/predictions_step{step}.npz"
        save_arrays(root / rel, **arrays)
        prediction_paths[(run_id, step)] = rel
    experiments = conn.execute("SELECT id, spec_yaml FROM experiments").fetchall()
    upgraded = {exp_id: _upgrade_spec(spec_yaml) for exp_id, spec_yaml in experiments}
    # -- then the database (the caller holds the transaction) -------------------------------------
    for name in ("experiments", "runs", "steps", "models", "ledger"):
        conn.execute(f"ALTER TABLE {name} RENAME TO {name}_v1")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    for (exp_id, name, spec_yaml, spec_hash, status, created, finished, version) in conn.execute(
            "SELECT id, name, spec_yaml, spec_hash, status, created, finished, palimpsest_version "
            "FROM experiments_v1").fetchall():
        kind, new_yaml, new_hash = upgraded[exp_id]
        conn.execute("INSERT INTO experiments (id, kind, name, spec_yaml, spec_hash, status, created, finished, "
                     "palimpsest_version) VALUES (?,?,?,?,?,?,?,?,?)",
                     (exp_id, kind, name, new_yaml, new_hash, status, created, finished, version))
    for digest, (stream_json, data) in stream_rows.items():
        conn.execute("INSERT INTO streams (digest, description_json, test_path, created) VALUES (?,?,?,?)",
                     (digest, stream_json, test_paths.get(digest), 0.0))
        conn.executemany("INSERT INTO stream_data (digest, position, task, split, indices) VALUES (?,?,?,?,?)",
                         [(digest, pos, task, split, to_blob(from_blob(blob).astype(np.int64)))
                          for pos, task, split, blob in data])
    for r in conn.execute("SELECT id, experiment_id, label, strategy, settings_json, training_json, seed, status, "
                          "schedule_json, created, finished, error FROM runs_v1").fetchall():
        run_id = r[0]
        conn.execute("INSERT INTO runs (id, experiment_id, label, strategy, settings_json, training_json, seed, "
                     "status, stream_digest, schedule_json, folder, state_format, created, finished, error) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (*r[:8], digests[run_id], r[8], folders.get(run_id, f"checkpoints/{run_id.replace('/', '__')}"),
                      1, *r[9:]))
    paths = {(run_id, step): (model, state) for run_id, step, model, state in step_paths}
    for r in conn.execute("SELECT run_id, step, tasks_json, train_seconds, eval_seconds, mean_loss, n_examples "
                          "FROM steps_v1").fetchall():
        model, state = paths.get((r[0], r[1]), (None, None))
        conn.execute("INSERT INTO steps (run_id, step, tasks_json, train_seconds, eval_seconds, mean_loss, "
                     "n_examples, model_path, state_path, predictions_path) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (*r, model, state, prediction_paths.get((r[0], r[1]))))
    for r in conn.execute("SELECT id, experiment_id, seed, role, path, seconds, info_json, created "
                          "FROM models_v1").fetchall():
        conn.execute("INSERT INTO models (id, experiment_id, seed, role, path, seconds, info_json, created) "
                     "VALUES (?,?,?,?,?,?,?,?)", (*r[:4], _tail(r[4], "models") or r[4], *r[5:]))
    conn.execute("INSERT INTO ledger (id, experiment_id, source, seed, request_json, forget_key, method, label, "
                 "settings_json, status, created, finished, seconds, audit_json, error) "
                 "SELECT id, experiment_id, source, seed, request_json, forget_key, method, label, settings_json, "
                 "status, created, finished, seconds, audit_json, error FROM ledger_v1")
    for name in ("experiments", "runs", "steps", "models", "ledger"):
        conn.execute(f"DROP TABLE {name}_v1")
    for name in ("predictions", "test_sets", "train_data"):
        conn.execute(f"DROP TABLE IF EXISTS {name}")


__all__ = ["migrate_v1"]
