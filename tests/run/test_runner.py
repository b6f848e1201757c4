import json
import sqlite3

import numpy as np
import pytest
import torch

from palimpsest.run import ResultsDB, load_model, parse_spec, run_experiment
from palimpsest.run.store.schema import INITIAL_STEP

from ..conftest import tiny_spec


class Killed(Exception):
    pass


def test_run_stores_matrices_predictions_metrics_and_models(tmp_path):
    spec = parse_spec(tiny_spec(strategies=["naive", "joint", "from_scratch"], seeds=[0, 1],
                                checkpoints={"models": "all"}))
    exp = run_experiment(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    runs = db.runs(exp)
    assert len(runs) == 6 and all(r["status"] == "finished" for r in runs)
    rec = db.record(f"{exp}/naive/seed0")
    assert rec.acc["class"].shape == (5, 5) and rec.step_tasks == [[0], [1], [2], [3], [4]]
    assert len(rec.predictions["class"]) == 5 and len(rec.predictions["class"][0]) == len(rec.targets)
    assert db.record(f"{exp}/joint/seed0").acc["class"].shape == (1, 5)
    metrics = db.metrics(f"{exp}/naive/seed0")
    assert metrics["final_average_accuracy/class"] == pytest.approx(np.mean(rec.acc["class"][-1]))
    # forward transfer is computed against the from_scratch run of the same seed
    assert np.isfinite(metrics["forward_transfer/task"])
    assert db.experiment(exp)["status"] == "finished"
    # the model after any step loads back, with what trained it
    model, info = load_model(tmp_path, f"{exp}/naive/seed0", step=2)
    assert info["step"] == 2 and info["stream"]["class_order"] == list(range(10))
    assert len(info["train_data"]) == 5 and info["train_data"][0]["task"] == 0
    with torch.no_grad():
        x = torch.zeros(1, 1, 8, 8)
        assert model(x).shape == (1, 10)
    db.close()


def test_killed_run_resumes_to_identical_results(tmp_path):
    spec = parse_spec(tiny_spec(strategies=["naive", "cumulative"]))
    reference = run_experiment(spec, root=tmp_path / "a", progress=False)

    def kill_after_step_2(run_id, step):
        if run_id.endswith("/cumulative/seed0") and step == 2:
            raise Killed()

    with pytest.raises(Killed):
        run_experiment(spec, root=tmp_path / "b", progress=False, on_step=kill_after_step_2)
    db = ResultsDB(tmp_path / "b")
    exp_b = db.experiments()[0]["id"]
    assert db.experiment(exp_b)["status"] == "failed"
    cum = db.run(f"{exp_b}/cumulative/seed0")
    assert cum["status"] == "failed" and "Killed" in cum["error"]
    assert [s for s in db.finished_steps(cum["id"]) if s != INITIAL_STEP] == [0, 1, 2]
    db.close()
    resumed = run_experiment(spec, root=tmp_path / "b", resume=True, progress=False)
    assert resumed == exp_b
    a, b = ResultsDB(tmp_path / "a"), ResultsDB(tmp_path / "b")
    for label in ("naive", "cumulative"):
        ra, rb = a.record(f"{reference}/{label}/seed0"), b.record(f"{exp_b}/{label}/seed0")
        np.testing.assert_array_equal(ra.acc["class"], rb.acc["class"])
        for pa, pb in zip(ra.predictions["class"], rb.predictions["class"]):
            np.testing.assert_array_equal(pa, pb)
    assert b.experiment(exp_b)["status"] == "finished"


def test_failure_between_checkpoint_and_database_write_leaves_no_half_step(tmp_path, monkeypatch):
    spec = parse_spec(tiny_spec())
    from palimpsest.run.store import writer as dbmod
    original = dbmod.Writer._on_step
    calls = {"n": 0}

    def flaky(self, c, run_id, step, *args, **kwargs):
        original(self, c, run_id, step, *args, **kwargs)
        if step == 1:
            calls["n"] += 1
            raise Killed()   # fail inside the step's transaction, after its rows were written

    monkeypatch.setattr(dbmod.Writer, "_on_step", flaky)
    with pytest.raises(Killed):
        run_experiment(spec, root=tmp_path, progress=False)
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM steps WHERE step=1").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM accuracy WHERE step=1").fetchone()[0] == 0
    conn.close()
    monkeypatch.setattr(dbmod.Writer, "_on_step", original)
    exp = run_experiment(spec, root=tmp_path, resume=True, progress=False)
    db = ResultsDB(tmp_path)
    assert db.run(f"{exp}/naive/seed0")["status"] == "finished"
    assert db.finished_steps(f"{exp}/naive/seed0") == [-1, 0, 1, 2, 3, 4]


def test_stored_spec_and_stream_say_what_trained_the_model(tmp_path):
    spec = parse_spec(tiny_spec(benchmark={"shuffle_classes": True}, seeds=[3]))
    exp = run_experiment(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    run = db.run(f"{exp}/naive/seed3")
    stream = json.loads(run["stream_json"])
    assert sorted(stream["class_order"]) == list(range(10)) and stream["class_order"] != list(range(10))
    assert parse_spec(__import__("yaml").safe_load(db.experiment(exp)["spec_yaml"])) == spec
