"""Reports of a tiny stored experiment: the summary agrees with the per-run metrics, the CSV
files hold every run, step and metric, and the HTML page is one self-contained file."""
from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from rich.console import Console

from palimpsest.report import export_csv, render_table, summarize, table_text, write_html_report
from palimpsest.report.html import _summary_table, bars_figure, curves_figure, heatmap_figure
from palimpsest.report.table import DEFAULT_METRICS, default_metrics, format_stat, stat, uneven_views
from palimpsest.run import ResultsDB, parse_spec, run_experiment

STRATEGIES = ["naive", "joint"]
SEEDS = [0, 1]
N_EXPERIENCES = 5


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    spec = parse_spec({"name": "report-test",
                       "benchmark": {"dataset": "digits", "n_experiences": N_EXPERIENCES},
                       "model": {"name": "mlp", "settings": {"hidden": [32]}},
                       "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
                       "strategies": STRATEGIES, "seeds": SEEDS})
    exp_id = run_experiment(spec, root=root, progress=False)
    db = ResultsDB(root)
    yield db, exp_id
    db.close()


def _per_run(db, exp_id, label):
    return [db.metrics(r["id"]) for r in db.runs(exp_id) if r["label"] == label and r["status"] == "finished"]


# -- summary and table -------------------------------------------------------------------------


def test_summary_has_one_row_per_strategy_in_spec_order(experiment):
    db, exp_id = experiment
    summary = summarize(db, exp_id)
    assert [row["strategy"] for row in summary] == STRATEGIES
    for row in summary:
        assert row["experiment"] == exp_id
        assert row["seeds"] == SEEDS and row["n_seeds"] == len(SEEDS) and row["n_unfinished"] == 0
        assert row["train_seconds"]["n"] == len(SEEDS) and row["train_seconds"]["mean"] > 0


def test_summary_means_equal_mean_of_per_run_metrics(experiment):
    db, exp_id = experiment
    for row in summarize(db, exp_id):
        per_run = _per_run(db, exp_id, row["strategy"])
        assert set(row["metrics"]) == set(per_run[0])
        for name, value in row["metrics"].items():
            values = np.array([m[name] for m in per_run], dtype=float)
            defined = values[~np.isnan(values)]
            assert value["n"] == defined.size
            if defined.size == 0:
                assert math.isnan(value["mean"]) and math.isnan(value["std"])
            else:
                assert value["mean"] == pytest.approx(defined.mean(), abs=1e-12)
                assert value["std"] == pytest.approx(defined.std(ddof=0), abs=1e-12)


def test_joint_forgetting_is_undefined_and_naive_forgets(experiment):
    db, exp_id = experiment
    rows = {row["strategy"]: row for row in summarize(db, exp_id)}
    assert rows["joint"]["metrics"]["forgetting/class"]["n"] == 0
    assert rows["naive"]["metrics"]["forgetting/class"]["mean"] > 0.3  # class-IL fine-tuning forgets


def test_summary_accepts_an_id_prefix(experiment):
    db, exp_id = experiment
    assert table_text(summarize(db, exp_id[:8])) == table_text(summarize(db, exp_id))  # NaN != NaN in dicts


