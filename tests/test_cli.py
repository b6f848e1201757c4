"""The `palimpsest` command end to end, in a subprocess, on a tiny budget."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import tiny_spec


def cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "palimpsest", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_run_report_export_and_resume(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["naive", "joint"], seeds=[0, 1])))
    out = cli("run", str(spec), "--root", "res", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "naive" in out.stdout and "joint" in out.stdout and "±" in out.stdout
    reports = list((tmp_path / "res" / "reports").glob("*/report.html"))
    assert len(reports) == 1 and "data:image/png;base64" in reports[0].read_text()
    assert (reports[0].parent / "metrics.csv").exists()

    listing = cli("runs", "--root", "res", cwd=tmp_path)
    assert "finished" in listing.stdout and "tiny-" in listing.stdout
    again = cli("report", "--root", "res", cwd=tmp_path)
    assert again.returncode == 0 and "report:" in again.stdout
    exported = cli("export", "tiny", "--root", "res", "--out", "csv", cwd=tmp_path)
    assert exported.returncode == 0 and (tmp_path / "csv" / "accuracy.csv").exists()
    # --resume of a finished spec starts a new experiment; nothing stored is lost
    resumed = cli("run", str(spec), "--root", "res", "--no-progress", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0
    assert len(list((tmp_path / "res" / "reports").glob("*/report.html"))) == 2


def test_validate_reports_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_spec(strategies=["naiv"], training={"epochs": -1})))
    out = cli("validate", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "2 problem(s)" in out.stderr and "did you mean 'naive'" in out.stderr and "training.epochs" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_the_builtin_quickstart_and_recipes(tmp_path):
    from palimpsest.cli import quickstart_path
    from palimpsest.run.spec import load_spec
    recipes = sorted(Path(__file__).parents[1].joinpath("recipes").rglob("*.yaml"))
    assert recipes
    for path in [quickstart_path(), *recipes]:
        load_spec(path)  # raises SpecError listing every problem
    out = cli("validate", str(recipes[0]), cwd=tmp_path)
    assert out.returncode == 0 and "valid" in out.stdout, out.stderr


def test_ls_lists_every_registry(tmp_path):
    out = cli("ls", cwd=tmp_path)
    assert out.returncode == 0
    for word in ("benchmarks", "fashion_mnist", "models", "resnet18_slim", "strategies", "naive", "joint",
                 "metrics", "forgetting", "scenarios"):
        assert word in out.stdout
    assert cli("ls", "strategy", cwd=tmp_path).returncode == 2


def test_report_of_unknown_experiment_is_a_clear_error(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    assert cli("run", str(spec), "--root", "res", "--no-progress", cwd=tmp_path).returncode == 0
    out = cli("report", "nope", "--root", "res", cwd=tmp_path)
    assert out.returncode == 2 and "experiment 'nope' not found" in out.stderr


def test_sigkilled_run_resumes_to_identical_results(tmp_path):
    """A real SIGKILL mid-run: finished steps survive and --resume reproduces an uninterrupted run."""
    import signal
    import sqlite3
    import time

    import numpy as np

    from palimpsest.run import ResultsDB

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(training={"epochs": 40})))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "palimpsest", "run", str(spec), "--no-progress"]
    proc = subprocess.Popen(args + ["--root", "killed"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db_path = tmp_path / "killed" / "results.sqlite"
    deadline = time.time() + 120
    steps = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                with sqlite3.connect(db_path, timeout=1) as conn:
                    steps = conn.execute("SELECT COUNT(*) FROM steps WHERE step >= 0").fetchone()[0]
            except sqlite3.OperationalError:
                steps = 0
            if steps >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise the epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= steps < 5
    assert cli("run", str(spec), "--root", "killed", "--no-progress", "--resume", cwd=tmp_path).returncode == 0
    assert cli("run", str(spec), "--root", "clean", "--no-progress", cwd=tmp_path).returncode == 0
    killed, clean = ResultsDB(tmp_path / "killed"), ResultsDB(tmp_path / "clean")
    (exp_k,), (exp_c,) = [e["id"] for e in killed.experiments()], [e["id"] for e in clean.experiments()]
    rk, rc = killed.record(f"{exp_k}/naive/seed0"), clean.record(f"{exp_c}/naive/seed0")
    np.testing.assert_array_equal(rk.acc["class"], rc.acc["class"])
    assert killed.experiment(exp_k)["status"] == "finished"


def test_forget_and_audit_a_stored_run(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["joint"], training={"epochs": 5})))
    assert cli("run", str(spec), "--root", "res", "--no-progress", cwd=tmp_path).returncode == 0
    from palimpsest.run import ResultsDB
    db = ResultsDB(tmp_path / "res")
    run_id = db.runs(db.experiments()[0]["id"])[0]["id"]
    db.close()
    out = cli("forget", run_id, "--classes", "3", "--method", "retrain", "--root", "res", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "classes [3]" in out.stdout and "retrain" in out.stdout and "report:" in out.stdout
    audit = cli("audit", "--root", "res", cwd=tmp_path)
    assert audit.returncode == 0 and "original" in audit.stdout
    bad = cli("forget", run_id, "--classes", "12", "--root", "res", cwd=tmp_path)
    assert bad.returncode == 2 and "classes the model does not have" in bad.stderr
    none = cli("forget", run_id, "--root", "res", cwd=tmp_path)
    assert none.returncode == 2 and "exactly one of --classes, --fraction, --indices" in none.stderr
    unknown = cli("forget", run_id, "--classes", "3", "--method", "ssdd", "--root", "res", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown unlearner 'ssdd'" in unknown.stderr


def test_a_rejected_forget_request_leaves_no_experiment_behind(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["joint"])))
    assert cli("run", str(spec), "--root", "res", "--no-progress", cwd=tmp_path).returncode == 0
    from palimpsest.run import ResultsDB
    db = ResultsDB(tmp_path / "res")
    run_id = db.runs(db.experiments()[0]["id"])[0]["id"]
    out = cli("forget", run_id, "--classes", "12", "--root", "res", cwd=tmp_path)
    assert out.returncode == 2 and "classes the model does not have" in out.stderr
    assert len(db.experiments()) == 1
