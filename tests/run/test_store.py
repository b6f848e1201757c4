"""The results store: migration of a folder written by palimpsest 0.1.0, root-relative paths,
streams stored once, predictions as int32 files, the checkpoint policy, race-free ids, leases,
named-column inserts, and jobs that never touch the database."""
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import palimpsest
from palimpsest.core.errors import PalimpsestError
from palimpsest.run import ResultsDB, load_model, parse_spec, run_experiment
from palimpsest.run.kinds.learn import LearnKind
from palimpsest.run.store.files import load_arrays, load_state
from palimpsest.run.store.writer import Outbox, Writer, job_folder

from ..conftest import tiny_spec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store_v1"
SRC = Path(palimpsest.__file__).parent


@pytest.fixture
def v1_store(tmp_path, monkeypatch):
    """A copy of the fixture, opened from another working directory (0.1.0 stored paths relative to
    the directory a run was started in)."""
    shutil.copytree(FIXTURE, tmp_path / "store_v1")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return Path("../store_v1")


def test_a_folder_from_0_1_0_opens_reports_and_loads_after_migration(v1_store):
    from palimpsest.report import render_summary, write_report
    db = ResultsDB(v1_store, create=False)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    exps = {e["name"]: e for e in db.experiments()}
    assert {n: e["kind"] for n, e in exps.items()} == {"fx_learn": "learn", "fx_killed": "learn",
                                                       "fx_unlearn": "unlearn", "forget": "unlearn"}
    for e in exps.values():
        html = write_report(db, e["id"], v1_store / "r" / f"{e['name']}.html").read_text()
        assert e["id"] in html
        render_summary(db, e["id"])
    learn = exps["fx_learn"]["id"]
    rec = db.record(f"{learn}/er/seed0")
    assert rec.acc["class"].shape == (5, 5) and len(rec.predictions["class"]) == 5
    assert db.metrics(f"{learn}/er/seed0")["final_average_accuracy/class"] == pytest.approx(rec.acc["class"][-1].mean())
    # every stored path is relative to the root and the checkpoints load from another directory
    paths = [r[0] for r in db.conn.execute("SELECT model_path FROM steps WHERE model_path IS NOT NULL")]
    paths += [r[0] for r in db.conn.execute("SELECT path FROM models")]
    assert paths and all(not Path(p).is_absolute() and not p.startswith("store_v1") for p in paths)
    model, info = load_model(v1_store, f"{learn}/naive/seed0", step=2)
    assert info["step"] == 2 and len(info["train_data"]) == 5
    entries = db.ledger(exps["fx_unlearn"]["id"])
    assert [e["label"] for e in entries] == ["original", "retrain", "ssd", "finetune"]
    assert all(e["status"] == "finished" for e in entries)
    forget_spec = yaml.safe_load(db.experiment(exps["forget"]["id"])["spec_yaml"])
    assert forget_spec["kind"] == "unlearn" and forget_spec["source"]["run"] == f"{learn}/naive/seed0"


def test_a_killed_0_1_0_run_resumes_after_migration_to_the_uninterrupted_numbers(v1_store):
    db = ResultsDB(v1_store)
    exps = {e["name"]: e["id"] for e in db.experiments()}
    spec = parse_spec(yaml.safe_load(db.experiment(exps["fx_killed"])["spec_yaml"]))
    assert db.experiment(exps["fx_killed"])["status"] == "failed"
    resumed = run_experiment(spec, root=v1_store, resume=True, progress=False)
    assert resumed == exps["fx_killed"]          # found by its (recomputed) spec hash
    killed = db.record(f"{resumed}/er/seed0")
    clean = db.record(f"{exps['fx_learn']}/er/seed0")   # the same training, never interrupted
    np.testing.assert_array_equal(killed.acc["class"], clean.acc["class"])
    for a, b in zip(killed.predictions["class"], clean.predictions["class"]):
        np.testing.assert_array_equal(a, b)
    assert db.experiment(resumed)["status"] == "finished"


