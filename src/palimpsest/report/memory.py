"""Reports of memory experiments (`kind: memory`): one row per mixer with its final recall accuracy at
every learning rate tried, the best rate and the window of rates that reach the target; accuracy curves
over training (mean ± std over seeds at each mixer's best learning rate)."""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from ..run.kinds.memory import summarize_memory
from ..run.store.db import ResultsDB
from .page import PARTS, TablePart, figure_html
from .table import built_text, print_built, MISSING, format_stat

CAPTION = ("Recall accuracy (%) on a fixed evaluation set after the last training step, mean ± population std "
           "over seeds, at each learning rate tried; best = the learning rate with the highest mean; window = the "
           "learning rates whose mean reaches the spec's target (or comes within 2 points of the best).")


def _lr(lr: float) -> str:
    return f"{lr:g}"


def _window(row: dict) -> str:
    return ", ".join(_lr(x) for x in row["window"]) or "none"


def _per_lr(row: dict) -> str:
    parts = []
    for lr, v in row["lrs"].items():
        text = format_stat(v["final"])
        if v["diverged"]:
            text += f" ({v['diverged']} diverged)"
        parts.append(f"{_lr(lr)}: {text}")
    return "; ".join(parts)


def build_memory_table(summary: Sequence[dict], style=box.SIMPLE_HEAVY) -> Table:
    table = Table(box=style, title="Recall accuracy (%)", caption=CAPTION, caption_justify="left")
    for title in ("Mixer", "Best", "Best lr", "Window", "Every lr", "Seconds"):
        table.add_column(title, overflow="fold")
    for row in summary:
        seconds = row["lrs"][row["best_lr"]]["seconds"] if row["best_lr"] is not None else None
        table.add_row(row["mixer"], format_stat(row["best"]), _lr(row["best_lr"]) if row["best_lr"] else MISSING,
                      _window(row), _per_lr(row), format_stat(seconds, percent=False) if seconds else MISSING)
    return table


def render_memory_table(summary: Sequence[dict], console: Console | None = None) -> Table:
    return print_built(build_memory_table, summary, console)


def memory_table_text(summary: Sequence[dict]) -> str:
    return built_text(build_memory_table, summary, width=200)


def memory_summary_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    e = html.escape
    head = "".join(f"<th>{t}</th>" for t in ("Mixer", "Best (%)", "Best lr", "Window", "Every lr (%)", "Seconds"))
    body = []
    for row in summary:
        seconds = row["lrs"][row["best_lr"]]["seconds"] if row["best_lr"] is not None else None
        body.append("<tr>" + "".join([
            f"<td>{e(row['mixer'])}</td>", f'<td class="num">{e(format_stat(row["best"]))}</td>',
            f'<td class="num">{e(_lr(row["best_lr"]) if row["best_lr"] else MISSING)}</td>',
            f"<td>{e(_window(row))}</td>", f"<td>{e(_per_lr(row))}</td>",
            f'<td class="num">{e(format_stat(seconds, percent=False) if seconds else MISSING)}</td>']) + "</tr>")
    return (f'<h2>Recall</h2><table class="summary"><caption>{e(CAPTION)}</caption><tr>{head}</tr>'
            + "".join(body) + "</table>")


def export_memory_csv(db: ResultsDB, exp_id: str, out_dir: str | Path) -> list[Path]:
    """memory.csv: one row per (mixer, learning rate) with the final accuracy over seeds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "memory.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mixer", "lr", "final_mean", "final_std", "n_seeds", "diverged", "best_lr", "in_window"])
        for row in summarize_memory(db, exp_id):
            for lr, v in row["lrs"].items():
                w.writerow([row["mixer"], lr, v["final"]["mean"], v["final"]["std"], v["final"]["n"], v["diverged"],
                            lr == row["best_lr"], lr in row["window"]])
    return [path]


def recall_curves_figure(summary: Sequence[dict]) -> Figure | None:
    rows = [r for r in summary if r["best_lr"] is not None and r["curves"].get(r["best_lr"])]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for row in rows:
        curves = row["curves"][row["best_lr"]]
        n = max(len(c) for c in curves)
        steps = [x for x, _ in max(curves, key=len)]
        values = np.full((len(curves), n), np.nan)
        for i, c in enumerate(curves):
            values[i, :len(c)] = [a for _, a in c]
        mean = np.nanmean(values, 0) * 100
        std = np.nanstd(values, 0) * 100
        line, = ax.plot(steps, mean, marker="o", markersize=3, label=f"{row['mixer']} (lr {_lr(row['best_lr'])})")
        if len(curves) > 1:
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("recall accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def recall_curves_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    rows = summary if summary and "curves" in summary[0] else summarize_memory(db, exp["id"])
    n = max((len(c) for r in rows for c in r["curves"].values()), default=0)
    seeds = ", ".join(sorted({str(len(r["curves"].get(r["best_lr"], []))) for r in rows if r["best_lr"]}))
    return "<h2>Recall accuracy over training</h2>" + figure_html(
        recall_curves_figure(rows), "recall accuracy curves",
        f"Each mixer at its best learning rate; mean over seeds ({seeds or '0'} per mixer), band = ± std; "
        f"{n} evaluation points including the untrained model.")


PARTS.register("memory_summary", summary="mixers x learning rates: final recall accuracy, best rate, window")(
    TablePart(summarize_memory, lambda summary, console=None: render_memory_table(summary, console),
              memory_table_text, memory_summary_html, export_memory_csv))
PARTS.register("recall_curves", summary="recall accuracy over training per mixer (best learning rate)")(
    recall_curves_html)

__all__ = ["export_memory_csv", "memory_table_text", "recall_curves_figure", "render_memory_table"]