def test_stat_and_format_stat():
    s = stat([0.8, 0.9, float("nan")])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.05)  # ddof=0
    assert math.isnan(stat([float("nan")])["mean"]) and stat([])["n"] == 0
    sample = stat([1.0, 2.0, 3.0, None], ddof=1)     # the unlearning tables: sample std and t interval
    assert sample["std"] == pytest.approx(1.0) and sample["ci95"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert stat([0.5], ddof=1)["std"] == 0.0 and math.isnan(stat([0.5], ddof=1)["ci95"])
    assert format_stat({"mean": 0.8374, "std": 0.0041, "n": 3}) == "83.7 ± 0.4"
    assert format_stat({"mean": 0.8374, "std": 0.0, "n": 1}) == "83.7"
    assert format_stat({"mean": float("nan"), "std": float("nan"), "n": 0}) == "—"
    assert format_stat({"mean": 2.5, "std": 0.25, "n": 2}, percent=False) == "2.50 ± 0.25"


def test_table_text_lists_strategies_and_formatted_numbers(experiment):
    db, exp_id = experiment
    summary = summarize(db, exp_id)
    text = table_text(summary)
    rows = {row["strategy"]: row for row in summary}
    naive_final = format_stat(rows["naive"]["metrics"]["final_average_accuracy/class"])
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d", naive_final)
    assert naive_final in text
    assert format_stat(rows["joint"]["metrics"]["final_average_accuracy/task"]) in text
    for label in STRATEGIES:
        assert re.search(rf"^\| {label}\s", text, flags=re.MULTILINE)
    for header in ("Final acc", "class-IL", "task-IL", "Forgetting", "Train s"):
        assert header in text
    joint_line = next(line for line in text.splitlines() if line.startswith("| joint"))
    assert "—" in joint_line  # forgetting of a single-row matrix is undefined
    assert "Chaudhry" in text and "docs/METRICS.md" in text


def test_render_table_prints_chosen_columns(experiment):
    db, exp_id = experiment
    console = Console(record=True, width=200, color_system=None)
    table = render_table(summarize(db, exp_id), console=console, metrics=["forgetting/task"])
    out = console.export_text()
    assert len(table.columns) == 3  # strategy, seeds, one metric
    assert "Forgetting" in out and "task-IL" in out and "naive" in out and "Final acc" not in out
    summary = summarize(db, exp_id)
    wanted = default_metrics(summary)
    assert len(render_table(summary, console=console).columns) == 2 + len(wanted)
    # this fixture's test experiences are of unequal sizes: both final accuracies are shown, with the note
    if uneven_views(summary):
        assert len(wanted) == len(DEFAULT_METRICS) + len(uneven_views(summary))
        assert "final_example_accuracy/class" in wanted and "Final ex acc" in console.export_text()


# -- csv ---------------------------------------------------------------------------------------


def _read(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_csv_writes_runs_accuracies_and_summary(experiment, tmp_path):
    db, exp_id = experiment
    paths = export_csv(db, exp_id, tmp_path / "csv")
    assert [p.name for p in paths] == ["metrics.csv", "accuracy.csv", "summary.csv"]
    metrics_rows, accuracy_rows, summary_rows = (_read(p) for p in paths)

    runs = db.runs(exp_id)
    assert len(metrics_rows) == len(STRATEGIES) * len(SEEDS)
    assert {r["run_id"] for r in metrics_rows} == {r["id"] for r in runs}
    for row in metrics_rows:
        stored = db.metrics(row["run_id"])
        assert row["experiment"] == exp_id and row["strategy"] in STRATEGIES and int(row["seed"]) in SEEDS
        for name, value in stored.items():
            assert (row[name] == "") if math.isnan(value) else float(row[name]) == pytest.approx(value)

    assert list(accuracy_rows[0]) == ["run_id", "strategy", "seed", "step", "task", "view", "accuracy"]
    # naive: untrained model + 5 steps; joint: untrained model + 1 step; x 5 experiences x 2 views
    per_seed = ((1 + N_EXPERIENCES) + (1 + 1)) * N_EXPERIENCES * 2
    assert len(accuracy_rows) == per_seed * len(SEEDS)
    record = db.record(runs[0]["id"])
    for row in accuracy_rows:
        if row["run_id"] == runs[0]["id"] and int(row["step"]) >= 0:
            expected = record.acc[row["view"]][int(row["step"]), int(row["task"])]
            assert float(row["accuracy"]) == pytest.approx(expected)

    summary = summarize(db, exp_id)
    assert len(summary_rows) == sum(len(row["metrics"]) + 1 for row in summary)  # + train_seconds
    naive = next(row for row in summary if row["strategy"] == "naive")
    got = next(r for r in summary_rows if r["strategy"] == "naive" and r["metric"] == "forgetting/class")
    assert float(got["mean"]) == pytest.approx(naive["metrics"]["forgetting/class"]["mean"])
    assert float(got["std"]) == pytest.approx(naive["metrics"]["forgetting/class"]["std"])
    assert int(got["n"]) == len(SEEDS)


# -- html --------------------------------------------------------------------------------------


def test_html_report_is_one_self_contained_file(experiment, tmp_path):
    db, exp_id = experiment
    path = write_html_report(db, exp_id, tmp_path / "out" / "report.html")
    assert path.exists()
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 2_000_000
    # class heatmap and curves, bars, task heatmap and curves: embedded once each ...
    assert text.count("data:image/png;base64,") == 5
    # ... and written beside the page as PNG and SVG, linked from the captions
    figures = sorted(p.name for p in (path.parent / "figures").iterdir())
    assert len(figures) == 10 and all(f'href="figures/{f}"' in text for f in figures)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    assert exp_id in text
    for label in STRATEGIES:
        assert f"<th>{label}</th>" in text
    assert "<pre>" in text and "report-test" in text and "digits" in text  # the spec YAML


def test_html_escapes_labels():
    row = {"experiment": "e", "strategy": "<b>x & y</b>", "method": "naive", "seeds": [0], "n_seeds": 1,
           "n_unfinished": 0, "metrics": {}, "train_seconds": stat([1.0])}
    out = _summary_table([row], ["final_average_accuracy/class"])
    assert "&lt;b&gt;x &amp; y&lt;/b&gt;" in out and "<b>" not in out


def test_figures_handle_single_rows_and_nan():
    full = np.array([[0.9, np.nan], [0.5, 0.8]])
    matrices = {"plain": {"mean": full, "std": np.zeros_like(full), "step_tasks": [[0], [1]], "n_seeds": 2},
                "joint": {"mean": np.array([[0.7, 0.75]]), "std": np.zeros((1, 2)), "step_tasks": [[0, 1]],
                          "n_seeds": 1}}
    assert heatmap_figure(matrices, "class") is not None
    assert curves_figure(matrices, "class") is not None
    nan_only = {"x": {"mean": np.full((2, 2), np.nan), "std": np.full((2, 2), np.nan),
                      "step_tasks": [[0], [1]], "n_seeds": 1}}
    assert heatmap_figure(nan_only, "class") is None and curves_figure(nan_only, "class") is None
    assert bars_figure([]) is None


def test_unlearning_relearn_cell_says_when_accuracy_never_came_back():
    from palimpsest.report.table import stat
    from palimpsest.report.unlearning import _cell

    def row(steps):
        audits = [{"relearn_curve": [0.0] * 21, "relearn_steps_to_50pct": s} for s in steps]
        values = [float("nan") if s is None else s for s in steps]
        return {"audits": audits, "stats": {"relearn_steps_to_50pct": stat(values)}}

    assert _cell(row([None, None]), "relearn_steps_to_50pct", False) == "> 20"
    assert _cell(row([4, 6]), "relearn_steps_to_50pct", False) == "5.0 ± 1.0"
    assert _cell(row([4, None]), "relearn_steps_to_50pct", False) == "4.0 (1 never)"


def test_unlearning_table_keeps_the_key_columns_in_a_narrow_terminal():
    from palimpsest.report.table import stat
    from palimpsest.report.unlearning import COLUMNS, build_unlearning_table
    audit = {key: 0.5 for key, _, _ in COLUMNS} | {"verdict": "under-forgotten",
                                                   "verdict_failed": ["relearning: under-forgotten"]}
    rows = [{"experiment": "e", "request": "classes [3]", "label": label, "n_seeds": 1, "failed": 0,
             "audits": [audit], "stats": {k: stat([v]) for k, v in audit.items() if isinstance(v, float)}}
            for label in ("retrain", "ssd")]
    wide = build_unlearning_table(rows, width=300)
    narrow = build_unlearning_table(rows, width=80)
    assert len(wide.columns) == 3 + len(COLUMNS)
    assert [c.header for c in narrow.columns] == ["Method", "Seeds", "Forget", "Test\nother", "Privacy\ngap",
                                                  "CPU\nspeed-up", "Verdict"]
    from palimpsest.report.unlearning import verdict_cell
    assert verdict_cell([audit]) == "under-forgotten: relearning"
    assert verdict_cell([audit, {"verdict": "matches retrain", "verdict_failed": []}] * 2 + [audit]) == \
        "under-forgotten (3/5): relearning"
    assert "classes [3]" in narrow.title and "Narrow terminal" in narrow.caption


def test_the_terminal_table_fits_80_columns_without_clipping(tmp_path):
    """Headers and numbers stay whole in an 80-column terminal: columns that do not fit are left out
    (and named under the table), never cut to "Fin… cla…"."""
    import io

    from rich.console import Console

    from palimpsest.report.table import render_table
    from palimpsest.run import parse_spec, run_experiment
    from palimpsest.run.summary import summarize_runs

    from ..conftest import tiny_spec
    exp = run_experiment(parse_spec(tiny_spec(strategies=["naive", "from_scratch", "joint"], seeds=[0, 1])),
                         root=tmp_path, progress=False)
    from palimpsest.run import ResultsDB
    summary = summarize_runs(ResultsDB(tmp_path), exp)
    buffer = io.StringIO()
    render_table(summary, Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "Final acc" in text and "class-IL" in text and "from_scratch" in text
    assert "more column(s) in the HTML report" in text
