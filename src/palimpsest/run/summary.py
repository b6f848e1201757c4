"""Per-method summaries of stored experiments (mean ± std over seeds), read from the store: what
tables, reports, CSV exports and the regression check print. Aggregation itself is
evaluate/aggregate.py."""
from __future__ import annotations

import json
from collections.abc import Sequence

import yaml

from ..evaluate.aggregate import aggregate, stat
from ..evaluate.metrics import METRIC_NAMES
from .store.db import ResultsDB
from .store.schema import INITIAL_STEP

TRAIN_SECONDS = "train_seconds"
VIEWS = ("class", "task")


def metric_sort_key(metric: str) -> tuple:
    """Class-IL before task-IL, then the METRIC_NAMES display order; unknown names last."""
    base, _, view = metric.partition("/")
    return (VIEWS.index(view) if view in VIEWS else len(VIEWS), view,
            METRIC_NAMES.index(base) if base in METRIC_NAMES else len(METRIC_NAMES), base)


def strategy_labels(db: ResultsDB, exp_id: str, runs: Sequence[dict]) -> list[str]:
    """Labels in the order the spec lists them (strategies or methods); labels found only in runs
    come after."""
    order: list[str] = []
    spec_yaml = db.experiment(exp_id).get("spec_yaml") or ""
    try:
        spec = yaml.safe_load(spec_yaml) or {}
        for s in spec.get("strategies") or spec.get("methods") or []:
            s = {"name": s} if isinstance(s, str) else s
            plus = [p if isinstance(p, str) else p["name"] for p in s.get("plus") or []]
            order.append(s.get("label") or "+".join([s["name"], *plus]))
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        order = []  # an unreadable stored spec only loses the ordering, never the rows
    for r in runs:
        if r["label"] not in order:
            order.append(r["label"])
    seen = {r["label"] for r in runs}
    return [label for label in order if label in seen]


def summarize_runs(db: ResultsDB, exp_id: str) -> list[dict]:
    """One row per strategy label, in spec order, aggregated over the finished seeds.

    Row: {"experiment", "kind", "strategy" (label), "method" (registry name), "seeds" (finished
    seeds), "n_seeds", "n_unfinished", "metrics": {"<metric>/<view>": {"mean", "std", "n"}},
    "train_seconds": {"mean", "std", "n"}, "scenario"}. Means skip NaN seeds; "n" counts the seeds
    with a defined value; std is the population std (evaluate/aggregate.py). `exp_id` may be a
    unique prefix.
    """
    exp = db.experiment(exp_id)
    exp_id = exp["id"]
    runs = db.runs(exp_id)
    rows = []
    for label in strategy_labels(db, exp_id, runs):
        mine = [r for r in runs if r["label"] == label]
        finished = sorted((r for r in mine if r["status"] == "finished"), key=lambda r: r["seed"])
        per_run = [db.metrics(r["id"]) for r in finished]
        names = sorted({k for m in per_run for k in m}, key=metric_sort_key)
        seconds = [sum(s["train_seconds"] or 0.0 for s in db.steps(r["id"]) if s["step"] != INITIAL_STEP)
                   for r in finished]
        scenario = json.loads(mine[0]["stream_json"] or "{}").get("scenario") if mine[0].get("stream_json") else None
        rows.append({
            "experiment": exp_id,
            "kind": exp.get("kind", "learn"),
            "strategy": label,
            "method": mine[0]["strategy"],
            "seeds": [r["seed"] for r in finished],
            "n_seeds": len(finished),
            "n_unfinished": len(mine) - len(finished),
            "n_diverged": sum(r["status"] == "diverged" for r in mine),
            "metrics": aggregate(per_run, names),
            TRAIN_SECONDS: stat(seconds),
            "scenario": scenario,
        })
    return rows


def summarize_ledger(db: ResultsDB, exp_id: str | None) -> list[dict]:
    """One row per (request index, label) over finished ledger entries, in ledger order; "stats"
    aggregates every numeric audit key over seeds: mean, SAMPLE std (ddof=1) and the half-width of
    the 95 % t interval of the mean ("ci95")."""
    from ..forget.request import ForgetRequest
    exp_id = db.experiment(exp_id)["id"]
    return ledger_rows(exp_id, db.ledger(exp_id), lambda e: int(e["id"].split("/request")[1].split("/")[0]),
                       lambda request: ForgetRequest(**request).describe())


def ledger_rows(exp_id: str, entries, index_of, describe) -> list[dict]:
    """Ledger entries grouped by (index_of(entry), label), in first-seen order, with their audits,
    reports, failures and "stats" over seeds (the rows of every ledger table)."""
    rows: dict[tuple[int, str], dict] = {}
    for e in entries:
        index = index_of(e)
        row = rows.setdefault((index, e["label"]), {
            "experiment": exp_id, "request": describe(e["request"]), "request_index": index,
            "label": e["label"], "method": e["method"], "audits": [], "reports": [], "failed": 0})
        if e["status"] == "finished" and e["audit"]:
            row["audits"].append(e["audit"])
            row["reports"].append(e.get("report") or {})
        else:
            row["failed"] += 1
    out = []
    for row in rows.values():
        row["stats"] = aggregate(row["audits"], ddof=1)
        row["n_seeds"] = len(row["audits"])
        out.append(row)
    return out


def summary_table(db: ResultsDB, exp_id: str) -> dict[str, dict[str, dict]]:
    """{row label: {metric: stat}} for any kind (what the regression check compares). An unlearning
    experiment's rows are method labels, "label#i" for request i > 0."""
    exp = db.experiment(exp_id)
    if exp.get("kind") == "unlearn":
        return {(r["label"] if r["request_index"] == 0 else f"{r['label']}#{r['request_index']}"): r["stats"]
                for r in summarize_ledger(db, exp["id"])}
    return {row["strategy"]: row.get("metrics", {}) for row in summarize_runs(db, exp["id"])}


__all__ = ["TRAIN_SECONDS", "metric_sort_key", "strategy_labels", "summarize_ledger", "summarize_runs",
           "summary_table"]
