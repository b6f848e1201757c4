"""A persistent memory store for agents that forgets on purpose: `MemoryStore`.

The verbs mem0 users know (add, search, get, get_all, update, delete, delete_all, history, reset) plus
`forget`, a forgetting pass of the store's policy. Memories are scoped by user_id / agent_id / run_id and
carry metadata that searches can filter on.

    store = MemoryStore("memory.sqlite", policy="ebbinghaus", clock=SimulatedClock())
    m = store.add("Alice is allergic to peanuts", user_id="alice", metadata={"topic": "health"})
    hits = store.search("what can't alice eat?", user_id="alice")

Persistence: one SQLite file in WAL mode, schema versioned with migrations (schema.py), one transaction
per change (`BEGIN IMMEDIATE`, busy timeout, so concurrent processes queue instead of failing), fsync'd
commits by default (an acknowledged write survives a kill), and a `history` row for every change. The
history doubles as the change feed that keeps each process's in-memory vector and BM25 indexes in step
with what other processes wrote. Identical text in one scope is one memory: adding it again reinforces
it and never deletes it (mem0 users report the opposite).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.errors import PalimpsestError, close_matches, did_you_mean
from .clock import SystemClock
from .embed import EMBEDDERS, Embedder
from .index import VECTOR_INDEXES
from .policies import Memory, MemoryPolicy, NewMemory, Plan
from .registries import MEMORY_POLICIES, RETRIEVERS
from .retrieve import BM25Index, Query
from .schema import MIGRATIONS, SCHEMA_VERSION, STORE_KIND
from .text import count_tokens, text_key

MAX_TEXT = 20_000
MAX_LIMIT = 1000
MAX_SCOPE = 200
KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
FIELDS = ("created", "updated", "last_recalled", "strength", "recalls", "trust", "tokens")   # filterable columns
OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "IN", "nin": "NOT IN"}
INDEXED_EVENTS = ("ADD", "MERGE", "UPDATE", "DELETE", "FORGET", "EVICT", "SUPERSEDE", "CONSOLIDATE", "RESET")
COLUMNS = ("n, id, text, user_id, agent_id, run_id, metadata_json, created, updated, last_recalled, strength, "
           "recalls, trust, tokens, bucket")


class MemoryStoreError(PalimpsestError, ValueError):
    """Bad input to the agent-memory store, or a store file it cannot open."""


class UnknownMemoryError(MemoryStoreError, KeyError):
    """A memory id the store does not hold."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _memory(row: tuple) -> Memory:
    n, id_, text, user, agent, run, meta, created, updated, recalled, strength, recalls, trust, tokens, bucket = row
    return Memory(id=id_, text=text, user_id=user or None, agent_id=agent or None, run_id=run or None,
                  metadata=json.loads(meta), created=created, updated=updated, last_recalled=recalled,
                  strength=strength, recalls=recalls, trust=trust, tokens=tokens, bucket=bucket, n=n)


