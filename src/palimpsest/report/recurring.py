"""Report parts of recurring streams (tasks that come back): the two plots of the recurrence studies.

  recurring_accuracy       accuracy averaged over every test experience after each training step,
                           per strategy (mean ± std over seeds): whether plain fine-tuning
                           accumulates knowledge over a long sequence ("Challenging Common
                           Assumptions about Catastrophic Forgetting", SCoLe, plots accuracy on all
                           classes along the sequence)
  recurring_reappearances  each task's accuracy when it comes back (just before the step that
                           trains it again) against how many times it has been seen, per strategy
                           (mean over seeds): whether each return finds more of the task retained

Both read the stored accuracy matrices and each run's own schedule (`RunRecord.step_tasks`: with a
seeded recurrence every seed has its own order), so every number is recomputable from the store.
The learn kind adds these parts to experiments whose spec has `benchmark.recurrence`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..evaluate.records import RunRecord
from .html import _panels, _records
from .page import PARTS, figure_html


def overall_accuracy(record: RunRecord, view: str = "class") -> np.ndarray:
    """(S,) mean accuracy over every test experience after each step."""
    return np.nanmean(np.asarray(record.acc[view], dtype=float), axis=1)


def reappearance_accuracy(record: RunRecord, view: str = "class") -> dict[int, list[float]]:
    """task -> accuracy on that task just before each of its returns (its 2nd, 3rd, ... appearance):
    the row of the step before the one that trains it again."""
    acc = np.asarray(record.acc[view], dtype=float)
    out: dict[int, list[float]] = {}
    for task in range(acc.shape[1]):
        steps = [s for s, tasks in enumerate(record.step_tasks[:len(acc)]) if task in tasks]
        out[task] = [float(acc[s - 1, task]) for s in steps[1:]]
    return out


def overall_figure(records: dict[str, list[RunRecord]], view: str = "class") -> Figure | None:
    curves = {label: [overall_accuracy(r, view) for r in recs if view in r.acc] for label, recs in records.items()}
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return None
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, runs in curves.items():
        n = min(len(c) for c in runs)
        stack = np.stack([c[:n] for c in runs]) * 100
        mean, std = stack.mean(0), stack.std(0)
        (line,) = ax.plot(np.arange(n), mean, linewidth=1.5, label=label)
        if len(runs) > 1:
            ax.fill_between(np.arange(n), np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100),
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("training step", fontsize=9)
    ax.set_ylabel("accuracy on all experiences (%)", fontsize=9)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def reappearance_figure(records: dict[str, list[RunRecord]], view: str = "class") -> Figure | None:
    per_label: dict[str, dict[int, list[list[float]]]] = {}
    for label, recs in records.items():
        for r in recs:
            if view not in r.acc:
                continue
            for task, values in reappearance_accuracy(r, view).items():
                per_label.setdefault(label, {}).setdefault(task, []).append(values)
    per_label = {k: v for k, v in per_label.items() if any(len(x) for runs in v.values() for x in runs)}
    if not per_label:
        return None
    fig, axes, colors = _panels(len(per_label), max(len(v) for v in per_label.values()))
    for ax, (label, tasks) in zip(axes.flat, per_label.items()):
        for task, runs in sorted(tasks.items()):
            longest = max(len(x) for x in runs)
            if not longest:
                continue
            padded = np.full((len(runs), longest), np.nan)
            for i, x in enumerate(runs):
                padded[i, :len(x)] = x
            with np.errstate(all="ignore"):
                mean = np.nanmean(padded, axis=0) * 100
            ax.plot(np.arange(2, longest + 2), mean, marker="o", markersize=3, linewidth=1.2,
                    color=colors[task % len(colors)], label=f"exp {task}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("appearance (2 = first return)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # appearances are whole numbers
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy on return (%)", fontsize=8)
    handles, labels = next(iter(axes.flat)).get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right", fontsize=7, title="test experience", title_fontsize=7)
    return fig


def recurring_accuracy_html(db, exp, summary: Sequence[dict], cache) -> str:
    return "<h2>Accuracy along the recurring sequence</h2>" + figure_html(
        overall_figure(_records(db, exp, summary, cache)), "Accuracy on all experiences along the sequence",
        "Class-IL accuracy averaged over every test experience after each training step (SCoLe's plot); "
        "shaded band = ± std over seeds. A rising curve means knowledge accumulates although tasks are "
        "trained one at a time.")


def recurring_reappearances_html(db, exp, summary: Sequence[dict], cache) -> str:
    return "<h2>Accuracy at each reappearance</h2>" + figure_html(
        reappearance_figure(_records(db, exp, summary, cache)), "Accuracy of each task when it returns",
        "Class-IL accuracy on each experience just before the step that trains it again, by how many times "
        "it has appeared (mean over seeds; every seed has its own order). Rising lines: each return finds "
        "more of the task retained.")


PARTS.register("recurring_accuracy", summary="accuracy on all experiences along a recurring sequence (SCoLe)")(
    recurring_accuracy_html)
PARTS.register("recurring_reappearances", summary="each task's accuracy at its successive returns")(
    recurring_reappearances_html)

__all__ = ["overall_accuracy", "overall_figure", "reappearance_accuracy", "reappearance_figure"]
