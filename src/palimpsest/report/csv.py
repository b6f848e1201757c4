"""An experiment as three CSV files, for pandas, R or a spreadsheet.

Undefined values (NaN: forgetting of joint training, a metric whose inputs are missing) are
written as empty cells, which pandas reads back as NaN.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..run.store.db import ResultsDB
from ..run.summary import TRAIN_SECONDS, metric_sort_key, strategy_labels, summarize_runs as summarize

METRICS_FILE, ACCURACY_FILE, SUMMARY_FILE = "metrics.csv", "accuracy.csv", "summary.csv"
INITIAL_STEP = -1  # the untrained model, evaluated before step 0


def _cell(value) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    return path


def export_csv(db: ResultsDB, exp_id: str, out_dir: str | Path) -> list[Path]:
    """Write metrics.csv, accuracy.csv and summary.csv for one experiment into `out_dir`.

    - metrics.csv: one row per run (finished or not): experiment, run_id, strategy (label),
      method (registry name), seed, status, train_seconds, then every "<metric>/<view>".
    - accuracy.csv: long format, one row per run x step x test experience x view: run_id,
      strategy, seed, step, task, view, accuracy (fraction in [0, 1]); step -1 is the untrained
      model (the baseline of GEM's forward transfer).
    - summary.csv: one row per strategy x metric: experiment, strategy, metric, mean, std, n
      (the numbers of `summarize`, std = population std over finished seeds).

    Returns the three paths in that order.
    """
    exp_id = db.experiment(exp_id)["id"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = {label: i for i, label in enumerate(strategy_labels(db, exp_id, db.runs(exp_id)))}
    runs = sorted(db.runs(exp_id), key=lambda r: (order.get(r["label"], len(order)), r["seed"]))

    per_run = {r["id"]: db.metrics(r["id"]) for r in runs}
    names = sorted({k for m in per_run.values() for k in m}, key=metric_sort_key)
    metric_rows = []
    accuracy_rows = []
    for r in runs:
        steps = db.steps(r["id"])
        seconds = sum(s["train_seconds"] or 0.0 for s in steps if s["step"] != INITIAL_STEP)
        metric_rows.append([exp_id, r["id"], r["label"], r["strategy"], r["seed"], r["status"], seconds]
                           + [per_run[r["id"]].get(k) for k in names])
        if not steps:
            continue
        record = db.record(r["id"])
        for view in ("class", "task"):
            if record.initial is not None and view in record.initial and steps[0]["step"] == INITIAL_STEP:
                accuracy_rows += [[r["id"], r["label"], r["seed"], INITIAL_STEP, task, view, float(v)]
                                  for task, v in enumerate(record.initial[view])]
            for step, row in enumerate(record.acc.get(view, [])):
                accuracy_rows += [[r["id"], r["label"], r["seed"], step, task, view, float(v)]
                                  for task, v in enumerate(row)]

    summary_rows = []
    for row in summarize(db, exp_id):
        for name, value in [*row["metrics"].items(), (TRAIN_SECONDS, row[TRAIN_SECONDS])]:
            summary_rows.append([exp_id, row["strategy"], name, value["mean"], value["std"], value["n"]])

    return [
        _write(out / METRICS_FILE, ["experiment", "run_id", "strategy", "method", "seed", "status",
                                    TRAIN_SECONDS, *names], metric_rows),
        _write(out / ACCURACY_FILE, ["run_id", "strategy", "seed", "step", "task", "view", "accuracy"],
               accuracy_rows),
        _write(out / SUMMARY_FILE, ["experiment", "strategy", "metric", "mean", "std", "n"], summary_rows),
    ]


__all__ = ["export_csv"]
