"""What survives damage and company: a damaged database is refused (and never written), a damaged
checkpoint falls back to the step before it (or says how to restart the run), `doctor` finds
missing files, and eight processes writing to one results folder lose nothing."""
import hashlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from palimpsest.cli import app
from palimpsest.core.errors import PalimpsestError
from palimpsest.run import ResultsDB, parse_spec, run_experiment
from palimpsest.run.store.writer import job_folder

from ..conftest import tiny_spec


class Killed(Exception):
    pass


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(path, offset, size=4096):
    """Overwrite `size` bytes of a file at `offset` with garbage, as a failing disk would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes((i * 37 + 11) % 256 for i in range(size)))


@pytest.fixture
def finished(tmp_path):
    spec = tiny_spec(strategies=["naive", "er"], training={"epochs": 2})
    exp = run_experiment(parse_spec(spec), root=tmp_path / "res", progress=False)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path, exp


@pytest.mark.parametrize("where", ["middle", "start"])
def test_a_damaged_database_is_refused_and_never_written(finished, where):
    tmp_path, exp = finished
    db_file = tmp_path / "res" / "results.sqlite"
    ResultsDB(tmp_path / "res").conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(db_file, 8 * 4096 if where == "middle" else 0)
    before = _digest(db_file)
    with pytest.raises(PalimpsestError, match="is damaged"):
        ResultsDB(tmp_path / "res")
    for args in (["run", tmp_path / "tiny.yaml", "--root", tmp_path / "res", "--resume", "--no-progress"],
                 ["report", "--root", tmp_path / "res"], ["forget", f"{exp}/naive/seed0", "--classes", "3",
                                                          "--root", tmp_path / "res"]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and "is damaged" in " ".join(result.stderr.split()) and ".recover" in result.stderr
    assert _digest(db_file) == before      # nothing written to it
    doctor = CliRunner().invoke(app, ["doctor", "--root", str(tmp_path / "res")])
    assert doctor.exit_code == 1 and "damaged" in doctor.stderr


def _killed_at(tmp_path, step):
    spec = parse_spec(tiny_spec(strategies=["er"], training={"epochs": 2}))

    def kill(run_id, k):
        if k == step:
            raise Killed()

    with pytest.raises(Killed):
        run_experiment(spec, root=tmp_path / "res", progress=False, on_step=kill)
    return spec


def test_a_damaged_latest_checkpoint_falls_back_to_the_step_before(tmp_path):
    spec = _killed_at(tmp_path, 3)
    db = ResultsDB(tmp_path / "res")
    exp = db.experiments()[0]["id"]
    folder = tmp_path / "res" / job_folder(f"{exp}/er/seed0")
    (folder / "model_step3.safetensors").write_bytes(b"truncat")        # a half-written file
    with pytest.warns(RuntimeWarning, match="resumed from step 2"):
        assert run_experiment(spec, root=tmp_path / "res", resume=True, progress=False) == exp
    clean = run_experiment(spec, root=tmp_path / "clean", progress=False)
    a, b = db.record(f"{exp}/er/seed0"), ResultsDB(tmp_path / "clean").record(f"{clean}/er/seed0")
    np.testing.assert_array_equal(a.acc["class"], b.acc["class"])
    assert db.run(f"{exp}/er/seed0")["status"] == "finished"


def test_with_no_intact_checkpoint_the_error_says_how_to_restart_the_run(tmp_path):
    spec = _killed_at(tmp_path, 3)
    db = ResultsDB(tmp_path / "res")
    exp = db.experiments()[0]["id"]
    run = f"{exp}/er/seed0"
    folder = tmp_path / "res" / job_folder(run)
    for name in ("model_step2.safetensors", "state_step3.safetensors"):
        (folder / name).unlink()
    with pytest.raises(PalimpsestError, match="--reset-run") as info:
        run_experiment(spec, root=tmp_path / "res", resume=True, progress=False)
    assert "state_step3" in str(info.value) or "model_step2" in str(info.value)
    reset = CliRunner().invoke(app, ["doctor", "--root", str(tmp_path / "res"), "--reset-run", run])
    assert reset.exit_code == 0, reset.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_experiment(spec, root=tmp_path / "res", resume=True, progress=False)
    clean = run_experiment(spec, root=tmp_path / "clean", progress=False)
    np.testing.assert_array_equal(db.record(run).acc["class"],
                                  ResultsDB(tmp_path / "clean").record(f"{clean}/er/seed0").acc["class"])


def test_doctor_finds_missing_files(finished):
    tmp_path, exp = finished
    healthy = CliRunner().invoke(app, ["doctor", "--root", str(tmp_path / "res"), "--deep"])
    assert healthy.exit_code == 0 and "healthy" in healthy.stdout
    db = ResultsDB(tmp_path / "res")
    db.file(db.steps(f"{exp}/naive/seed0")[2]["predictions_path"]).unlink()
    broken = CliRunner().invoke(app, ["doctor", "--root", str(tmp_path / "res")])
    assert broken.exit_code == 1 and "missing file" in broken.stderr and "step 1 predictions" in broken.stderr


def test_eight_processes_writing_to_one_folder_lose_nothing(tmp_path):
    specs = []
    for i in range(8):   # four share one spec, four differ
        name = "same" if i < 4 else f"other{i}"
        path = tmp_path / f"{name}_{i}.yaml"
        path.write_text(yaml.safe_dump(tiny_spec(name=name, strategies=["naive", "joint"], seeds=[0])))
        specs.append(path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "palimpsest", "run", str(p), "--root", "res", "--no-progress"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for p in specs]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("locked" in e for e in errors)
    db = ResultsDB(tmp_path / "res")
    exps = db.experiments()
    assert len(exps) == 8 and len({e["id"] for e in exps}) == 8 and all(e["status"] == "finished" for e in exps)
    for e in exps:
        runs = db.runs(e["id"])
        assert len(runs) == 2 and all(r["status"] == "finished" for r in runs)
        assert {len(db.steps(r["id"])) for r in runs} == {6, 2}   # naive: initial + 5 steps; joint: initial + 1
    assert db.conn.execute("SELECT COUNT(*) FROM streams").fetchone()[0] == 1   # one stream, stored once


def test_a_run_whose_loss_becomes_non_finite_is_stored_as_diverged_never_finished(tmp_path):
    spec = tmp_path / "boom.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["naive", {"name": "naive", "label": "fine",
                                                                   "training": {"lr": 0.05}}],
                                             training={"lr": 1.0e30})))
    result = CliRunner().invoke(app, ["run", str(spec), "--root", str(tmp_path / "res"), "--no-progress"])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "diverged at step 0" in message and "lower training.lr" in message and "lr 1e+30" in message
    db = ResultsDB(tmp_path / "res")
    runs = {r["label"]: r for r in db.runs(db.experiments()[0]["id"])}
    assert runs["naive"]["status"] == "diverged" and runs["fine"]["status"] == "finished"
    assert db.metrics(runs["naive"]["id"]) == {}                   # never counted as a result


def test_an_unlearner_whose_loss_diverges_is_recorded_as_diverged(tmp_path):
    from palimpsest.run.kinds.unlearn import parse_unlearning_spec, run_unlearning
    spec = parse_unlearning_spec({"name": "boom", "train": {"dataset": "digits", "model": {"name": "mlp", "settings":
                                  {"hidden": [16]}}, "training": {"epochs": 2, "batch_size": 32}},
                                  "forget": [{"kind": "classes", "classes": [3]}],
                                  "methods": ["retrain", {"name": "gradient_ascent", "settings": {"lr": 1.0e30}}]})
    exp = run_unlearning(spec, root=tmp_path, progress=False)
    entry = {e["label"]: e for e in ResultsDB(tmp_path).ledger(exp)}["gradient_ascent"]
    assert entry["status"] == "diverged" and "lower its lr (now 1e+30)" in entry["error"]