def test_an_unlearning_spec_rerun_after_migration_reuses_the_cached_models(v1_store):
    from palimpsest.run.kinds.unlearn import run_unlearning
    db = ResultsDB(v1_store)
    exps = {e["name"]: e["id"] for e in db.experiments()}
    spec = parse_spec(yaml.safe_load(db.experiment(exps["fx_unlearn"])["spec_yaml"]))
    before = {r[0] for r in db.conn.execute("SELECT id FROM models")}
    exp = run_unlearning(spec, root=v1_store, progress=False)
    # nothing retrained: the only new model rows are the new ledger entries' own (role "entry"), and the
    # original's and the retrained model's entries point at the files that were already there
    added = {r[0] for r in db.conn.execute("SELECT id FROM models")} - before
    assert added and all(db.model_entry(m)["role"] == "entry" and m.startswith(exp) for m in added)
    kept = {db.model_entry(m)["path"] for m in before}
    assert {db.model_entry(f"{exp}/seed0/request0/{label}")["path"] for label in ("original", "retrain")} <= kept
    old = {e["label"]: e["audit"] for e in db.ledger(exps["fx_unlearn"])}
    new = {e["label"]: e["audit"] for e in db.ledger(exp)}
    for label in ("original", "retrain", "ssd"):
        assert new[label]["forget_accuracy"] == old[label]["forget_accuracy"]
        assert new[label]["test_accuracy"] == old[label]["test_accuracy"]


