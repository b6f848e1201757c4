"""Forgetting policies of the agent-memory store: the corrected MemoryBank curve (pinned against the
published form), MARK, Think-in-Memory, MEM1, a conformance suite over every registered policy, and the
synthetic timeline (rehearsed facts survive, old unrehearsed ones fade) over 3 seeds."""
import math

import pytest

from palimpsest.core.errors import SpecError
from palimpsest.memory import (DAY, MEMORY_POLICIES, LMConsolidator, MemoryStore, SimulatedClock, published_retention,
                               retention)
from palimpsest.memory.policies.mem1 import Mem1


def make(tmp_path, policy, clock=None, **settings):
    return MemoryStore(tmp_path / f"{policy if isinstance(policy, str) else policy.name}.sqlite", policy=policy,
                       policy_settings=settings or None, clock=clock or SimulatedClock(), synchronous="normal")


def test_the_corrected_curve_differs_from_the_published_code_as_pinned():
    """MemoryBank's code: `math.exp(-t / 5*S)` = exp(-(t/5)·S). Ours: exp(-t / (5·S))."""
    t, S = 5.0, 3.0
    assert retention(t, S) == pytest.approx(math.exp(-1 / 3))          # 0.7165
    assert published_retention(t, S) == pytest.approx(math.exp(-3.0))  # 0.0498
    assert published_retention(t, S) == math.exp(-t / 5*S)              # noqa: E226  (the published expression)
    assert retention(t, S) != pytest.approx(published_retention(t, S))
    # stronger memories fade slower in the corrected form, faster in the published one
    assert retention(10, 1) < retention(10, 2) < retention(10, 4)
    assert published_retention(10, 1) > published_retention(10, 2) > published_retention(10, 4)
    assert retention(0, 7) == published_retention(0, 7) == 1.0
    assert retention(5, 1) == published_retention(5, 1)                # they agree only at S = 1


def test_ebbinghaus_forgets_the_untouched_and_keeps_the_recalled(tmp_path):
    clock = SimulatedClock()
    s = make(tmp_path, "ebbinghaus", clock)
    kept = s.add("The wifi password is hunter2", user_id="u")
    faded = s.add("The parking spot is B12", user_id="u")
    clock.advance(days=5)
    assert s.search("wifi password", user_id="u", limit=1, retriever="bm25")[0].id == kept.id   # recalled: S = 2
    clock.advance(days=10)                    # t since recall: 10 days for S=2 (R=0.37), 15 days for S=1 (R=0.05)
    assert not any(h.id == faded.id for h in s.search("parking spot", reinforce=False))  # faded: not recallable
    assert s.forget() == [faded.id]
    assert [m.id for m in s.get_all()] == [kept.id] and s.get(kept.id).strength == 2.0
    event = s.history(faded.id)[-1]
    assert event["event"] == "FORGET" and event["details"]["retention"] == pytest.approx(math.exp(-3), abs=1e-6)


def test_ebbinghaus_sampling_mode_is_seeded(tmp_path):
    outcomes = []
    for run in range(2):
        clock = SimulatedClock()
        s = MemoryStore(tmp_path / f"s{run}.sqlite", policy="ebbinghaus", clock=clock,
                        policy_settings={"mode": "sample", "seed": 3})
        for i in range(40):
            s.add(f"fact {i} about thing {i}")
        clock.advance(days=4)
        gone = s.forget()
        outcomes.append(sorted(m.text for m in s.get_all()))
        assert len(gone) + len(outcomes[-1]) == 40
        s.close()
    assert outcomes[0] == outcomes[1] and 0 < len(outcomes[0]) < 40


def test_fifo_evicts_the_oldest_whatever_was_recalled(tmp_path):
    clock = SimulatedClock()
    s = make(tmp_path, "fifo", clock, capacity=3)
    first = s.add("first fact about apples", user_id="u")
    for i, word in enumerate(["bananas", "cherries", "dates"]):
        clock.advance(hours=1)
        s.search("apples", user_id="u")             # recalling the first changes nothing for FIFO
        s.add(f"fact about {word}", user_id="u")
    s.add("someone else's fact", user_id="v")       # capacity is per scope
    assert [m.text for m in s.get_all(user_id="u")] == ["fact about bananas", "fact about cherries",
                                                         "fact about dates"]
    assert s.history(first.id)[-1]["event"] == "EVICT" and len(s.get_all(user_id="v")) == 1


