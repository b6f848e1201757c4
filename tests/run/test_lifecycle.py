"""The lifecycle kind: learning steps and forget requests interleaved on one continually trained
model, every lineage audited after each event against the strategy retrained without what was
forgotten so far; replay memories drop forgotten examples."""
import numpy as np
import pytest
import torch

from palimpsest.core.errors import PalimpsestError
from palimpsest.memory.buffer import ReplayBuffer
from palimpsest.run import ResultsDB, load_model
from palimpsest.run.kinds.lifecycle import LifecycleKind, offsets, rows_of, run_lifecycle, without
from palimpsest.run.spec import parse_spec


def spec(**over):
    data = {"kind": "lifecycle", "name": "tiny_life",
            "benchmark": {"dataset": "digits", "n_experiences": 5},
            "model": {"name": "mlp", "settings": {"hidden": [32]}},
            "training": {"epochs": 3, "batch_size": 32, "lr": 0.05},
            "strategy": {"name": "er", "settings": {"buffer_size": 100}},
            "events": [{"learn": 2}, {"forget": {"kind": "classes", "classes": [0]}}, {"learn": 1}],
            "methods": ["random_labels"], "seeds": [0], "checkpoints": {"models": "all"}}
    data.update(over)
    return parse_spec(data)


def test_a_replay_memory_drops_exactly_the_forgotten_examples():
    buf = ReplayBuffer(capacity=20, policy="reservoir", seed=0)
    x = torch.arange(30 * 4, dtype=torch.float32).reshape(30, 4)
    y = torch.arange(30) % 3
    buf.add(x, y)
    stored = buf.data["inputs"][:buf.size].clone()
    gone = stored[:5]
    assert buf.drop_matching(torch.cat([gone, x[:0]])) == 5
    left = buf.data["inputs"][:buf.size]
    assert buf.size == 15 and torch.equal(left, stored[5:])   # the others kept, in order
    assert not any(torch.equal(row, g) for row in left for g in gone)
    assert buf.drop_matching(gone) == 0   # nothing left to drop


def test_the_stream_without_forgotten_ids():
    s = spec()
    stream = LifecycleKind().stream(s, 0)
    start = offsets(stream)
    assert start[-1] == sum(len(e) for e in stream.train)
    gone = np.array([0, 1, start[1] + 3])
    cut = without(stream, gone)
    assert len(cut.train[0]) == len(stream.train[0]) - 2 and len(cut.train[1]) == len(stream.train[1]) - 1
    x, y = rows_of(stream, np.array([start[1] + 3]))
    assert torch.equal(x[0], stream.train[1].inputs[3]) and int(y[0]) == int(stream.train[1].targets[3])


def test_lifecycle_audits_every_lineage_after_every_event_against_the_strategy_retrained(tmp_path):
    exp = run_lifecycle(spec(), root=tmp_path)
    db = ResultsDB(tmp_path)
    entries = {e["id"].split("/", 1)[1]: e for e in db.ledger(exp)}
    assert set(entries) == {f"seed0/{lb}/event{j}" for lb in ("retrain", "original", "random_labels")
                            for j in range(3)}
    assert all(e["status"] == "finished" for e in entries.values())
    # the retrained lineage never saw class 0 after the request; the lineage that ignores it did
    ref, orig = entries["seed0/retrain/event1"]["audit"], entries["seed0/original/event1"]["audit"]
    assert ref["forget_accuracy"] == 0.0 and orig["forget_accuracy"] > 0.8
    assert entries["seed0/retrain/event1"]["report"]["retrained_from_scratch"]
    assert not entries["seed0/retrain/event2"]["report"]["retrained_from_scratch"]
    # the method served the request on the live model; ER's memory lost the forgotten examples
    method = entries["seed0/random_labels/event1"]
    assert method["report"]["replay_examples_dropped"] > 0
    assert method["audit"]["forget_accuracy"] < orig["forget_accuracy"]
    # after learning more, the audit still reads the first request (does the forgetting hold up?)
    later = entries["seed0/random_labels/event2"]["audit"]
    assert "forget_accuracy_request0" in later and later["retrain_seconds"] > 0
    assert "verdict" in later
    # every event's model was kept and loads like a run
    model, info = load_model(tmp_path, f"{exp}/seed0/random_labels/event2")
    assert info["seed"] == 0 and sum(p.numel() for p in model.parameters()) > 0
    # the report table has one row per (event, lineage)
    from palimpsest.report.lifecycle import lifecycle_table_text
    from palimpsest.run.kinds.lifecycle import summarize_lifecycle
    text = lifecycle_table_text(summarize_lifecycle(db, exp))
    assert "forget classes [0]" in text and "random_labels" in text and "target" in text


