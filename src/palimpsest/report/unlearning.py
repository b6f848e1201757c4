"""Reports of unlearning experiments: one row per (forget request, method), mean ± sample std over
seeds, read from the ledger; the retrained model's row is the target every other row is compared
with, and the verdict column says which audits a method failed against it."""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Sequence

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from ..forget.request import ForgetRequest
from ..run.store.db import ResultsDB
from ..run.summary import summarize_ledger
from .page import PARTS, TablePart, figure_html, write_report
from .table import built_text, MISSING, format_stat

summarize_unlearning = summarize_ledger

COLUMNS: tuple[tuple[str, str, bool], ...] = (
    # (audit key, title, is a percentage)
    ("forget_accuracy", "Forget acc", True),
    ("retain_accuracy", "Retain acc", True),
    ("test_accuracy", "Test acc", True),
    ("test_other_accuracy", "Test acc\nother classes", True),
    ("mia_score", "MIA score", True),
    ("reference_mia_auc", "Per-example\nMIA AUC", True),
    ("privacy_gap", "Privacy gap\nvs retrain", True),
    ("avg_gap", "Avg gap\n(reported)", True),
    ("relearn_steps_to_50pct", "Relearn steps\nto 50%", False),
    ("probe_forget_class_accuracy", "Probe acc\nforgot classes", True),
    ("seconds", "Seconds", False),
    ("speedup_vs_retrain", "Speed-up\nvs retrain", False),
    ("speedup_vs_retrain_cpu", "CPU-time\nspeed-up", False),
    ("verdict", "Verdict\n(failed audits)", False),
)
CAPTION = ("Mean ± sample std (n−1) over seeds. Forget / retain accuracy on the training forget / retain sets; "
           "MIA score = share of the forget set a population attack calls members (reported, not weighed); "
           "per-example MIA AUC = RMIA with reference models, forget set vs held-out examples scored alike; "
           "privacy gap = that AUC minus the retrained model's, the headline privacy measure (two-sided: below "
           "0 is over-forgetting; each seed's 95 % interval decides its verdict); verdict = against the retrained "
           "model over forget accuracy, privacy, relearning, probe and utility, with the audits that failed (the "
           "share of seeds when they disagree); avg gap = mean |difference "
           "from the retrained model| over forget, retain and test accuracy and MIA score (SalUn; reported, not "
           "weighed: it barely tracks membership); relearn steps = fine-tuning steps on a few forget examples until forget accuracy reaches 50% (0 = never lost); probe acc = a linear probe on frozen features, on the forgotten classes' test examples; speed-ups are retraining's wall / CPU "
           "time over the method's, in the same run. The retrained row is the target: beyond it is over-forgetting. Formulas: docs/METRICS.md.")


def verdict_cell(audits: Sequence[dict]) -> str:
    """The verdict over seeds: the most common one (with its share when seeds disagree) and every
    audit that failed on some seed."""
    from collections import Counter
    verdicts = Counter(a["verdict"] for a in audits if a.get("verdict"))
    if not verdicts:
        return MISSING
    verdict, count = verdicts.most_common(1)[0]
    text = verdict + (f" ({count}/{sum(verdicts.values())})" if count < sum(verdicts.values()) else "")
    failed = list(dict.fromkeys(f.split(":")[0] for a in audits for f in a.get("verdict_failed") or []))
    return text + (f": {', '.join(failed)}" if failed else "")


def _cell(row: dict, key: str, percent: bool) -> str:
    if key == "verdict":
        return verdict_cell(row["audits"]) if row["label"] != "retrain" else "target"
    value = row["stats"].get(key)
    if key.startswith("speedup_vs_retrain") and value and value["n"]:
        return f"{value['mean']:.1f}x"
    if key == "relearn_steps_to_50pct":
        curves = [a["relearn_curve"] for a in row["audits"] if a.get("relearn_curve")]
        never = sum(1 for a in row["audits"] if a.get("relearn_curve") and a.get(key) is None)
        if curves and never == len(curves):
            return f"> {len(curves[0]) - 1}"  # not back to 50% within the relearning budget
        if value and value["n"]:
            text = f"{value['mean']:.1f}" + (f" ± {value['std']:.1f}" if value["n"] > 1 else "")
            return text + (f" ({never} never)" if never else "")
    return format_stat(value, percent=percent) if value else MISSING