class MemoryStore:
    """An agent-memory store in one SQLite file (see the module docstring).

    embedder   name ("hashing", "minilm") or an object with `name`, `dim`, `identity()`, `settings()`,
               `embed(texts)`; default: the one the store was created with, else "hashing". A store
               refuses an embedder other than its own (vectors of two encoders do not compare).
    index      "exact" (default), "hnsw" or "faiss", with `index_settings`
    retriever  "hybrid" (default), "dense" or "bm25"
    policy     a registered name with `policy_settings`, or a `MemoryPolicy`; default: the store's own,
               else "ebbinghaus". A policy given by name is remembered by the store.
    clock      `SystemClock()` (default) or a `SimulatedClock`
    create     False: the file must exist (reading never creates a store)
    synchronous  "full" (default: each commit is on disk before it returns) or "normal" (faster; WAL
               still survives a killed process, not a power cut)
    """

    def __init__(self, path: str | Path = "palimpsest-memory.sqlite", *, embedder: Any = None,
                 index: str = "exact", index_settings: dict | None = None, retriever: str = "hybrid",
                 policy: Any = None, policy_settings: dict | None = None, clock: Any = None, create: bool = True,
                 synchronous: str = "full", busy_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        if self.path.is_dir():
            raise MemoryStoreError(f"the memory store path {self.path} is a folder", expected="a file path (made if "
                                   "missing)", got=str(self.path), fix="pass a file name, e.g. memory.sqlite")
        if not create and not self.path.is_file():
            raise MemoryStoreError(f"no memory store at {self.path}", expected="an existing store file",
                                   got=str(self.path.resolve()),
                                   fix="pass --store with the file your memories were added to, or add one first")
        if synchronous not in ("full", "normal"):
            raise MemoryStoreError("bad synchronous setting", expected="'full' or 'normal'", got=synchronous)
        RETRIEVERS.get(retriever)          # unknown names fail before any file is made
        VECTOR_INDEXES.get(index)
        if isinstance(policy, str):
            MEMORY_POLICIES.get(policy)
        if isinstance(embedder, str):
            EMBEDDERS.get(embedder)
        if not self.path.parent.exists():
            raise MemoryStoreError(f"the folder of {self.path} does not exist", expected="an existing folder",
                                   got=str(self.path.parent), fix="create the folder first")
        self.retriever = retriever
        try:
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
            if rows != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(rows[:3]))
            self._migrate()
        except sqlite3.DatabaseError as err:
            if hasattr(self, "conn"):
                self.conn.close()
            raise MemoryStoreError(f"{self.path} is not a readable memory store", expected="an SQLite memory store "
                                   "made by palimpsest", got=str(err), fix="nothing was written; pass another "
                                   "--store, or recover the file (sqlite3 FILE .recover) from a backup") from None
        try:
            self.embedder = self._open_embedder(embedder)
            self.policy = self._open_policy(policy, policy_settings)
            self.index = VECTOR_INDEXES.create(index, self.embedder.dim, **(index_settings or {}))
        except Exception:
            self.conn.close()
            raise
        self.bm25 = BM25Index()
        self._seen = 0
        self.from_snapshot = self._load_snapshot()     # whether the index came from a saved snapshot
        if not self.from_snapshot:
            self._rebuild()

    # ---- opening ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise MemoryStoreError(f"{self.path} was written by a newer palimpsest (memory schema {version})",
                                   expected=f"memory schema {SCHEMA_VERSION} or older", got=version,
                                   fix="upgrade palimpsest (pip install -U palimpsest) to open this store")
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if (version == 0 and tables) or (version > 0 and "meta" not in tables):
            raise MemoryStoreError(f"{self.path} is not a palimpsest memory store", expected="a memory store file "
                                   "(or a new path)", got=f"an SQLite file with tables {sorted(tables)[:5]}",
                                   fix="pass --store with a memory store file or a new file name (the results "
                                       "database of `palimpsest run` is a different file)")
        if version > 0:
            kind = self.conn.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
            if not kind or kind[0] != STORE_KIND:
                raise MemoryStoreError(f"{self.path} is not a palimpsest memory store", expected=STORE_KIND,
                                       got=kind[0] if kind else "no store kind", fix="pass another --store")
        if version == SCHEMA_VERSION:
            return
        with self._write() as c:      # the migration holds the write lock; a second process waits, then sees it done
            version = c.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                step(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _open_embedder(self, embedder: Any) -> Embedder:
        stored_name, stored_identity = self._meta("embedder"), self._meta("embedder_identity")
        stored_dim = self._meta("dim")
        if embedder is None:
            name = stored_name or "hashing"
            settings = json.loads(self._meta("embedder_settings") or "{}")
            embedder = EMBEDDERS.create(name, **settings)
        elif isinstance(embedder, str):
            embedder = EMBEDDERS.create(embedder)
        for attr in ("name", "dim", "identity", "settings", "embed"):
            if not hasattr(embedder, attr):
                raise MemoryStoreError("not an embedder", expected="an object with name, dim, identity(), "
                                       "settings() and embed(texts)", got=repr(embedder), fix="pass a name such as "
                                       "'hashing' or 'minilm'")
        if stored_dim is not None and int(stored_dim) != embedder.dim:
            raise MemoryStoreError(f"embedder {embedder.name!r} makes {embedder.dim}-dimensional vectors, but the "
                                   f"store {self.path} holds {stored_dim}-dimensional ones",
                                   expected=f"the store's embedder: {stored_identity}", got=embedder.identity(),
                                   fix="open the store with its own embedder (leave embedder out), or start a new "
                                       "store for the new embedder")
        if stored_identity is not None and stored_identity != embedder.identity():
            raise MemoryStoreError(f"the store {self.path} was written by another embedder",
                                   expected=stored_identity, got=embedder.identity(),
                                   fix="open the store with its own embedder (leave embedder out), or start a new "
                                       "store")
        if stored_identity is None:
            with self._write() as c:
                if c.execute("SELECT value FROM meta WHERE key = 'embedder_identity'").fetchone() is None:
                    c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                        ("store_id", uuid.uuid4().hex), ("embedder", embedder.name), ("embedder_identity", embedder.identity()),
                        ("embedder_settings", json.dumps(embedder.settings())), ("dim", str(embedder.dim))])
            if self._meta("embedder_identity") != embedder.identity():   # another process created it first
                return self._open_embedder(embedder)
        return embedder

    def _open_policy(self, policy: Any, settings: dict | None) -> MemoryPolicy:
        if isinstance(policy, MemoryPolicy):
            if settings:
                raise MemoryStoreError("policy_settings given with a policy object", expected="settings inside the "
                                       "object, or a policy name", got=settings)
            return policy
        if policy is None and settings is None and self._meta("policy"):
            return MEMORY_POLICIES.create(self._meta("policy"), **json.loads(self._meta("policy_settings") or "{}"))
        name = policy or self._meta("policy") or "ebbinghaus"
        made = MEMORY_POLICIES.create(name, **(settings or {}))
        wanted = (name, json.dumps(made.settings(), sort_keys=True))
        if (self._meta("policy"), self._meta("policy_settings")) != wanted:
            with self._write() as c:
                old = c.execute("SELECT value FROM meta WHERE key = 'policy'").fetchone()
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('policy', ?)", (wanted[0],))
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('policy_settings', ?)", (wanted[1],))
                self._log(c, None, None, "POLICY", old[0] if old else None, wanted[0], {"settings": made.settings()})
        return made

    # ---- transactions, history, the change feed --------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _log(self, c, memory_id, n, event, old_text, new_text, details=None, now=None) -> None:
        c.execute("INSERT INTO history (memory_id, n, event, old_text, new_text, at, wall, details_json) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (memory_id, n, event, old_text, new_text, self.clock.now() if now is None else now, time.time(),
                   json.dumps(details or {}, sort_keys=True)))

    def _rebuild(self) -> None:
        self.index.clear()
        self.bm25.clear()
        self.conn.execute("BEGIN")      # one snapshot: the rows and the history position agree
        try:
            self._seen = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()[0]
            rows = self.conn.execute("SELECT n, text, vector FROM memories").fetchall()
        finally:
            self.conn.execute("COMMIT")
        self._index_rows(rows)

    # ---- index snapshots (an hnsw graph is slow to rebuild) --------------------------------------

    @property
    def _snapshot(self) -> Path:
        return self.path.with_name(f"{self.path.name}.{self.index.name}-index.json")

    def _load_snapshot(self) -> bool:
        """Load the saved index and catch up through the history; False means rebuild instead."""
        if not hasattr(self.index, "load") or not self._snapshot.is_file():
            return False
        try:
            info = json.loads(self._snapshot.read_text())
            graph = self._snapshot.with_name(info["file"])
            if info["store_id"] != self._meta("store_id") or info["embedder"] != self.embedder.identity() or \
                    graph.stat().st_size != info["bytes"] or _sha256(graph) != info["sha256"] or \
                    not self.index.load(str(graph), info["index"]):
                return False
            self.conn.execute("BEGIN")
            try:
                if self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()[0] < info["seq"]:
                    return False        # a snapshot from the future of this file: not ours
                rows = self.conn.execute("SELECT n, text FROM memories").fetchall()
            finally:
                self.conn.execute("COMMIT")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            self.index.clear()
            return False
        for n, text in rows:
            self.bm25.add(n, text)
        self._seen = info["seq"]
        self._sync()
        return True

    def save_index(self) -> Path | None:
        """Save the index beside the store (done by `close()` for indexes that can), atomically."""
        if not hasattr(self.index, "save"):
            return None
        self._sync()
        graph = self.path.with_name(f"{self.path.name}.{self.index.name}-{os.getpid()}-{self._seen}.bin")
        info = {"store_id": self._meta("store_id"), "embedder": self.embedder.identity(), "seq": self._seen,
                "file": graph.name, "index": self.index.save(str(graph))}
        info["bytes"], info["sha256"] = graph.stat().st_size, _sha256(graph)
        temporary = self._snapshot.with_name(self._snapshot.name + f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(info))
        os.replace(temporary, self._snapshot)           # the commit point
        for old in self.path.parent.glob(f"{self.path.name}.{self.index.name}-*.bin"):
            if old.name != graph.name:
                old.unlink(missing_ok=True)
        return self._snapshot

    def _index_rows(self, rows: list[tuple]) -> None:
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        self.index.add(ids, np.stack([np.frombuffer(r[2], np.float32) for r in rows]))
        for n, text, _ in rows:
            self.bm25.add(n, text)

    def _sync(self) -> None:
        """Apply the changes made since this process last looked (by it or by others) to the indexes."""
        top = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()[0]
        if top <= self._seen:
            return
        marks = ",".join("?" * len(INDEXED_EVENTS))
        changes = self.conn.execute(f"SELECT seq, event, n FROM history WHERE seq > ? AND seq <= ? AND event IN "
                                    f"({marks}) ORDER BY seq", (self._seen, top, *INDEXED_EVENTS)).fetchall()
        if any(event == "RESET" for _, event, _ in changes):
            self._rebuild()
            return
        self._seen = top
        touched = sorted({n for _, _, n in changes if n is not None})
        rows = []
        for start in range(0, len(touched), 500):
            part = touched[start:start + 500]
            rows += self.conn.execute(f"SELECT n, text, vector FROM memories WHERE n IN ({','.join('?' * len(part))})",
                                      part).fetchall()
        present = {r[0] for r in rows}
        gone = np.asarray([n for n in touched if n not in present], np.int64)
        if len(gone):
            self.index.remove(gone)
            for n in gone.tolist():
                self.bm25.remove(n)
        self._index_rows(rows)

    # ---- validation ------------------------------------------------------------------------------

    @staticmethod
    def _text(text: Any, what: str = "text") -> str:
        if not isinstance(text, str):
            raise MemoryStoreError(f"a memory's {what} must be a string", expected="non-empty text",
                                   got=f"{type(text).__name__} {text!r}"[:120], fix="pass the text as a str")
        if not text.strip():
            raise MemoryStoreError(f"empty {what}", expected="text with at least one visible character",
                                   got=repr(text), fix=f"pass a non-empty {what}")
        if "\x00" in text or len(text) > MAX_TEXT:
            raise MemoryStoreError(f"bad {what}", expected=f"at most {MAX_TEXT} characters, no NUL character",
                                   got=f"{len(text)} characters", fix="split long text into several memories")
        return text

    @staticmethod
    def _scope(user_id: Any, agent_id: Any, run_id: Any) -> tuple[str, str, str]:
        out = []
        for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
            if value is None:
                out.append("")
                continue
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_SCOPE or \
                    any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise MemoryStoreError(f"bad {name}", expected=f"None or printable text of 1 to {MAX_SCOPE} "
                                       "characters", got=repr(value)[:120], fix=f"pass {name} as a short string")
            out.append(value)
        return out[0], out[1], out[2]

    @staticmethod
    def _metadata(metadata: Any) -> dict:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise MemoryStoreError("metadata must be a mapping", expected="a dict of field -> value",
                                   got=f"{type(metadata).__name__}", fix="pass metadata={'topic': 'food'}")
        for key, value in metadata.items():
            if not isinstance(key, str) or not KEY_PATTERN.match(key):
                raise MemoryStoreError(f"bad metadata field name {key!r}", expected="a name of letters, digits and "
                                       "_ (not starting with a digit), at most 64 characters", got=repr(key))
            if not (value is None or isinstance(value, (str, bool, int)) or
                    (isinstance(value, float) and math.isfinite(value))):
                raise MemoryStoreError(f"bad metadata value for {key!r}", expected="text, a finite number, true/false "
                                       "or null", got=repr(value)[:120], fix="store nested data as text (JSON)")
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise MemoryStoreError(f"metadata value for {key!r} is too long", expected=f"at most {MAX_TEXT} "
                                       "characters", got=f"{len(value)} characters")
        return dict(metadata)

    @staticmethod
    def _limit(limit: Any) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise MemoryStoreError("bad limit", expected=f"an integer in [1, {MAX_LIMIT}]", got=repr(limit))
        return limit

    def _id(self, memory_id: Any) -> tuple:
        if not isinstance(memory_id, str) or not ID_PATTERN.match(memory_id):
            raise UnknownMemoryError(f"unknown memory id {memory_id!r}", expected="a memory id: 32 hexadecimal "
                                     "characters, as add() returns", got=repr(memory_id)[:120],
                                     fix="list ids with get_all() (or `palimpsest memory list`)")
        row = self.conn.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        if row is None:
            raise UnknownMemoryError(f"unknown memory id {memory_id!r}", expected="the id of a stored memory",
                                     got=memory_id, fix="it may have been deleted or forgotten: see history(id); "
                                                        "list ids with get_all()")
        return row

    def _where(self, user_id, agent_id, run_id, filters) -> tuple[str, list]:
        """SQL conditions for scope ids (None = any) and metadata filters; unknown fields are errors."""
        clauses, args = [], []
        for column, value in zip(("user_id", "agent_id", "run_id"), self._scope(user_id, agent_id, run_id)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if filters is None:
            return (" AND ".join(clauses) or "1"), args
        if not isinstance(filters, dict):
            raise MemoryStoreError("filters must be a mapping", expected="{field: value} or {field: {op: value}}",
                                   got=repr(filters)[:120])
        known = {r[0] for r in self.conn.execute("SELECT key FROM metadata_keys")}
        for field, condition in filters.items():
            if field in ("user_id", "agent_id", "run_id"):
                raise MemoryStoreError(f"filter on {field}", expected=f"the {field}= argument", got=field,
                                       fix=f"pass {field}=... instead of a filter")
            if field in FIELDS:
                target = field
            elif isinstance(field, str) and field in known:
                target = f"json_extract(metadata_json, '$.{field}')"
            else:
                names = sorted(known | set(FIELDS))
                close = close_matches(field, names, n=3)
                raise MemoryStoreError(f"filter on unknown field {field!r}", expected=f"a metadata field of a stored "
                                       f"memory or one of {', '.join(FIELDS)}", got=repr(field),
                                       fix=did_you_mean(close) if close else
                                       f"fields in this store: {', '.join(names)}")
            ops = condition if isinstance(condition, dict) else {"eq": condition}
            if not ops:
                raise MemoryStoreError(f"empty condition for {field!r}", expected="{op: value}", got="{}")
            for op, value in ops.items():
                if op not in OPERATORS:
                    raise MemoryStoreError(f"unknown filter operator {op!r} on {field!r}",
                                           expected=f"one of {', '.join(OPERATORS)}", got=repr(op))
                values = value if op in ("in", "nin") else [value]
                if op in ("in", "nin") and (not isinstance(value, (list, tuple)) or not value):
                    raise MemoryStoreError(f"filter {field!r} {op} needs a list", expected="a non-empty list",
                                           got=repr(value)[:120])
                for v in values:
                    if not (v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))):
                        raise MemoryStoreError(f"bad filter value for {field!r}", expected="text, a finite number, "
                                               "true/false or null", got=repr(v)[:120])
                if value is None and op in ("eq", "ne"):
                    clauses.append(f"{target} IS {'NOT ' if op == 'ne' else ''}NULL")
                elif op in ("in", "nin"):
                    clauses.append(f"{target} {OPERATORS[op]} ({','.join('?' * len(values))})")
                    args += list(values)
                else:
                    clauses.append(f"{target} {OPERATORS[op]} ?")
                    args.append(value)
        return (" AND ".join(clauses) or "1"), args

    # ---- the verbs -------------------------------------------------------------------------------

    def add(self, text: str, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
            metadata: dict | None = None) -> Memory:
        """Store a memory and return it (with `event`: ADD, DUPLICATE or MERGE). The same text in the same
        scope is one memory: adding it again reinforces and updates it, never deletes it."""
        return self.add_many([text], user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata)[0]

    def add_many(self, texts: list[str], *, user_id: str | None = None, agent_id: str | None = None,
                 run_id: str | None = None, metadata: dict | None = None) -> list[Memory]:
        """Add several memories of one scope in one transaction (all or none)."""
        if not isinstance(texts, (list, tuple)) or not texts:
            raise MemoryStoreError("add_many needs a list of texts", expected="a non-empty list of strings",
                                   got=repr(texts)[:120])
        texts = [self._text(t) for t in texts]
        scope = self._scope(user_id, agent_id, run_id)
        metadata = self._metadata(metadata)
        vectors = self.embedder.embed(texts)
        out = []
        with self._write() as c:
            for text, vector in zip(texts, vectors):
                out.append(self._add_one(c, text, np.asarray(vector, np.float32), scope, metadata))
        self._sync()
        return out

    def _add_one(self, c, text, vector, scope, metadata) -> Memory:
        now = self.clock.now()
        key = text_key(text)
        where = "user_id = ? AND agent_id = ? AND run_id = ?"
        same = c.execute(f"SELECT {COLUMNS} FROM memories WHERE {where} AND text_key = ?", (*scope, key)).fetchone()
        if same is not None:
            m = _memory(same)
            state = self.policy.corroborate(m, now)
            merged = {**m.metadata, **metadata}
            self._set_state(c, m.n, state, updated=now, metadata=merged)
            self._log(c, m.id, m.n, "DUPLICATE", m.text, text, {"note": "identical text in this scope: reinforced, "
                                                                        "not added again", "metadata": metadata}, now)
            self._note_keys(c, metadata)
            return replace(_memory(c.execute(f"SELECT {COLUMNS} FROM memories WHERE n = ?", (m.n,)).fetchone()),
                           event="DUPLICATE")
        bucket = self.policy.bucket(vector) if self.policy.uses_buckets else None
        new = NewMemory(text=text, vector=vector, metadata=metadata, bucket=bucket)
        decision = self.policy.on_insert(new, self._neighbours(c, scope, new), now)
        for n in decision.supersede:
            self._remove(c, n, "SUPERSEDE", {"by_text": text, "key": self.policy.supersede_key}, now)
        if decision.action == "merge" and decision.target is not None:
            old = _memory(c.execute(f"SELECT {COLUMNS} FROM memories WHERE n = ?", (decision.target,)).fetchone())
            merged_text = decision.text or old.text
            state = self.policy.corroborate(old, now)
            self._set_state(c, old.n, state, updated=now, metadata={**old.metadata, **metadata}, text=merged_text,
                            vector=vector, bucket=bucket)
            self._log(c, old.id, old.n, "MERGE", old.text, merged_text, {"reason": decision.reason}, now)
            self._note_keys(c, metadata)
            n, event = old.n, "MERGE"
        else:
            n = self._insert(c, text, vector, scope, metadata, bucket, now)
            event = "ADD"
        count, tokens = c.execute(f"SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM memories WHERE {where}",
                                  scope).fetchone() if self.policy.bounded else (0, 0)
        if self.policy.bounded and self.policy.over_budget(count, tokens):
            rows = c.execute(f"SELECT {COLUMNS} FROM memories WHERE {where}", scope).fetchall()
            self._apply(c, self.policy.after_add([_memory(r) for r in rows], n, now), scope, now)
        row = c.execute(f"SELECT {COLUMNS} FROM memories WHERE n = ?", (n,)).fetchone()
        if row is None:     # the policy let it go at once (over a budget it cannot meet otherwise)
            return Memory(id="", text=text, metadata=metadata, event=f"{event}+DROPPED")
        return replace(_memory(row), event=event)

    def _insert(self, c, text, vector, scope, metadata, bucket, now) -> int:
        state = self.policy.initial(metadata, now)
        memory_id = uuid.uuid4().hex
        cur = c.execute("INSERT INTO memories (id, text, text_key, user_id, agent_id, run_id, metadata_json, created, "
                        "updated, last_recalled, strength, recalls, trust, tokens, bucket, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (memory_id, text, text_key(text), *scope, json.dumps(metadata, sort_keys=True), now, now, now,
                         float(state.get("strength", 1.0)), 0, float(state.get("trust", 1.0)), count_tokens(text),
                         bucket, np.asarray(vector, np.float32).tobytes()))
        self._log(c, memory_id, cur.lastrowid, "ADD", None, text, {"metadata": metadata} if metadata else {}, now)
        self._note_keys(c, metadata)
        return cur.lastrowid

    def _note_keys(self, c, metadata: dict) -> None:
        if metadata:
            c.executemany("INSERT OR IGNORE INTO metadata_keys (key) VALUES (?)", [(k,) for k in metadata])

    def _neighbours(self, c, scope, new: NewMemory) -> list[tuple[Memory, np.ndarray]]:
        """What the policy compares a new memory with: same-key memories and the probed LSH buckets."""
        where, args = ["user_id = ? AND agent_id = ? AND run_id = ?"], list(scope)
        alternatives = []
        key = self.policy.supersede_key
        if key and new.metadata.get(key) is not None:
            alternatives.append(f"json_extract(metadata_json, '$.{key}') = ?")
            args.append(new.metadata[key])
        if new.bucket is not None:
            buckets = self.policy.neighbour_buckets(new.bucket)
            alternatives.append(f"bucket IN ({','.join('?' * len(buckets))})")
            args += buckets
        if not alternatives:
            return []
        rows = c.execute(f"SELECT {COLUMNS}, vector FROM memories WHERE {where[0]} AND ({' OR '.join(alternatives)})",
                         args).fetchall()
        return [(_memory(r[:-1]), np.frombuffer(r[-1], np.float32)) for r in rows]

    def _set_state(self, c, n, state: dict, updated=None, metadata=None, text=None, vector=None, bucket=None) -> None:
        sets, args = [], []
        for column in ("strength", "recalls", "trust", "last_recalled"):
            if column in state:
                sets.append(f"{column} = ?")
                args.append(state[column])
        if updated is not None:
            sets.append("updated = ?")
            args.append(updated)
        if metadata is not None:
            sets.append("metadata_json = ?")
            args.append(json.dumps(metadata, sort_keys=True))
        if text is not None:
            sets += ["text = ?", "text_key = ?", "tokens = ?"]
            args += [text, text_key(text), count_tokens(text)]
        if vector is not None:
            sets += ["vector = ?", "bucket = ?"]
            args += [np.asarray(vector, np.float32).tobytes(), bucket]
        c.execute(f"UPDATE memories SET {', '.join(sets)} WHERE n = ?", (*args, n))

    def _remove(self, c, n, event, details, now) -> None:
        row = c.execute("SELECT id, text FROM memories WHERE n = ?", (n,)).fetchone()
        if row is None:
            return
        c.execute("DELETE FROM memories WHERE n = ?", (n,))
        self._log(c, row[0], n, event, row[1], None, details, now)

    def _apply(self, c, plan: Plan, scope, now) -> None:
        if not plan:
            return
        for n in plan.delete:
            self._remove(c, n, plan.event, plan.details, now)
        if plan.update:
            texts = list(plan.update.values())
            for (n, text), vector in zip(plan.update.items(), self.embedder.embed(texts)):
                old = c.execute("SELECT id, text FROM memories WHERE n = ?", (n,)).fetchone()
                if old is None:
                    continue
                bucket = self.policy.bucket(vector) if self.policy.uses_buckets else None
                self._set_state(c, n, {}, updated=now, text=self._text(text), vector=vector, bucket=bucket)
                self._log(c, old[0], n, plan.event, old[1], text, plan.details, now)
        if plan.add:
            texts = [self._text(t) for t in plan.add]
            for text, vector in zip(texts, self.embedder.embed(texts)):
                if c.execute("SELECT 1 FROM memories WHERE user_id = ? AND agent_id = ? AND run_id = ? AND "
                             "text_key = ?", (*scope, text_key(text))).fetchone():
                    continue
                bucket = self.policy.bucket(vector) if self.policy.uses_buckets else None
                n = self._insert(c, text, vector, scope, {}, bucket, now)
                c.execute("UPDATE history SET event = ?, details_json = ? WHERE seq = (SELECT MAX(seq) FROM history) "
                          "AND n = ?", (plan.event, json.dumps({**plan.details, "added": True}, sort_keys=True), n))

    def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
               run_id: str | None = None, filters: dict | None = None, limit: int = 5, retriever: str | None = None,
               reinforce: bool = True) -> list[Memory]:
        """The `limit` memories most relevant to `query` in the scope (None = any) that pass `filters`,
        ranked by the policy, best first. Recalling strengthens: with `reinforce` (default) each memory
        returned is reinforced as the policy says (MemoryBank: strength + 1, its clock starts again)."""
        query = self._text(query, "query")
        limit = self._limit(limit)
        fn = RETRIEVERS.get(retriever or self.retriever).obj
        where, args = self._where(user_id, agent_id, run_id, filters)
        self._sync()
        now = self.clock.now()
        vector = self.embedder.embed([query])[0]
        allowed = None
        if where != "1":
            allowed = np.fromiter((r[0] for r in self.conn.execute(f"SELECT n FROM memories WHERE {where}", args)),
                                  np.int64)
        if getattr(self.policy.config, "bucket_search", False):
            buckets = self.policy.neighbour_buckets(self.policy.bucket(vector))
            in_buckets = np.fromiter((r[0] for r in self.conn.execute(
                f"SELECT n FROM memories WHERE bucket IN ({','.join('?' * len(buckets))})", buckets)), np.int64)
            allowed = in_buckets if allowed is None else np.intersect1d(allowed, in_buckets)
        if allowed is not None and len(allowed) == 0:
            return []
        fetch = max(4 * limit, 20)
        candidates = fn(Query(query, vector, self.index, self.bm25, allowed, self._vectors_of), fetch)
        if not candidates:
            return []
        relevance = dict(candidates)
        marks = ",".join("?" * len(relevance))
        rows = self.conn.execute(f"SELECT {COLUMNS} FROM memories WHERE n IN ({marks})", list(relevance)).fetchall()
        found = [(m, relevance[m.n]) for m in map(_memory, rows) if self.policy.recallable(m, now)]
        ranked = sorted(self.policy.rank(found, now), key=lambda pair: (-pair[1], pair[0].n))[:limit]
        results = [replace(m, score=float(s), relevance=float(relevance[m.n]),
                           retention=float(self.policy.retention(m, now))) for m, s in ranked]
        if reinforce and results:
            with self._write() as c:
                for m in results:
                    state = self.policy.reinforce(m, now)
                    if c.execute("SELECT 1 FROM memories WHERE n = ?", (m.n,)).fetchone():
                        self._set_state(c, m.n, state)
                        self._log(c, m.id, m.n, "RECALL", None, None,
                                  {k: state[k] for k in ("strength", "recalls") if k in state}, now)
        return results

    def _vectors_of(self, ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = [], []
        ns = np.asarray(ns, np.int64).tolist()
        for start in range(0, len(ns), 900):
            part = ns[start:start + 900]
            for n, blob in self.conn.execute(f"SELECT n, vector FROM memories WHERE n IN ({','.join('?' * len(part))})",
                                             part):
                ids.append(n)
                vectors.append(np.frombuffer(blob, np.float32))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.embedder.dim), np.float32)
        return np.asarray(ids, np.int64), np.stack(vectors)

    def get(self, memory_id: str) -> Memory:
        """The memory with this id (an unknown id is an error)."""
        return _memory(self._id(memory_id))

    def get_all(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                filters: dict | None = None, limit: int | None = None) -> list[Memory]:
        """Every memory in the scope (None = any) that passes `filters`, oldest first."""
        where, args = self._where(user_id, agent_id, run_id, filters)
        tail = ""
        if limit is not None:
            tail = f" LIMIT {self._limit(limit)}"
        rows = self.conn.execute(f"SELECT {COLUMNS} FROM memories WHERE {where} ORDER BY created, n{tail}", args)
        return [_memory(r) for r in rows]

    def update(self, memory_id: str, text: str, metadata: dict | None = None) -> Memory:
        """Replace a memory's text (and merge `metadata` into its metadata); its id stays."""
        text = self._text(text)
        metadata = self._metadata(metadata)
        self._id(memory_id)
        vector = np.asarray(self.embedder.embed([text])[0], np.float32)
        with self._write() as c:
            row = c.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:
                raise UnknownMemoryError(f"unknown memory id {memory_id!r}", expected="the id of a stored memory",
                                         got=memory_id, fix="it was deleted meanwhile: see history(id)")
            m = _memory(row)
            scope = (m.user_id or "", m.agent_id or "", m.run_id or "")
            clash = c.execute("SELECT id FROM memories WHERE user_id = ? AND agent_id = ? AND run_id = ? AND "
                              "text_key = ? AND n != ?", (*scope, text_key(text), m.n)).fetchone()
            if clash:
                raise MemoryStoreError("another memory in this scope already has this text",
                                       expected="a text no other memory of the scope holds", got=clash[0],
                                       fix=f"delete one of the two, or update {clash[0]} instead")
            now = self.clock.now()
            bucket = self.policy.bucket(vector) if self.policy.uses_buckets else None
            self._set_state(c, m.n, {}, updated=now, metadata={**m.metadata, **metadata}, text=text, vector=vector,
                            bucket=bucket)
            self._note_keys(c, metadata)
            self._log(c, m.id, m.n, "UPDATE", m.text, text, {"metadata": metadata} if metadata else {}, now)
        self._sync()
        return self.get(memory_id)

    def delete(self, memory_id: str) -> None:
        """Delete one memory (its history stays)."""
        self._id(memory_id)
        with self._write() as c:
            row = c.execute("SELECT n FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:
                raise UnknownMemoryError(f"unknown memory id {memory_id!r}", expected="the id of a stored memory",
                                         got=memory_id, fix="it was deleted meanwhile: see history(id)")
            self._remove(c, row[0], "DELETE", {}, self.clock.now())
        self._sync()

    def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None) -> int:
        """Delete every memory of a scope (at least one id is required; `reset()` empties the store)."""
        if user_id is None and agent_id is None and run_id is None:
            raise MemoryStoreError("delete_all needs a scope", expected="user_id, agent_id and/or run_id",
                                   got="none", fix="name the scope to delete, or call reset() to empty the store")
        where, args = self._where(user_id, agent_id, run_id, None)
        now = self.clock.now()
        with self._write() as c:
            ns = [r[0] for r in c.execute(f"SELECT n FROM memories WHERE {where}", args).fetchall()]
            for n in ns:
                self._remove(c, n, "DELETE", {"delete_all": {"user_id": user_id, "agent_id": agent_id,
                                                             "run_id": run_id}}, now)
        self._sync()
        return len(ns)

    def forget(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None) -> list[str]:
        """A forgetting pass of the policy over the scope (None = any) at the clock's time; returns the ids
        forgotten (each recorded in the history as FORGET)."""
        where, args = self._where(user_id, agent_id, run_id, None)
        now = self.clock.now()
        with self._write() as c:
            memories = [_memory(r) for r in c.execute(f"SELECT {COLUMNS} FROM memories WHERE {where}", args)]
            by_n = {m.n: m for m in memories}
            gone = [n for n in self.policy.forget(memories, now) if n in by_n]
            for n in gone:
                self._remove(c, n, "FORGET", {"policy": self.policy.name,
                                              "retention": round(self.policy.retention(by_n[n], now), 6)}, now)
        self._sync()
        return [by_n[n].id for n in gone]

    def history(self, memory_id: str) -> list[dict]:
        """Every change of one memory, oldest first: event, old and new text, clock time, wall time, details."""
        if not isinstance(memory_id, str) or not ID_PATTERN.match(memory_id):
            self._id(memory_id)   # raises the clear error
        rows = self.conn.execute("SELECT seq, event, old_text, new_text, at, wall, details_json FROM history "
                                 "WHERE memory_id = ? ORDER BY seq", (memory_id,)).fetchall()
        if not rows:
            raise UnknownMemoryError(f"unknown memory id {memory_id!r}", expected="the id of a memory this store "
                                     "held", got=memory_id, fix="list ids with get_all()")
        return [{"seq": s, "event": e, "old_text": o, "new_text": t, "at": a, "wall": w, "details": json.loads(d)}
                for s, e, o, t, a, w, d in rows]

    def reset(self) -> int:
        """Remove every memory (the history keeps them and records the reset); returns how many."""
        with self._write() as c:
            count = c.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            c.execute("DELETE FROM memories")
            self._log(c, None, None, "RESET", None, None, {"removed": count})
        self._sync()
        return count

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]

    def stats(self) -> dict:
        """Counts and sizes: memories, history rows, the schema version, index and BM25 memory estimates."""
        return {"memories": len(self), "history": self.conn.execute("SELECT COUNT(*) FROM history").fetchone()[0],
                "schema": self.conn.execute("PRAGMA user_version").fetchone()[0], "embedder": self.embedder.identity(),
                "policy": self.policy.name, "index": self.index.name, "index_bytes": self.index.nbytes(),
                "bm25_bytes": self.bm25.nbytes(), "file_bytes": self.path.stat().st_size}

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            if hasattr(self.index, "save"):
                self.save_index()
        except OSError:
            pass        # only a cache: the next open rebuilds the index
        finally:
            self.conn.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["MemoryStore", "MemoryStoreError", "UnknownMemoryError"]
