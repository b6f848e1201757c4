"""The strategy table of a learning experiment in the terminal (mean ± std over seeds).

Rows come from `run.summary.summarize_runs`, which reads only what the store holds; every number
can be traced back to one formula in docs/METRICS.md. In a terminal too narrow for every column
the table keeps the columns that fit, most important first (task-IL first in a task-incremental
run), and says how many it left out; the HTML report and the CSV export keep them all.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from ..evaluate.aggregate import stat
from ..run.summary import TRAIN_SECONDS, metric_sort_key, summarize_runs

summarize = summarize_runs

DEFAULT_METRICS: tuple[str, ...] = (
    "final_average_accuracy/class", "final_average_accuracy/task", "average_incremental_accuracy/class",
    "forgetting/class", "backward_transfer/class", "forward_transfer/class", "plasticity/class",
    "negative_flip_rate/class", TRAIN_SECONDS,
)
# the same metrics with task-IL first, for task-incremental runs
TASK_FIRST: tuple[str, ...] = (
    "final_average_accuracy/task", "final_average_accuracy/class", "average_incremental_accuracy/task",
    "forgetting/task", "backward_transfer/task", "forward_transfer/task", "plasticity/task",
    "negative_flip_rate/task", TRAIN_SECONDS,
)

METRIC_TITLES: dict[str, str] = {
    "final_average_accuracy": "Final acc",
    "final_example_accuracy": "Final ex acc",
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


def uneven_views(summary: Sequence[dict]) -> list[str]:
    """Views in which the final accuracy over experiences and over test examples differ (by more
    than 0.05 points for some strategy): the test experiences are of unequal sizes there."""
    out = []
    for view in ("class", "task"):
        for row in summary:
            per_exp = row["metrics"].get(f"final_average_accuracy/{view}")
            pooled = row["metrics"].get(f"final_example_accuracy/{view}")
            if per_exp and pooled and per_exp["n"] and pooled["n"] and \
                    abs(per_exp["mean"] - pooled["mean"]) > 5e-4:
                out.append(view)
                break
    return out


def default_metrics(summary: Sequence[dict]) -> tuple[str, ...]:
    """The table's metrics in priority order: task-IL first when every run is task-incremental,
    and the accuracy over all test examples next to the per-experience one when they differ."""
    task = bool(summary) and all(row.get("scenario") == "task" for row in summary)
    metrics = list(TASK_FIRST if task else DEFAULT_METRICS)
    for view in uneven_views(summary):
        metrics.insert(metrics.index(f"final_average_accuracy/{view}") + 1, f"final_example_accuracy/{view}")
    return tuple(metrics)


UNEVEN_NOTE = ("The test experiences are of unequal sizes, so two final accuracies differ: 'Final acc' is "
               "the mean over experiences (each counts once), 'Final ex acc' the accuracy over all test "
               "examples pooled (Avalanche's stream accuracy). docs/METRICS.md gives both formulas.")


def _width(texts: Sequence[str]) -> int:
    return max((len(line) for t in texts for line in t.split("\n")), default=0)


def seeds_text(row: dict) -> str:
    """"3", or "2 (+1 diverged)", "2 (+1 unfinished)"."""
    diverged = row.get("n_diverged", 0)
    others = row["n_unfinished"] - diverged
    notes = [f"+{diverged} diverged"] * bool(diverged) + [f"+{others} unfinished"] * bool(others)
    return str(row["n_seeds"]) + (f" ({', '.join(notes)})" if notes else "")


def fitting_metrics(summary: Sequence[dict], metrics: Sequence[str], width: int) -> list[str]:
    """The longest prefix of `metrics` whose columns fit in `width` characters (at least one)."""
    used = 4 + _width(["Strategy", *(r["strategy"] for r in summary)]) + 3 + \
        _width(["Seeds", *(seeds_text(r) for r in summary)]) + 3
    kept: list[str] = []
    for m in metrics:
        need = _width([column_title(m, two_lines=True), *(format_cell(r, m) for r in summary)]) + 3
        if kept and used + need > width:
            break
        kept.append(m)
        used += need
    return kept


def build_table(summary: Sequence[dict], metrics: Sequence[str] | None = None,
                box_style: box.Box = box.HEAVY_HEAD, width: int | None = None) -> Table:
    """The table; `width` (a terminal's) keeps only the columns that fit."""
    wanted = list(default_metrics(summary) if metrics is None else metrics)
    shown = fitting_metrics(summary, wanted, width) if width is not None else wanted
    title = f"Experiment {summary[0]['experiment']}" if summary else "Experiment (no runs)"
    caption = CAPTION
    if any(m.startswith("final_example_accuracy/") for m in shown):
        caption = UNEVEN_NOTE + " " + caption
    if len(shown) < len(wanted):
        caption = (f"{len(wanted) - len(shown)} more column(s) in the HTML report and in `palimpsest export`: "
                   + ", ".join(column_title(m) for m in wanted[len(shown):]) + ". " + caption)
    table = Table(title=title, caption=caption, box=box_style, caption_justify="left")
    widest = max((len(row["strategy"]) for row in summary), default=8)
    table.add_column("Strategy", style="bold", no_wrap=True, min_width=max(8, widest))
    table.add_column("Seeds", justify="right", no_wrap=True, min_width=max(5, _width([seeds_text(r) for r in summary])))
    for metric in shown:
        table.add_column(column_title(metric, two_lines=True), justify="right", no_wrap=True)
    for row in summary:
        table.add_row(row["strategy"], seeds_text(row), *(format_cell(row, m) for m in shown))
    return table


def render_table(summary: Sequence[dict], console: Console | None = None,
                 metrics: Sequence[str] | None = None) -> Table:
    """Print the summary as a rich table (rows = strategies, columns = `metrics`, default
    DEFAULT_METRICS; "train_seconds" is the per-run training time), keeping the columns that fit
    the console, and return the table."""
    console = console or Console()
    table = build_table(summary, metrics, width=console.width)
    console.print(table)
    return table


def table_text(summary: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """The same table as plain ASCII text, every column, without colour, for logs and tests."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, color_system=None, force_terminal=False, soft_wrap=False)
    console.print(build_table(summary, metrics, box_style=box.ASCII))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"



def print_built(build: Callable, summary: Sequence[dict], console: Console | None = None) -> Table:
    """Print the table `build(summary)` makes (a kind's terminal table) and return it."""
    console = console or Console()
    table = build(summary)
    console.print(table)
    return table


def built_text(build: Callable, summary: Sequence[dict], width: int = 300) -> str:
    """The table `build(summary, box.ASCII)` makes, as plain text (for logs and tests)."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(build(summary, box.ASCII))
    return buffer.getvalue()

__all__ = ["print_built", "built_text", "CAPTION", "DEFAULT_METRICS", "TASK_FIRST", "TRAIN_SECONDS", "build_table", "column_title",
           "default_metrics", "fitting_metrics", "uneven_views", "UNEVEN_NOTE", "format_cell", "format_stat", "metric_sort_key", "render_table",
           "stat", "summarize", "table_text"]