def _columns(summary: Sequence[dict]) -> list[tuple[str, str, bool]]:
    present = {k for row in summary for k in row["stats"]} | {k for row in summary for a in row.get("audits", [])
                                                               for k in a if k == "verdict"}
    return [c for c in COLUMNS if c[0] in present]


# The columns kept when the terminal is too narrow for all of them (the HTML and CSV keep every one).
COMPACT = {"forget_accuracy": "Forget", "test_other_accuracy": "Test\nother", "test_accuracy": "Test",
           "privacy_gap": "Privacy\ngap", "speedup_vs_retrain_cpu": "CPU\nspeed-up", "verdict": "Verdict"}


def build_unlearning_table(summary: Sequence[dict], box_style=box.HEAVY_HEAD, width: int | None = None) -> Table:
    """The table; with a `width` below what every column needs, only the COMPACT columns."""
    title = f"Unlearning experiment {summary[0]['experiment']}" if summary else "Unlearning (no entries)"
    cols = _columns(summary)
    caption = CAPTION
    requests = list(dict.fromkeys(row["request"] for row in summary))
    compact = width is not None and width < 40 + 12 * len(cols)
    if compact:
        cols = [(k, COMPACT[k], p) for k, _, p in cols if k in COMPACT]
        if "test_other_accuracy" in {k for k, _, _ in cols}:  # one test column is enough here
            cols = [c for c in cols if c[0] != "test_accuracy"]
        caption = ("Narrow terminal: some columns left out (the HTML report and `palimpsest export` keep them all). "
                   + caption)
        if len(requests) == 1:
            title += f"\nforget {requests[0]}"
    table = Table(title=title, caption=caption, box=box_style, caption_justify="left")
    show_request = not (compact and len(requests) == 1)
    if show_request:
        table.add_column("Request", no_wrap=True)
    table.add_column("Method", style="bold", no_wrap=True)
    table.add_column("Seeds", justify="right")
    for _, title_, _ in cols:
        table.add_column(title_, justify="right", no_wrap=True)
    for row in summary:
        seeds = str(row["n_seeds"]) + (f" (+{row['failed']} failed)" if row["failed"] else "")
        table.add_row(*([row["request"]] if show_request else []), row["label"], seeds,
                      *(_cell(row, k, p) for k, _, p in cols))
    return table


def render_unlearning_table(summary: Sequence[dict], console: Console | None = None) -> Table:
    console = console or Console()
    table = build_unlearning_table(summary, width=console.width)
    console.print(table)
    return table


def unlearning_table_text(summary: Sequence[dict]) -> str:
    return built_text(build_unlearning_table, summary, width=300)