def test_mark_supersedes_contradictions_and_ranks_by_use_and_trust(tmp_path):
    clock = SimulatedClock()
    s = make(tmp_path, "mark", clock, capacity=3)
    old = s.add("Alice's favourite colour is teal", user_id="a", metadata={"key": "colour"})
    new = s.add("Alice's favourite colour is red", user_id="a", metadata={"key": "colour"})
    assert [m.id for m in s.get_all(user_id="a")] == [new.id]
    assert s.history(old.id)[-1]["event"] == "SUPERSEDE"
    doubt = s.add("Alice might be vegetarian", user_id="a", metadata={"trust": 0.2})
    assert doubt.trust == pytest.approx(0.2)
    assert s.add("Alice might be vegetarian", user_id="a").trust == pytest.approx(0.6)   # restated: trust rises
    used = s.add("Alice plays chess on Sundays", user_id="a")
    for _ in range(5):
        clock.advance(days=1)
        s.search("chess Sundays", user_id="a", limit=1, retriever="bm25")
    clock.advance(days=1)
    s.add("Alice bought a lamp", user_id="a")        # over capacity 3: the least recent, least used goes
    texts = {m.text for m in s.get_all(user_id="a")}
    assert used.text in texts and "Alice bought a lamp" in texts and len(texts) == 3
    terms = s.policy.terms(s.get(used.id), clock.now())
    assert terms["frequency"] == pytest.approx(math.log1p(5) / math.log1p(20))


def test_think_in_memory_merges_near_duplicates_and_never_deletes_them(tmp_path):
    s = make(tmp_path, "think_in_memory", merge_threshold=0.8)
    a = s.add("Alice keeps her passport in the blue drawer of the desk", user_id="a")
    b = s.add("Alice keeps her passport in the blue drawer of the desk now", user_id="a")    # cosine 0.92
    assert b.event == "MERGE" and b.id == a.id and len(s) == 1
    assert s.get(a.id).text.endswith("desk now") and s.get(a.id).strength == 2.0
    assert [h["event"] for h in s.history(a.id)] == ["ADD", "MERGE"]
    other = s.add("Bob's train leaves at nine", user_id="a")
    assert other.event == "ADD" and len(s) == 2
    again = MEMORY_POLICIES.create("think_in_memory")                       # buckets agree across processes
    vector = s.embedder.embed(["Bob's train leaves at nine"])[0]
    assert again.bucket(vector) == s.get(other.id).bucket
    assert len(again.neighbour_buckets(0)) == 1 + 8 + 28                     # 8 bits, probe radius 2
    s.add("Alice's passport is at her mother's house", user_id="a", metadata={"key": "passport"})
    s.add("Alice's passport is in the safe", user_id="a", metadata={"key": "passport"})
    assert [m.text for m in s.get_all(filters={"key": "passport"})] == ["Alice's passport is in the safe"]


def test_lsh_probing_finds_near_duplicates_as_documented():
    """8 bits, probe radius 2: two thoughts at cosine ~0.86-0.9 share a probed bucket about 90% of the time."""
    import numpy as np
    policy = MEMORY_POLICIES.create("think_in_memory")
    rng = np.random.default_rng(0)
    hits, sims = 0, []
    for _ in range(500):
        a = rng.standard_normal(256)
        b = a + 0.45 * rng.standard_normal(256)
        a, b = (a / np.linalg.norm(a)).astype(np.float32), (b / np.linalg.norm(b)).astype(np.float32)
        sims.append(float(a @ b))
        hits += policy.bucket(b) in set(policy.neighbour_buckets(policy.bucket(a)))
    assert 0.85 < np.mean(sims) < 0.92 and hits / 500 > 0.85


def test_mem1_keeps_a_bounded_state_consolidated_each_turn(tmp_path):
    s = make(tmp_path, "mem1", budget_items=3)
    pinned = s.add("Goal: book a flight to Oslo", user_id="agent", metadata={"pinned": True})
    s.add("The budget is 300 euros", user_id="agent", metadata={"key": "budget"})
    for i in range(6):
        s.add(f"Observation {i}: searched airline {i}", user_id="agent")
        assert len(s.get_all(user_id="agent")) <= 3
    s.add("The budget is 450 euros", user_id="agent", metadata={"key": "budget"})
    state = [m.text for m in s.get_all(user_id="agent")]
    assert pinned.text in state and "The budget is 450 euros" in state and "The budget is 300 euros" not in state
    assert len(state) == 3
    events = [r[0] for r in s.conn.execute("SELECT event FROM history WHERE event = 'CONSOLIDATE'")]
    assert len(events) >= 5
    tokens = make(tmp_path / "..", "mem1", budget_tokens=12)
    for i in range(5):
        tokens.add(f"step {i} found three new results", run_id="r")
    assert sum(m.tokens for m in tokens.get_all()) <= 12