def test_continuing_the_reference_equals_retraining_it_from_scratch():
    from palimpsest.core.seeding import pick_device
    from palimpsest.run.kinds.lifecycle import retrain_by_strategy
    s, kind = spec(), LifecycleKind()
    stream = kind.stream(s, 0)
    schedule = kind.strategy(s).schedule(stream)
    gone = np.arange(10)
    grown, _ = retrain_by_strategy(s.model, stream, kind.strategy(s), s.training_config, schedule, 2, gone, 0,
                                   pick_device("cpu"))
    grown.learn(schedule, without(stream, gone), 3)
    fresh, _ = retrain_by_strategy(s.model, stream, kind.strategy(s), s.training_config, schedule, 3, gone, 0,
                                   pick_device("cpu"))
    for a, b in zip(grown.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("over, message", [
    ({"events": [{"forget": {"kind": "classes", "classes": [0]}}]}, "first event"),
    ({"events": [{"learn": 9}]}, "past the end"),
    ({"methods": ["retrain"]}, "lineage every lifecycle has"),
    ({"audits": {"reference_mia": {"n_models": 4}}}, "reference models per event"),
    ({"events": [{"learn": 1, "forget": {"kind": "classes", "classes": [0]}}]}, "exactly one"),
])
def test_bad_lifecycle_specs_say_what_to_change(over, message, tmp_path):
    with pytest.raises(Exception) as err:
        s = spec(**over)
        LifecycleKind().preflight(s)
    assert message in str(err.value)
    assert isinstance(err.value, PalimpsestError)   # the four-part message, never a traceback


def test_a_forget_request_on_a_continual_run_is_audited_against_its_strategy_retrained(tmp_path):
    """Naive fine-tuning through a class-incremental stream forgets the early classes; the model
    it is compared with must be naive fine-tuning again without the forget set (not an offline joint
    model, whose test accuracy is some 50 points higher and would enter the verdict unsaid)."""
    from palimpsest.run.runner import run_experiment
    from palimpsest.run.kinds.unlearn import forget_from_run
    learn = parse_spec({"name": "tiny_cl", "benchmark": {"dataset": "digits", "n_experiences": 5},
                        "model": {"name": "mlp", "settings": {"hidden": [32]}},
                        "training": {"epochs": 3, "batch_size": 32, "lr": 0.05},
                        "strategies": ["naive"], "seeds": [0]})
    exp = run_experiment(learn, root=tmp_path, progress=False)
    run_id = f"{exp}/naive/seed0"
    forget = forget_from_run(tmp_path, run_id, [{"kind": "random", "fraction": 0.1}], [("finetune", "finetune", {})])
    entries = {e["label"]: e for e in ResultsDB(tmp_path).ledger(forget)}
    ref, orig = entries["retrain"]["audit"], entries["original"]["audit"]
    # the naive learner's counterfactual forgot the early classes as the naive learner did
    assert ref["test_accuracy"] < 0.5 and abs(ref["test_accuracy"] - orig["test_accuracy"]) < 0.15
    model = ResultsDB(tmp_path).model_entry(f"retrain/{ResultsDB(tmp_path).model_entries('retrain/')[0]['id'][8:]}")
    assert model is not None and '"reference": "strategy"' in (model["info_json"] or "")


def test_the_worked_example_in_docs_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).parents[2] / "docs" / "LIFECYCLE.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "LIFECYCLE.md", "exec"), {"__name__": "docs_lifecycle"})
    out = capsys.readouterr().out
    assert "forget accuracy after the request:" in out and "'retrain': 0.0" in out
