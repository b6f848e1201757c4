"""The agent-memory store's SQLite schema, as a list of migrations (`PRAGMA user_version` = how many
have run). A new store runs them all; an older store runs the ones it lacks, in one write transaction;
a store from a newer palimpsest is refused. Every insert names its columns.

  1  memories (text, scope ids, metadata, vector), history, meta; one memory per text and scope
  2  forgetting state: last recall, strength, recalls, trust, token count, LSH bucket; the metadata
     keys seen (so a filter on an unknown field is an error, not an empty answer)
"""
from __future__ import annotations

import json
import sqlite3

from .text import count_tokens

STORE_KIND = "palimpsest agent memory"


def _v1(c: sqlite3.Connection) -> None:
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("""CREATE TABLE memories (
        n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, text_key TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '', agent_id TEXT NOT NULL DEFAULT '', run_id TEXT NOT NULL DEFAULT '',
        metadata_json TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL, vector BLOB NOT NULL)""")
    c.execute("CREATE UNIQUE INDEX memories_text ON memories (user_id, agent_id, run_id, text_key)")
    c.execute("CREATE INDEX memories_agent ON memories (agent_id)")
    c.execute("CREATE INDEX memories_run ON memories (run_id)")
    c.execute("""CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT, n INTEGER, event TEXT NOT NULL, old_text TEXT,
        new_text TEXT, at REAL NOT NULL, wall REAL NOT NULL, details_json TEXT NOT NULL DEFAULT '{}')""")
    c.execute("CREATE INDEX history_memory ON history (memory_id)")
    c.execute("INSERT INTO meta (key, value) VALUES ('store', ?)", (STORE_KIND,))


def _v2(c: sqlite3.Connection) -> None:
    for column in ("last_recalled REAL NOT NULL DEFAULT 0", "strength REAL NOT NULL DEFAULT 1",
                   "recalls INTEGER NOT NULL DEFAULT 0", "trust REAL NOT NULL DEFAULT 1",
                   "tokens INTEGER NOT NULL DEFAULT 0", "bucket INTEGER"):
        c.execute(f"ALTER TABLE memories ADD COLUMN {column}")
    c.execute("CREATE INDEX memories_bucket ON memories (bucket) WHERE bucket IS NOT NULL")
    c.execute("CREATE TABLE metadata_keys (key TEXT PRIMARY KEY)")
    keys: set[str] = set()
    for n, text, updated, meta in c.execute("SELECT n, text, updated, metadata_json FROM memories").fetchall():
        c.execute("UPDATE memories SET last_recalled = ?, tokens = ? WHERE n = ?", (updated, count_tokens(text), n))
        keys.update(json.loads(meta))
    c.executemany("INSERT OR IGNORE INTO metadata_keys (key) VALUES (?)", [(k,) for k in sorted(keys)])


MIGRATIONS = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "STORE_KIND"]