def test_a_copied_results_folder_loads_its_own_checkpoints(tmp_path):
    spec = parse_spec(tiny_spec())
    exp = run_experiment(spec, root=tmp_path / "a", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    model, info = load_model(tmp_path / "b", f"{exp}/naive/seed0")
    assert info["step"] == 4


def test_streams_are_stored_once_and_predictions_are_int32_files(tmp_path):
    exp = run_experiment(parse_spec(tiny_spec(strategies=["naive", "joint"], seeds=[0])), root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    assert db.conn.execute("SELECT COUNT(*) FROM streams").fetchone()[0] == 1   # two runs, one stream
    assert db.conn.execute("SELECT COUNT(*) FROM stream_data").fetchone()[0] == 5
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "predictions" not in tables
    step = db.steps(f"{exp}/naive/seed0")[-1]
    arrays = load_arrays(db.file(step["predictions_path"]))
    assert arrays["class"].dtype == np.int32 and arrays["task"].dtype == np.int32


def test_the_default_checkpoint_policy_keeps_the_last_model_and_no_resume_state(tmp_path):
    exp = run_experiment(parse_spec(tiny_spec()), root=tmp_path, progress=False)
    run = f"{exp}/naive/seed0"
    folder = tmp_path / job_folder(run)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model_step4.safetensors"]
    with pytest.raises(PalimpsestError, match="kept no model for step 2"):
        load_model(tmp_path, run, step=2)
    kept = run_experiment(parse_spec(tiny_spec(name="all", checkpoints={"models": "all"})), root=tmp_path,
                          progress=False)
    assert len(list((tmp_path / job_folder(f"{kept}/naive/seed0")).glob("model_step*.safetensors"))) == 5
    none = run_experiment(parse_spec(tiny_spec(name="none", checkpoints={"models": "none"})), root=tmp_path,
                          progress=False)
    assert not list((tmp_path / job_folder(f"{none}/naive/seed0")).glob("*.safetensors"))


def test_storage_folders_come_from_ids_not_labels(tmp_path):
    from palimpsest.core.errors import SpecError
    with pytest.raises(SpecError, match="without '/'"):   # 0.1.0 mapped x/y and x__y to one folder
        parse_spec(tiny_spec(strategies=[{"name": "naive", "label": "x/y"}]))
    spec = parse_spec(tiny_spec(strategies=[{"name": "naive", "label": "x y"}, {"name": "naive", "label": "x__y"}]))
    exp = run_experiment(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    folders = {r["label"]: r["folder"] for r in db.runs(exp)}
    assert len(set(folders.values())) == 2 and all(re.fullmatch(r"jobs/[0-9a-f]{16}", f) for f in folders.values())


def test_concurrent_experiments_get_distinct_ids(tmp_path):
    ResultsDB(tmp_path).close()
    ids, errors = [], []

    def make():
        try:
            with ResultsDB(tmp_path) as db:
                ids.append(Writer(db).new_experiment("learn", "same", "{}", "h", "0"))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 8


def test_a_run_whose_process_died_is_shown_as_crashed(tmp_path):
    exp = run_experiment(parse_spec(tiny_spec()), root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    # as a killed process leaves it: running, with a heartbeat that stopped long ago
    db.conn.execute("UPDATE experiments SET status='running', heartbeat=? WHERE id=?", (time.time() - 3600, exp))
    db.conn.execute("UPDATE runs SET status='running' WHERE experiment_id=?", (exp,))
    assert db.experiment(exp)["status"] == "crashed"
    assert {r["status"] for r in db.runs(exp)} == {"crashed"}
    db.conn.execute("UPDATE experiments SET heartbeat=? WHERE id=?", (time.time(), exp))
    assert db.experiment(exp)["status"] == "running"      # alive: a fresh heartbeat


def test_a_store_from_a_newer_palimpsest_is_refused(tmp_path):
    ResultsDB(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(PalimpsestError, match="newer palimpsest"):
        ResultsDB(tmp_path)


def test_reading_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(PalimpsestError, match="no results database"):
        ResultsDB(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


def test_every_insert_names_its_columns():
    unnamed = [f"{p.relative_to(SRC)}: {m.group(0)}" for p in SRC.rglob("*.py")
               for m in re.finditer(r"INSERT (?:OR \w+ )?INTO \w+ VALUES", p.read_text())]
    assert not unnamed, unnamed


def test_a_job_never_touches_the_database(tmp_path):
    """run_job writes files into its folder and sends records; applied later by a writer, the
    records rebuild the run exactly."""
    spec = parse_spec(tiny_spec())
    kind = LearnKind()
    (job,) = kind.jobs(spec)
    records = []
    outbox = Outbox(tmp_path, f"exp/{job.key}", job_folder(f"exp/{job.key}"), records.append)
    kind.run_job(spec, "exp", job, {"run": None, "done": [], "initial_done": False, "folder": None,
                                    "state_format": 2}, outbox)
    assert not (tmp_path / "results.sqlite").exists()
    assert [r["type"] for r in records][:2] == ["stream", "run_start"]
    db = ResultsDB(tmp_path)
    writer = Writer(db)
    db.conn.execute("INSERT INTO experiments (id, kind, name, spec_yaml, spec_hash, status, created) "
                    "VALUES ('exp', 'learn', 'tiny', '', '', 'running', 0)")
    for r in records:
        writer.apply(r)
    reference = run_experiment(spec, root=tmp_path / "direct", progress=False)
    a, b = db.record(f"exp/{job.key}"), ResultsDB(tmp_path / "direct").record(f"{reference}/{job.key}")
    np.testing.assert_array_equal(a.acc["class"], b.acc["class"])
    last = load_state(db.file(db.steps(f"exp/{job.key}")[-1]["model_path"]))["model"]
    assert all(torch.equal(v, last[k]) for k, v in load_model(tmp_path / "direct", f"{reference}/{job.key}")[0]
               .state_dict().items())


def test_the_policy_can_keep_models_for_the_first_seed_only(tmp_path):
    exp = run_experiment(parse_spec(tiny_spec(seeds=[3, 1], checkpoints={"models": "last", "seeds": "first"})),
                         root=tmp_path, progress=False)
    assert list((tmp_path / job_folder(f"{exp}/naive/seed3")).glob("model_step*.safetensors"))
    assert not list((tmp_path / job_folder(f"{exp}/naive/seed1")).glob("*.safetensors"))
    with pytest.raises(PalimpsestError, match="kept no model"):
        load_model(tmp_path, f"{exp}/naive/seed1")
    assert ResultsDB(tmp_path).record(f"{exp}/naive/seed1").predictions is not None   # its numbers are all there
