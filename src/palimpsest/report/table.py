"""Per-strategy summary of an experiment (mean ± std over seeds) and its table in the terminal.

`summarize` reads only what the results database stores: the per-run metrics computed by
`palimpsest.evaluate.metrics` and the per-step training time. Every number in a table can be
traced back to one formula in docs/METRICS.md.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from ..evaluate.metrics import METRIC_NAMES
from ..run.db import ResultsDB

TRAIN_SECONDS = "train_seconds"

DEFAULT_METRICS: tuple[str, ...] = (
    "final_average_accuracy/class", "final_average_accuracy/task", "average_incremental_accuracy/class",
    "forgetting/class", "backward_transfer/class", "forward_transfer/class", "plasticity/class",
    "negative_flip_rate/class", TRAIN_SECONDS,
)

METRIC_TITLES: dict[str, str] = {
    "final_average_accuracy": "Final acc",
    "average_incremental_accuracy": "Avg incr acc",
    "forgetting": "Forgetting ↓",
    "backward_transfer": "BWT",
    "forward_transfer": "FWT",
    "forward_transfer_gem": "FWT (GEM)",
    "plasticity": "Plasticity",
    "negative_flip_rate": "Neg flips ↓",
    "positive_flip_rate": "Pos flips",
}
VIEW_TITLES: dict[str, str] = {"class": "class-IL", "task": "task-IL"}

CAPTION = ("Mean ± population std over finished seeds, in % (train seconds: per run). "
           "Forgetting = max earlier accuracy − final accuracy (Chaudhry et al. 2018); "
           "BWT = final − just-learned accuracy (GEM, Lopez-Paz & Ranzato 2017); "
           "FWT = just-learned − a from-scratch model's accuracy (needs a from_scratch run). "
           "Formulas: docs/METRICS.md.")

MISSING = "—"


def column_title(metric: str, two_lines: bool = False) -> str:
    """Readable column name: "forgetting/class" -> "Forgetting ↓ (class-IL)" (or, with
    `two_lines`, "Forgetting ↓" over "class-IL", which keeps terminal tables narrow)."""
    if metric == TRAIN_SECONDS:
        return "Train s\nper run" if two_lines else "Train s"
    base, _, view = metric.partition("/")
    title = METRIC_TITLES.get(base, base.replace("_", " ").capitalize())
    if not view:
        return title
    view = VIEW_TITLES.get(view, view)
    return f"{title}\n{view}" if two_lines else f"{title} ({view})"


def metric_sort_key(metric: str) -> tuple:
    """Class-IL before task-IL, then the METRIC_NAMES display order; unknown names last."""
    base, _, view = metric.partition("/")
    views = list(VIEW_TITLES)
    return (views.index(view) if view in views else len(views), view,
            METRIC_NAMES.index(base) if base in METRIC_NAMES else len(METRIC_NAMES), base)


def stat(values: Sequence[float]) -> dict:
    """{"mean", "std", "n"} over the defined (non-NaN) values; std is the population std (ddof=0)."""
    defined = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if defined.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(defined.mean()), "std": float(defined.std()), "n": int(defined.size)}


def format_stat(value: dict | None, percent: bool = True) -> str:
    """"83.7 ± 0.4" (percent) or "2.81 ± 0.05" (seconds); one defined value prints without ± ;
    "—" when undefined."""
    if not value or value["n"] == 0 or math.isnan(value["mean"]):
        return MISSING
    scale, digits = (100.0, 1) if percent else (1.0, 2)
    text = f"{value['mean'] * scale:.{digits}f}"
    if value["n"] > 1:
        text += f" ± {value['std'] * scale:.{digits}f}"
    return text


def format_cell(row: dict, metric: str) -> str:
    if metric == TRAIN_SECONDS:
        return format_stat(row[TRAIN_SECONDS], percent=False)
    return format_stat(row["metrics"].get(metric))


def strategy_labels(db: ResultsDB, exp_id: str, runs: Sequence[dict]) -> list[str]:
    """Strategy labels in the order the spec lists them; labels found only in runs come after."""
    order: list[str] = []
    spec_yaml = db.experiment(exp_id).get("spec_yaml") or ""
    try:
        spec = yaml.safe_load(spec_yaml) or {}
        for s in spec.get("strategies", []):
            s = {"name": s} if isinstance(s, str) else s
            order.append(s.get("label") or s["name"])
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        order = []  # an unreadable stored spec only loses the ordering, never the rows
    for r in runs:
        if r["label"] not in order:
            order.append(r["label"])
    seen = {r["label"] for r in runs}
    return [label for label in order if label in seen]


def summarize(db: ResultsDB, exp_id: str) -> list[dict]:
    """One row per strategy label, in spec order, aggregated over the finished seeds.

    Row: {"experiment", "strategy" (label), "method" (registry name), "seeds" (finished seeds),
    "n_seeds", "n_unfinished", "metrics": {"<metric>/<view>": {"mean", "std", "n"}},
    "train_seconds": {"mean", "std", "n"}}. Means skip NaN seeds; "n" counts the seeds with a
    defined value; std is the population std (ddof=0). `exp_id` may be a unique prefix.
    """
    exp_id = db.experiment(exp_id)["id"]
    runs = db.runs(exp_id)
    rows = []
    for label in strategy_labels(db, exp_id, runs):
        mine = [r for r in runs if r["label"] == label]
        finished = sorted((r for r in mine if r["status"] == "finished"), key=lambda r: r["seed"])
        per_run = [db.metrics(r["id"]) for r in finished]
        names = sorted({k for m in per_run for k in m}, key=metric_sort_key)
        seconds = [sum(s["train_seconds"] or 0.0 for s in db.steps(r["id"]) if s["step"] >= 0)
                   for r in finished]
        rows.append({
            "experiment": exp_id,
            "strategy": label,
            "method": mine[0]["strategy"],
            "seeds": [r["seed"] for r in finished],
            "n_seeds": len(finished),
            "n_unfinished": len(mine) - len(finished),
            "metrics": {k: stat([m.get(k, float("nan")) for m in per_run]) for k in names},
            TRAIN_SECONDS: stat(seconds),
        })
    return rows


def build_table(summary: Sequence[dict], metrics: Sequence[str] | None = None,
                box_style: box.Box = box.HEAVY_HEAD) -> Table:
    metrics = list(DEFAULT_METRICS if metrics is None else metrics)
    title = f"Experiment {summary[0]['experiment']}" if summary else "Experiment (no runs)"
    table = Table(title=title, caption=CAPTION, box=box_style, caption_justify="left")
    widest = max((len(row["strategy"]) for row in summary), default=8)
    table.add_column("Strategy", style="bold", no_wrap=True, min_width=max(8, widest))
    table.add_column("Seeds", justify="right", no_wrap=True, min_width=5)
    for metric in metrics:
        table.add_column(column_title(metric, two_lines=True), justify="right", no_wrap=True)
    for row in summary:
        seeds = str(row["n_seeds"]) + (f" (+{row['n_unfinished']} unfinished)" if row["n_unfinished"] else "")
        table.add_row(row["strategy"], seeds, *(format_cell(row, m) for m in metrics))
    return table


def render_table(summary: Sequence[dict], console: Console | None = None,
                 metrics: Sequence[str] | None = None) -> Table:
    """Print the summary as a rich table (rows = strategies, columns = `metrics`, default
    DEFAULT_METRICS; "train_seconds" is the per-run training time) and return the table."""
    table = build_table(summary, metrics)
    (console or Console()).print(table)
    return table


def table_text(summary: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """The same table as plain ASCII text, without colour, for logs and tests."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, color_system=None, force_terminal=False, soft_wrap=False)
    console.print(build_table(summary, metrics, box_style=box.ASCII))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


__all__ = ["CAPTION", "DEFAULT_METRICS", "TRAIN_SECONDS", "column_title", "format_stat", "render_table",
           "summarize", "table_text"]
