"""Figures and a self-contained page for the agent-memory store: MemoryBank's forgetting curve as
published next to the corrected one, and the synthetic timeline's recalls per policy.

    from palimpsest.report.agent_memory import write_memory_page
    write_memory_page("memory.html")                 # the curves alone
    write_memory_page("memory.html", timeline_rows)  # plus benchmarks/bench_agent_memory.py's results
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from matplotlib.figure import Figure

from ..memory.policies.ebbinghaus import published_retention, retention
from .page import figure_html, page


def forgetting_curves_figure(strengths=(1, 2, 4, 8), scale_days: float = 5.0, days: float = 30.0) -> Figure:
    """Two panels, same axes: R = exp(-t/(c·S)) (corrected) and exp(-t/c·S) (MemoryBank's published code)."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    ts = [days * i / 300 for i in range(301)]
    for S in strengths:
        axes[0].plot(ts, [retention(t, S, scale_days) for t in ts], label=f"S = {S}")
        axes[1].plot(ts, [published_retention(t, S, scale_days) for t in ts], label=f"S = {S}")
    axes[0].set_title(f"corrected: R = exp(-t / ({scale_days:g}·S))")
    axes[1].set_title(f"published code: exp(-t / {scale_days:g}*S) = exp(-t·S / {scale_days:g})")
    for ax in axes:
        ax.set_xlabel("days since last recall")
        ax.axhline(0.1, color="#999", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("retention R")
    fig.tight_layout()
    return fig


def timeline_figure(rows: list[dict]) -> Figure | None:
    """Bars per policy: rehearsed, old unrehearsed and recent recall (mean over seeds, std as error bars)."""
    if not rows:
        return None
    metrics = [("rehearsed_recall", "rehearsed"), ("old_unrehearsed_recall", "old, never rehearsed"),
               ("recent_recall", "recent, never rehearsed")]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig = Figure(figsize=(10, 4.4))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for j, (key, name) in enumerate(metrics):
        means, stds = [], []
        for label in labels:
            values = [r[key] for r in rows if r["label"] == label]
            mean = sum(values) / len(values)
            means.append(mean)
            stds.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
        ax.bar([i + (j - 1) * width for i in range(len(labels))], means, width, yerr=stds, label=name, capsize=2)
    ax.set_xticks(range(len(labels)), [label.replace(", ", "\n") for label in labels], fontsize=8)
    ax.axhline(0.9, color="#2a7", lw=0.8, ls="--")
    ax.axhline(0.2, color="#c33", lw=0.8, ls="--")
    ax.set_ylabel("recall@k at the last day")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    fig.tight_layout()
    return fig


def write_memory_page(path: str | Path, timeline_rows: list[dict] | None = None, notes: str = "") -> Path:
    """A self-contained HTML page: the two forgetting curves side by side, and the timeline if given."""
    e = html.escape
    sections = ["<h2>MemoryBank's forgetting curve: corrected and as published</h2>",
                "<p>MemoryBank keeps a memory with retention R = exp(-t/S), S raised by each recall. Its published "
                "code writes <code>math.exp(-t / 5*S)</code>, which Python reads as exp(-(t/5)&middot;S): the "
                "stronger a memory, the faster it fades. palimpsest's <code>ebbinghaus</code> policy uses "
                "R = exp(-t/(5&middot;S)). Dashed line: the default forgetting threshold 0.1.</p>",
                figure_html(forgetting_curves_figure(), "forgetting curves",
                            "Left: corrected. Right: the published code. Same time axis and strengths.")]
    if timeline_rows:
        sections += ["<h2>Synthetic timeline</h2>",
                     figure_html(timeline_figure(timeline_rows), "timeline recalls",
                                 "Recall at the last day per policy (mean ± std over seeds). Targets: rehearsed "
                                 ">= 0.9 (green), old never-rehearsed <= 0.2 (red)."),
                     f"<p>{e(notes)}</p>" if notes else ""]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = page("palimpsest: agent memory", "forgetting curves and the synthetic timeline", sections)
    out.write_text(text.replace("<h2>Spec</h2>\n<pre></pre>\n", ""), encoding="utf-8")   # no spec made this page
    return out


__all__ = ["forgetting_curves_figure", "timeline_figure", "write_memory_page"]
