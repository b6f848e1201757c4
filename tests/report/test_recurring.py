"""Report parts of recurring streams: accuracy along the sequence and at each reappearance, from the
stored matrices and each run's own schedule."""
from __future__ import annotations

import numpy as np
import pytest

from palimpsest.evaluate.records import RunRecord
from palimpsest.report import write_report
from palimpsest.report.recurring import overall_accuracy, reappearance_accuracy
from palimpsest.run import ResultsDB, parse_spec, run_experiment


def test_reappearance_accuracy_reads_the_step_before_each_return():
    acc = np.array([[0.9, 0.0], [0.2, 0.8], [0.6, 0.3], [0.5, 0.7], [0.95, 0.4]])
    record = RunRecord("naive", 0, {"class": acc}, [[0], [1], [0], [1], [0]])
    assert reappearance_accuracy(record) == {0: [0.2, 0.5], 1: [0.3]}   # rows 1, 3 and 2
    assert np.allclose(overall_accuracy(record), acc.mean(1))


@pytest.fixture(scope="module")
def recurring_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    spec = parse_spec({"name": "recurring-report",
                       "benchmark": {"dataset": "digits", "n_experiences": 5,
                                     "recurrence": {"length": 8, "distribution": "zipf", "introduce": "first"}},
                       "model": {"name": "mlp", "settings": {"hidden": [16]}},
                       "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
                       "strategies": ["naive"], "seeds": [0, 1]})
    exp_id = run_experiment(spec, root=root, progress=False)
    db = ResultsDB(root)
    yield db, exp_id, root
    db.close()


def test_recurring_experiment_report_has_both_plots(recurring_experiment):
    db, exp_id, root = recurring_experiment
    page = write_report(db, exp_id, root / "report.html").read_text()
    assert "Accuracy along the recurring sequence" in page and "Accuracy at each reappearance" in page
    records = [db.record(r["id"]) for r in db.runs(exp_id)]
    assert all(len(r.step_tasks) == 8 for r in records)
    assert any(len(v) for r in records for v in reappearance_accuracy(r).values())