def ledger_table(entries: Sequence[dict], title: str = "Ledger") -> Table:
    """Every ledger entry, in the order it was written: request, seed, method, status and its key
    audit numbers (verdicts against the retrained model), or the error that ended it."""
    table = Table(title=title, box=box.SIMPLE_HEAD, caption="Accuracies in %; verdicts compare with the retrained "
                  "model (the target); `palimpsest export` writes every audit number.", caption_justify="left")
    for name, justify in (("Request", "left"), ("Seed", "right"), ("Method", "left"), ("Status", "left"),
                          ("Forget", "right"), ("Test", "right"), ("Privacy gap", "right"), ("Avg gap", "right"),
                          ("Verdict", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "Verdict")
    for e in entries:
        a = e.get("audit") or {}
        pct = lambda key: f"{100 * a[key]:.1f}" if isinstance(a.get(key), (int, float)) else MISSING  # noqa: E731
        if e["status"] in ("finished", "diverged") and a:
            verdict = verdict_cell([a]) if a.get("verdict") else "target" if e["label"] == "retrain" else \
                a.get("verdict_forget_accuracy", MISSING)
            if e["status"] == "diverged":
                verdict = "diverged: " + (e.get("error") or "")
        else:
            verdict = (e.get("error") or "").strip().splitlines()[-1:] or [e["status"]]
            verdict = verdict[0][:60]
        request = int(e["id"].split("/request")[1].split("/")[0])
        table.add_row(f"{request}: {ForgetRequest(**e['request']).describe()}", str(e["seed"]), e["label"], e["status"],
                      pct("forget_accuracy"), pct("test_accuracy"), pct("privacy_gap"), pct("avg_gap"), verdict)
    return table


def export_ledger_csv(db: ResultsDB, exp_id: str | None, out_dir: str | Path) -> list[Path]:
    """ledger.csv: one row per ledger entry with every audit number."""
    exp_id = db.experiment(exp_id)["id"]
    entries = db.ledger(exp_id)
    keys = sorted({k for e in entries if e["audit"] for k in e["audit"]})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ledger.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "source", "seed", "request", "method", "label", "status", "seconds", *keys])
        for e in entries:
            audit = e["audit"] or {}
            w.writerow([e["id"], e["source"], e["seed"], ForgetRequest(**e["request"]).describe(), e["method"],
                        e["label"], e["status"], e["seconds"], *("" if audit.get(k) is None else audit.get(k)
                                                                 for k in keys)])
    return [path]


def _bars(summary: Sequence[dict]):
    from matplotlib.figure import Figure
    metrics = [(k, t.replace("\n", " ")) for k, t, p in _columns(summary) if p and k not in ("avg_gap", "privacy_gap")]
    requests = sorted({r["request_index"] for r in summary})
    if not summary or not metrics:
        return None
    fig = Figure(figsize=(4.2 * len(requests) + 1, 3.6), layout="constrained")
    axes = fig.subplots(1, len(requests), squeeze=False)[0]
    for ax, ri in zip(axes, requests):
        rows = [r for r in summary if r["request_index"] == ri]
        width = 0.8 / max(len(metrics), 1)
        x = np.arange(len(rows))
        for j, (key, title) in enumerate(metrics):
            means = [100 * r["stats"].get(key, {"mean": np.nan})["mean"] for r in rows]
            stds = [100 * r["stats"].get(key, {"std": 0})["std"] for r in rows]
            ax.bar(x + j * width - 0.4 + width / 2, means, width, yerr=stds, label=title, capsize=2)
        ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(rows[0]["request"], fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def unlearning_summary_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    e = html.escape
    cols = _columns(summary)
    head = "".join(f"<th>{e(t.replace(chr(10), ' '))}</th>" for _, t, _ in cols)
    body = "".join(
        f"<tr><td>{e(r['request'])}</td><th>{e(r['label'])}</th><td class='num'>{r['n_seeds']}</td>"
        + "".join(f"<td class='num'>{e(_cell(r, k, p))}</td>" for k, _, p in cols) + "</tr>" for r in summary)
    return (f"<table class='summary'><caption>{e(CAPTION)}</caption><thead><tr><th>Request</th><th>Method</th>"
            f"<th>Seeds</th>{head}</tr></thead><tbody>{body}</tbody></table>")


def unlearning_bars_html(db: ResultsDB, exp: dict, summary: Sequence[dict], cache: dict) -> str:
    return "<h2>Accuracies and membership by method</h2>" + figure_html(
        _bars(summary), "Unlearning audits", "Mean over seeds with ± std; compare each method with the retrain bars "
        "(the target).")


PARTS.register("unlearning_summary", summary="forget requests x methods with every audit, mean ± std over seeds")(
    TablePart(summarize_ledger, lambda summary, console=None: render_unlearning_table(summary, console),
              unlearning_table_text, unlearning_summary_html, export_ledger_csv))
PARTS.register("unlearning_bars", summary="accuracies and membership by method")(unlearning_bars_html)


def write_unlearning_report(db: ResultsDB, exp_id: str | None, path: str | Path) -> Path:
    """The unlearning experiment's HTML page (the one report path, `page.write_report`)."""
    return write_report(db, exp_id, path)