def test_mem1_with_a_language_model_and_its_fallback(tmp_path):
    seen = []

    def summarise(prompt):
        seen.append(prompt)
        return "- Trip: Oslo, budget 450 euros\n- Goal: book a flight to Oslo"

    s = make(tmp_path, Mem1(consolidate=LMConsolidator(summarise), budget_items=2))
    s.add("Goal: book a flight to Oslo", run_id="r")
    s.add("The budget is 450 euros", run_id="r")
    s.add("The destination is Oslo", run_id="r")
    assert sorted(m.text for m in s.get_all()) == ["Goal: book a flight to Oslo", "Trip: Oslo, budget 450 euros"]
    assert "within a budget of 2 items" in seen[0]

    def broken(prompt):
        return "sure! here is everything:\n" + "\n".join(f"line {i}" for i in range(9))   # over budget

    def raises(prompt):
        raise TimeoutError("model timed out")

    for i, model in enumerate([broken, raises, lambda p: "   "]):
        t = MemoryStore(tmp_path / f"fb{i}.sqlite", policy=Mem1(consolidate=LMConsolidator(model), budget_items=2),
                        clock=SimulatedClock())
        for text in ("one fact here", "two facts here", "three facts here"):
            t.add(text)
        assert len(t) == 2
        details = [r[0] for r in t.conn.execute("SELECT details_json FROM history WHERE event = 'CONSOLIDATE'")]
        assert details and "fallback" in details[0]
        t.close()


@pytest.mark.parametrize("name", MEMORY_POLICIES.names())
def test_every_policy_conforms(tmp_path, name):
    needs = {"fifo": {"capacity": 4}, "mem1": {"budget_items": 4}}
    settings = needs.get(name, {})
    policy = MEMORY_POLICIES.create(name, **settings)
    assert MEMORY_POLICIES.get(name).summary and policy.name == name
    assert type(policy)(**policy.settings()).settings() == policy.settings()      # settings round-trip
    with pytest.raises(SpecError, match="no such field"):
        MEMORY_POLICIES.create(name, **settings, not_a_setting=1)
    results = []
    for run in range(2):                      # deterministic on a simulated clock
        clock = SimulatedClock()
        s = MemoryStore(tmp_path / f"{run}.sqlite", policy=name, policy_settings=settings, clock=clock,
                        synchronous="normal")
        for day in range(6):
            s.add(f"day {day} the user mentioned topic {day}", user_id="u")
            s.search(f"topic {day - 1}", user_id="u", limit=2)
            clock.advance(days=3)
            s.forget()
        results.append([(m.text, m.strength, m.recalls) for m in s.get_all()])
        reopened_policy = s.policy.name
        s.close()
        with MemoryStore(tmp_path / f"{run}.sqlite") as again:   # the store remembers its policy
            assert again.policy.name == reopened_policy == name
    assert results[0] == results[1] and results[0]


def test_unknown_policy_names_list_close_matches(tmp_path):
    from palimpsest.core.errors import UnknownNameError
    with pytest.raises(UnknownNameError, match="did you mean 'ebbinghaus'"):
        MemoryStore(tmp_path / "m.sqlite", policy="ebbinghau")
    with pytest.raises(SpecError, match="capacity"):
        MEMORY_POLICIES.create("fifo")
    with pytest.raises(Exception, match="never forgets"):
        MEMORY_POLICIES.create("none", capacity=3)
    assert not (tmp_path / "m.sqlite").exists()


def test_the_timeline_rehearsed_survive_old_unrehearsed_fade_over_three_seeds():
    """The benchmark's claim at a smaller scale (2 users, 45 days): the corrected Ebbinghaus policy keeps
    rehearsed facts (>= 0.9) and lets old never-rehearsed ones go (<= 0.2) at a capacity FIFO fails at."""
    from palimpsest.memory.timeline import TimelineSettings, run_timeline
    for seed in range(3):
        settings = TimelineSettings(users=2, days=45, old_days=25, seed=seed)
        ebb = run_timeline("ebbinghaus", {"capacity": 48}, settings)
        assert ebb["rehearsed_recall"] >= 0.9 and ebb["old_unrehearsed_recall"] <= 0.2, ebb
        assert ebb["recent_recall"] >= 0.9, ebb
        fifo = run_timeline("fifo", {"capacity": 48}, settings)
        assert fifo["rehearsed_recall"] < 0.9, fifo
        if seed == 0:
            keep = run_timeline("none", {}, settings)
            assert keep["old_unrehearsed_recall"] > 0.8, keep         # never forgetting: nothing fades


def test_days_are_what_the_policies_count():
    assert DAY == 86400.0
