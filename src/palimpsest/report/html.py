"""One self-contained HTML file per experiment: summary table, plots, and the spec that made it.

Plots are PNGs drawn with matplotlib's Agg canvas (no pyplot, so no global figure state and no
display needed) and embedded as base64; the page has no external CSS, JS, fonts or images, so it
can be mailed, archived or opened offline.
"""
from __future__ import annotations

import html
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..core.registry import METRICS
from ..evaluate.metrics import first_trained_step
from ..evaluate.records import RunRecord
from ..run.store.db import ResultsDB
from .csv import export_csv
from .page import PARTS, TablePart, figure_html, write_report
from .table import (
    CAPTION,
    TRAIN_SECONDS,
    VIEW_TITLES,
    column_title,
    UNEVEN_NOTE,
    default_metrics,
    format_cell,
    metric_sort_key,
    render_table,
    seeds_text,
    summarize,
    table_text,
    uneven_views,
)

BAR_METRICS: tuple[str, ...] = (
    "final_average_accuracy/class", "average_incremental_accuracy/class", "plasticity/class",
    "forgetting/class", "final_average_accuracy/task",
)
TASK_BAR_METRICS: tuple[str, ...] = (
    "final_average_accuracy/task", "average_incremental_accuracy/task", "plasticity/task",
    "forgetting/task", "final_average_accuracy/class",
)
PANELS_PER_ROW = 4
ANNOTATE_MAX_CELLS = 15  # beyond this many rows or columns, cell labels become unreadable

# -- data --------------------------------------------------------------------------------------


