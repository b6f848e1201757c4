"""Reports of lifecycle experiments (run/kinds/lifecycle.py): the whole history of a model in one
table, one row per (event, lineage) with mean ± sample std over seeds, and curves of every
lineage's accuracies across the events, the retrained lineage being the target."""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Sequence

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from ..run.kinds.lifecycle import summarize_lifecycle
from ..run.store.db import ResultsDB
from .page import PARTS, TablePart, figure_html
from .table import built_text, print_built, MISSING, format_stat
from .unlearning import verdict_cell

COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("forget_accuracy", "Forget acc\n(all so far)", True),
    ("forget_accuracy_request0", "Forget acc\n1st request", True),
    ("retain_accuracy", "Retain acc", True),
    ("test_accuracy", "Test acc\n(seen classes)", True),
    ("test_other_accuracy", "Test acc\nkept classes", True),
    ("mia_score", "MIA score", True),
    ("relearn_steps_to_50pct", "Relearn steps\nto 50%", False),
    ("speedup_vs_retrain", "Speed-up\nvs retrain", False),
    ("verdict", "Verdict\n(failed audits)", False),
)
CAPTION = ("A model's history: each event (learn N steps / forget a request) then every audit again, mean ± "
           "sample std (n−1) over seeds. retrain = the strategy trained from scratch on the same stream without "
           "what was forgotten so far (the target); original = the lineage that ignores forget requests. Forget "
           "acc on the training examples forgotten so far (and on the first request's: does earlier forgetting "
           "hold up?); test acc on the classes learned so far. Formulas: docs/METRICS.md, docs/LIFECYCLE.md.")


def _cell(row: dict, key: str, percent: bool) -> str:
    if key == "verdict":
        return "target" if row["label"] == "retrain" else verdict_cell(row["audits"])
    value = row["stats"].get(key)
    if key == "speedup_vs_retrain" and value and value["n"]:
        return f"{value['mean']:.1f}x"
    return format_stat(value, percent=percent) if value else MISSING


def _columns(summary: Sequence[dict]) -> list[tuple[str, str, bool]]:
    present = {k for row in summary for k in row["stats"]} | {"verdict"}
    return [c for c in COLUMNS if c[0] in present]


def build_lifecycle_table(summary: Sequence[dict], box_style=box.HEAVY_HEAD) -> Table:
    title = f"Lifecycle {summary[0]['experiment']}" if summary else "Lifecycle (no entries)"
    cols = _columns(summary)
    table = Table(title=title, caption=CAPTION, box=box_style, caption_justify="left")
    for name in ("Event", "Lineage", "Seeds"):
        table.add_column(name, no_wrap=True)
    for _, title_, _ in cols:
        table.add_column(title_, justify="right")
    for row in summary:
        seeds = str(row["n_seeds"]) + (f" (+{row['failed']} failed)" if row["failed"] else "")
        table.add_row(f"{row['event']}: {row['request']}", row["label"], seeds, *(_cell(row, k, p) for k, _, p in cols))
    return table


def render_lifecycle_table(summary: Sequence[dict], console: Console | None = None) -> Table:
    return print_built(build_lifecycle_table, summary, console)


def lifecycle_table_text(summary: Sequence[dict]) -> str:
    return built_text(build_lifecycle_table, summary, width=300)


def lifecycle_summary_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    e = html.escape
    cols = _columns(summary)
    head = "".join(f"<th>{e(t.replace(chr(10), ' '))}</th>" for _, t, _ in cols)
    body = "".join(
        f"<tr><td>{e(str(r['event']))}: {e(r['request'])}</td><th>{e(r['label'])}</th>"
        f"<td class='num'>{r['n_seeds']}</td>" + "".join(f"<td class='num'>{e(_cell(r, k, p))}</td>" for k, _, p in cols)
        + "</tr>" for r in summary)
    return (f"<table class='summary'><caption>{e(CAPTION)}</caption><thead><tr><th>Event</th><th>Lineage</th>"
            f"<th>Seeds</th>{head}</tr></thead><tbody>{body}</tbody></table>")


def export_lifecycle_csv(db: ResultsDB, exp_id: str | None, out_dir: str | Path) -> list[Path]:
    """lifecycle.csv: one row per ledger entry (lineage x event x seed) with every audit number."""
    exp_id = db.experiment(exp_id)["id"]
    entries = db.ledger(exp_id)
    keys = sorted({k for e in entries if e["audit"] for k, v in e["audit"].items() if not isinstance(v, list)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lifecycle.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "event", "seed", "label", "method", "status", "seconds", *keys])
        for e in entries:
            audit = e["audit"] or {}
            w.writerow([e["id"], e["id"].rsplit("/event", 1)[1], e["seed"], e["label"], e["method"], e["status"],
                        e["seconds"], *("" if audit.get(k) is None else audit.get(k) for k in keys)])
    return [path]


def _curves(summary: Sequence[dict]):
    from matplotlib.figure import Figure
    if not summary:
        return None
    labels = list(dict.fromkeys(r["label"] for r in summary))
    events = sorted({r["event"] for r in summary})
    names = {r["event"]: r["request"] for r in summary}
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "test_accuracy", "Test accuracy (classes learned so far)"),
                           (axes[1], "forget_accuracy", "Forget accuracy (everything forgotten so far)")):
        for label in labels:
            rows = {r["event"]: r for r in summary if r["label"] == label}
            ys = [100 * rows[e]["stats"][key]["mean"] if e in rows and key in rows[e]["stats"] else np.nan for e in events]
            ax.plot(events, ys, marker="o", label=label, linestyle="--" if label == "retrain" else "-")
        ax.set_xticks(events, [f"{e}: {names[e]}" for e in events], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def lifecycle_curves_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    return "<h2>Accuracies over the model's life</h2>" + figure_html(
        _curves(summary), "Lifecycle curves", "Mean over seeds after each event; the dashed line is the strategy "
        "retrained without the forgotten data (the target).")


PARTS.register("lifecycle_summary", summary="a model's events x lineages with every audit, mean ± sample std over "
               "seeds")(TablePart(summarize_lifecycle,
                                  lambda summary, console=None: render_lifecycle_table(summary, console),
                                  lifecycle_table_text, lifecycle_summary_html, export_lifecycle_csv))
PARTS.register("lifecycle_curves", summary="accuracies of every lineage across a model's events")(lifecycle_curves_html)

__all__ = ["build_lifecycle_table", "export_lifecycle_csv", "lifecycle_table_text", "render_lifecycle_table"]
