"""The results database's schema, versioned with SQLite's `user_version`.

Version 1 is the layout palimpsest 0.1.0 wrote (no user_version); `migrate.py` upgrades it in place.
Every insert in the store names its columns, so adding a column never shifts values.
"""
from __future__ import annotations

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, spec_yaml TEXT NOT NULL, spec_hash TEXT NOT NULL,
  status TEXT NOT NULL, created REAL NOT NULL, finished REAL, palimpsest_version TEXT, heartbeat REAL, owner TEXT);
CREATE TABLE IF NOT EXISTS streams (
  digest TEXT PRIMARY KEY, description_json TEXT NOT NULL, test_path TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stream_data (
  digest TEXT NOT NULL, position INTEGER NOT NULL, task INTEGER NOT NULL, split TEXT NOT NULL, indices BLOB NOT NULL,
  PRIMARY KEY (digest, position));
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL REFERENCES experiments(id), label TEXT NOT NULL,
  strategy TEXT NOT NULL, settings_json TEXT NOT NULL, training_json TEXT NOT NULL, seed INTEGER NOT NULL,
  status TEXT NOT NULL, stream_digest TEXT NOT NULL, schedule_json TEXT NOT NULL, folder TEXT NOT NULL,
  state_format INTEGER NOT NULL DEFAULT 2, created REAL NOT NULL, finished REAL, error TEXT);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL REFERENCES runs(id), step INTEGER NOT NULL, tasks_json TEXT NOT NULL,
  train_seconds REAL, eval_seconds REAL, mean_loss REAL, n_examples INTEGER,
  model_path TEXT, state_path TEXT, predictions_path TEXT, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS accuracy (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, task INTEGER NOT NULL, view TEXT NOT NULL, value REAL,
  PRIMARY KEY (run_id, step, task, view));
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS models (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, seed INTEGER NOT NULL, role TEXT NOT NULL,
  path TEXT NOT NULL, seconds REAL, info_json TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
  id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, source TEXT NOT NULL, seed INTEGER NOT NULL,
  request_json TEXT NOT NULL, forget_key TEXT NOT NULL, method TEXT NOT NULL, label TEXT NOT NULL,
  settings_json TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL, finished REAL, seconds REAL,
  audit_json TEXT, report_json TEXT, outputs_path TEXT, error TEXT);
"""

INITIAL_STEP = -1  # the evaluation of the untrained model

__all__ = ["INITIAL_STEP", "SCHEMA", "SCHEMA_VERSION"]