def _nanmean_stack(matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise mean and population std over seeds, NaN where no seed has a value; matrices of
    different shapes (a run cut short) are padded with NaN to the largest."""
    rows = max(m.shape[0] for m in matrices)
    cols = max(m.shape[1] for m in matrices)
    stack = np.full((len(matrices), rows, cols), np.nan)
    for i, m in enumerate(matrices):
        stack[i, :m.shape[0], :m.shape[1]] = m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells are expected (joint, untrained)
        return np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)


def _mean_matrices(records: dict[str, list[RunRecord]], view: str) -> dict[str, dict]:
    """label -> {"mean", "std" (S, T) in [0, 1], "step_tasks", "n_seeds"} for labels with data."""
    out = {}
    for label, recs in records.items():
        mats = [np.asarray(r.acc[view], dtype=float) for r in recs
                if view in r.acc and np.asarray(r.acc[view]).size]
        if not mats:
            continue
        mean, std = _nanmean_stack(mats)
        longest = max(recs, key=lambda r: len(r.step_tasks))
        out[label] = {"mean": mean, "std": std, "step_tasks": longest.step_tasks[:mean.shape[0]],
                      "n_seeds": len(mats)}
    return out


# -- figures -----------------------------------------------------------------------------------


def _grid(n_panels: int) -> tuple[int, int]:
    cols = min(n_panels, PANELS_PER_ROW)
    return math.ceil(n_panels / cols), cols


def _panels(n_panels: int, n_series: int):
    """A figure of `n_panels` panels sharing the y axis (spare grid cells hidden) and one colour per
    series: tab10 up to 10 series, viridis beyond. Returns (fig, axes (2-D), colors)."""
    n_rows, n_cols = _grid(n_panels)
    colors = (matplotlib.colormaps["tab10"].colors if n_series <= 10
              else matplotlib.colormaps["viridis"](np.linspace(0, 0.95, n_series)))
    fig = Figure(figsize=(min(3.4 * n_cols + 1.4, 16), 2.7 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    return fig, axes, colors


def _step_label(step: int, tasks: Sequence[int], n_tasks: int) -> str:
    if list(tasks) == [step]:
        return str(step)
    if n_tasks > 1 and sorted(tasks) == list(range(n_tasks)):
        return f"{step}: all"
    text = ",".join(str(t) for t in tasks)
    return f"{step}: {text if len(text) <= 8 else text[:7] + '…'}"


def heatmap_figure(matrices: dict[str, dict], view: str) -> Figure | None:
    """Accuracy matrix per strategy (mean over seeds, %): rows = training steps, columns = test
    experiences; grey cells are undefined."""
    if not matrices or all(np.isnan(m["mean"]).all() for m in matrices.values()):
        return None
    n_rows, n_cols = _grid(len(matrices))
    max_s = max(m["mean"].shape[0] for m in matrices.values())
    max_t = max(m["mean"].shape[1] for m in matrices.values())
    cell = 0.42 if max(max_s, max_t) <= 10 else 0.25
    width = n_cols * max(3.0, cell * max_t + 1.0) + 1.0
    height = n_rows * max(2.0, cell * max_s + 1.3) + 0.4
    fig = Figure(figsize=(min(width, 16), min(height, 14)), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = None
    for ax, (label, m) in zip(axes.flat, matrices.items()):
        values = m["mean"] * 100
        n_steps, n_tasks = values.shape
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="equal",
                          interpolation="nearest")
        seeds = f" ({m['n_seeds']} seeds)" if m["n_seeds"] > 1 else ""
        ax.set_title(f"{label}{seeds}", fontsize=10)
        ax.set_xlabel("test experience", fontsize=8)
        ax.set_ylabel("after training step", fontsize=8)
        ax.set_xticks(range(n_tasks))
        ax.set_yticks(range(n_steps))
        ax.set_yticklabels([_step_label(s, m["step_tasks"][s] if s < len(m["step_tasks"]) else [s], n_tasks)
                            for s in range(n_steps)])
        ax.tick_params(labelsize=7, length=2)
        if max(n_steps, n_tasks) <= ANNOTATE_MAX_CELLS:
            size = 7 if n_tasks <= 8 else 5.5
            for s in range(n_steps):
                for t in range(n_tasks):
                    v = values[s, t]
                    if not np.isnan(v):
                        ax.text(t, s, f"{v:.0f}", ha="center", va="center", fontsize=size,
                                color="white" if v < 55 else "black")
    for ax in list(axes.flat)[len(matrices):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy (%)", aspect=30)
    fig.suptitle(f"Accuracy matrix, {VIEW_TITLES.get(view, view)} (mean over seeds)", fontsize=11)
    return fig


def curves_figure(matrices: dict[str, dict], view: str) -> Figure | None:
    """Accuracy on each test experience after every step, from the step that first trains it;
    one panel per strategy, shaded ± std over seeds."""
    if not matrices or all(np.isnan(m["mean"]).all() for m in matrices.values()):
        return None
    fig, axes, colors = _panels(len(matrices), max(m["mean"].shape[1] for m in matrices.values()))
    handles = {}
    for ax, (label, m) in zip(axes.flat, matrices.items()):
        mean, std = m["mean"] * 100, m["std"] * 100
        n_steps, n_tasks = mean.shape
        first = first_trained_step(m["step_tasks"], n_tasks, n_steps) if len(m["step_tasks"]) == n_steps \
            else np.zeros(n_tasks, dtype=int)
        for t in range(n_tasks):
            start = int(first[t]) if first[t] >= 0 else 0
            steps = np.arange(start, n_steps)
            (line,) = ax.plot(steps, mean[start:, t], marker="o", markersize=3.5, linewidth=1.4,
                              color=colors[t % len(colors)], label=f"exp {t}")
            if m["n_seeds"] > 1:
                low = np.clip(mean[start:, t] - std[start:, t], 0, 100)
                high = np.clip(mean[start:, t] + std[start:, t], 0, 100)
                ax.fill_between(steps, low, high,
                                color=colors[t % len(colors)], alpha=0.15, linewidth=0)
            handles.setdefault(t, line)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_xticks(range(n_steps))
        ax.set_xlim(-0.3, max(n_steps - 0.7, 0.3))
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)", fontsize=8)
    order = sorted(handles)
    fig.legend([handles[t] for t in order], [f"exp {t}" for t in order], loc="outside right", fontsize=7,
               title="test experience", title_fontsize=7, ncols=max(1, math.ceil(len(order) / 12)))
    fig.suptitle(f"Accuracy on each experience over training, {VIEW_TITLES.get(view, view)} "
                 f"(mean ± std over seeds)", fontsize=11)
    return fig


def bars_figure(summary: Sequence[dict], metrics: Sequence[str] = BAR_METRICS) -> Figure | None:
    """Key metrics side by side: one group per metric, one bar per strategy, error bar = std."""
    metrics = [m for m in metrics if any(not math.isnan(r["metrics"].get(m, {"mean": math.nan})["mean"])
                                         for r in summary)]
    if not metrics or not summary:
        return None
    colors = matplotlib.colormaps["tab10"].colors
    n = len(summary)
    width = 0.8 / n
    fig = Figure(figsize=(min(1.1 + len(metrics) * (0.35 * n + 0.8), 15), 3.6), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(summary):
        means = np.array([row["metrics"].get(m, {"mean": math.nan})["mean"] for m in metrics]) * 100
        stds = np.array([row["metrics"].get(m, {"std": math.nan})["std"] for m in metrics]) * 100
        x = np.arange(len(metrics)) - 0.4 + width * (i + 0.5)
        defined = ~np.isnan(means)
        ax.bar(x[defined], means[defined], width * 0.92, yerr=np.nan_to_num(stds[defined]), capsize=2,
               color=colors[i % len(colors)], label=row["strategy"], error_kw={"linewidth": 0.8})
        for xi in x[~defined]:
            ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#555")
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([column_title(m, two_lines=True) for m in metrics], fontsize=8)
    ax.set_ylabel("%", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="y", labelsize=7)
    fig.legend(fontsize=7, loc="outside right upper", ncols=1 if n <= 12 else 2)
    ax.set_title("Key metrics (mean ± std over seeds; ↓ = lower is better)", fontsize=10)
    return fig


# -- html --------------------------------------------------------------------------------------


def _metric_tooltip(metric: str) -> str:
    if metric == TRAIN_SECONDS:
        return "training time of one run in seconds (evaluation excluded)"
    base = metric.partition("/")[0]
    return METRICS.get(base).summary if base in METRICS else metric


def _summary_table(summary: Sequence[dict], metrics: Sequence[str]) -> str:
    e = html.escape
    head = "".join(f'<th title="{e(_metric_tooltip(m))}">{e(column_title(m))}</th>' for m in metrics)
    rows = []
    for row in summary:
        seeds = seeds_text(row)
        cells = "".join(f'<td class="num">{e(format_cell(row, m))}</td>' for m in metrics)
        rows.append(f"<tr><th>{e(row['strategy'])}</th><td class=\"num\">{e(seeds)}</td>{cells}</tr>")
    return (f'<table class="summary"><caption>{e(CAPTION)}</caption>'
            f"<thead><tr><th>Strategy</th><th>Seeds</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _records(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> dict[str, list[RunRecord]]:
    """Finished runs' records per label, loaded once per report."""
    if "records" not in cache:
        records: dict[str, list[RunRecord]] = {row["strategy"]: [] for row in summary}
        for r in db.runs(exp["id"]):
            if r["status"] == "finished":
                records.setdefault(r["label"], []).append(db.record(r["id"]))
        cache["records"] = {label: recs for label, recs in records.items() if recs}
    return cache["records"]


def _matrices(db, exp, summary, cache, view: str) -> dict[str, dict]:
    key = f"matrices/{view}"
    if key not in cache:
        cache[key] = _mean_matrices(_records(db, exp, summary, cache), view)
    return cache[key]


def strategy_summary_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    every = sorted({m for row in summary for m in row["metrics"]}, key=metric_sort_key) + [TRAIN_SECONDS]
    unfinished = sum(row["n_unfinished"] for row in summary)
    note = (f'<p class="note">{unfinished} run(s) did not finish and are left out of every number and plot '
            f"below.</p>" if unfinished else "")
    if uneven_views(summary):
        note += f'<p class="note">{html.escape(UNEVEN_NOTE)}</p>'
    return "\n".join([note, "<h2>Summary</h2>", _summary_table(summary, default_metrics(summary)),
                      "<details><summary>All metrics</summary>", _summary_table(summary, every), "</details>"])


def accuracy_heatmaps_html(db, exp, summary, cache) -> str:
    return "<h2>Accuracy matrices</h2>" + figure_html(
        heatmap_figure(_matrices(db, exp, summary, cache, "class"), "class"), "Class-IL accuracy matrices",
        "Class-IL (no task id at test time). Row s: accuracy after training step s; column j: test experience j; "
        "mean over seeds, in %. Grey = undefined.")


def accuracy_curves_html(db, exp, summary, cache) -> str:
    return "<h2>Accuracy over training</h2>" + figure_html(
        curves_figure(_matrices(db, exp, summary, cache, "class"), "class"), "Class-IL accuracy over training",
        "Class-IL accuracy on each test experience after every training step, starting at the step that first "
        "trains it; shaded band = ± std over seeds.")


def _is_task(summary: Sequence[dict]) -> bool:
    return bool(summary) and all(row.get("scenario") == "task" for row in summary)


def metric_bars_html(db, exp, summary, cache) -> str:
    return "<h2>Metric comparison</h2>" + figure_html(
        bars_figure(summary, TASK_BAR_METRICS if _is_task(summary) else BAR_METRICS), "Metric comparison",
        "Mean over seeds with ± std error bars, in %. Forgetting: lower is better.")


def task_accuracy_heatmaps_html(db, exp, summary, cache) -> str:
    return "<h2>Task-IL accuracy matrices</h2>" + figure_html(
        heatmap_figure(_matrices(db, exp, summary, cache, "task"), "task"), "Task-IL accuracy matrices",
        "Task-IL (logits masked to the test example's task). Rows, columns and colours as above.")


def task_accuracy_curves_html(db, exp, summary, cache) -> str:
    return "<h2>Task-IL accuracy over training</h2>" + figure_html(
        curves_figure(_matrices(db, exp, summary, cache, "task"), "task"), "Task-IL accuracy over training",
        "Task-IL accuracy (logits masked to the test example's task) on each test experience after every "
        "training step, starting at the step that first trains it; shaded band = ± std over seeds.")


PARTS.register("strategy_summary", summary="strategies x metrics, mean ± std over seeds")(
    TablePart(summarize, lambda summary, console=None: render_table(summary, console), table_text,
              strategy_summary_html, export_csv))
PARTS.register("accuracy_heatmaps", summary="class-IL accuracy matrix per strategy")(accuracy_heatmaps_html)
PARTS.register("accuracy_curves", summary="accuracy on each experience over training")(accuracy_curves_html)
PARTS.register("metric_bars", summary="key metrics side by side")(metric_bars_html)
PARTS.register("task_accuracy_heatmaps", summary="task-IL accuracy matrix per strategy")(task_accuracy_heatmaps_html)
PARTS.register("task_accuracy_curves", summary="task-IL accuracy on each experience over training")(
    task_accuracy_curves_html)


def write_html_report(db: ResultsDB, exp_id: str | None, path: str | Path) -> Path:
    """The experiment's self-contained HTML report (the one report path, `page.write_report`)."""
    return write_report(db, exp_id, path)


__all__ = ["bars_figure", "curves_figure", "heatmap_figure", "write_html_report"]
