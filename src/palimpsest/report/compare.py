"""Comparing stored experiments: one terminal table, one HTML page and two CSV files.

`load_experiment` reads what a comparison needs from a results folder (opened with `create=False`:
reading never creates or changes anything): per strategy (learning and adaptation experiments) or
per method and forget request (unlearning experiments), one value per seed and metric, and the
resolved settings tree (the stored spec re-read with today's defaults, each strategy's settings as
its runs used them, i.e. with learn/defaults.py's tuned values filled in). `compare_experiments`
pairs each experiment with the first (the baseline) strategy by strategy and seed by seed
(evaluate/compare.py does the statistics) and lists the settings that differ. The table, page and
CSVs render that comparison; the page is built from report/page.py's skeleton like every report.
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from ..core.errors import PalimpsestError, close_matches, did_you_mean
from ..evaluate.compare import MISSING, Paired, paired, settings_diff
from ..evaluate.metrics import METRIC_NAMES, compute_metrics
from ..run.store.db import ResultsDB
from ..run.store.schema import INITIAL_STEP
from ..run.summary import TRAIN_SECONDS, metric_sort_key, strategy_labels
from .page import figure_html, page
from .table import VIEW_TITLES, column_title

LEARN_HEADLINE = ("final_average_accuracy", "final_example_accuracy", "forgetting")
UNLEARN_HEADLINE = ("forget_accuracy", "retain_accuracy", "test_accuracy", "avg_gap")
NOT_PERCENT = {TRAIN_SECONDS, "seconds", "relearn_steps_to_50pct", "speedup_vs_retrain", "speedup_vs_retrain_cpu"}
LOWER_IS_BETTER = {"avg_gap", "seconds", TRAIN_SECONDS, "relearn_steps_to_50pct"}
PAGE_FILE, TABLE_FILE, SETTINGS_FILE = "compare.html", "compare.csv", "compare_settings.csv"
MAX_FOLDER_NAME = 180


# -- reading one experiment ---------------------------------------------------------------------

@dataclass
class StoredExperiment:
    """What a comparison reads of one stored experiment. `units`: row label (strategy, or unlearning
    method with `#i` for forget request i > 0) -> seed -> metric -> value, finished runs only;
    `unfinished`: row label -> seed -> status of the runs that did not finish."""

    given: str
    root: Path
    id: str
    name: str
    kind: str
    spec_yaml: str
    settings: dict
    units: dict[str, dict[int, dict[str, float]]]
    unfinished: dict[str, dict[int, str]]
    scenario: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({s for by_seed in self.units.values() for s in by_seed})


def split_root(text: str, default_root: Path) -> tuple[Path, str]:
    """"ROOT:ID" names an experiment of another results folder (experiment ids never hold a colon);
    anything else is an experiment of `default_root`."""
    if ":" in text:
        folder, _, ident = text.rpartition(":")
        if folder and ident:
            return Path(folder).expanduser(), ident
    return Path(default_root), text


def find_experiment(db: ResultsDB, text: str) -> tuple[dict, str | None]:
    """An experiment by exact id, by name (the latest of that name), or by unique id prefix; with a
    note when a name picked the latest of several."""
    rows = db.experiments()
    exact = [r for r in rows if r["id"] == text]
    named = [r for r in rows if r["name"] == text]
    if not exact and named:
        note = (f"{text!r} names {len(named)} experiments in {db.root}; compared the latest, {named[-1]['id']}"
                if len(named) > 1 else None)
        return db.experiment(named[-1]["id"]), note
    prefixed = exact or [r for r in rows if r["id"].startswith(text)]
    if len(prefixed) != 1:
        raise PalimpsestError(f"experiment {text!r} {'is ambiguous' if prefixed else 'not found'} in {db.root}",
                              expected="an experiment id, a unique id prefix or an experiment name from "
                                       f"`palimpsest runs --root {db.root}` (or ROOT:ID for another folder)",
                              got=text if not prefixed else f"{text} matches " + ", ".join(r["id"] for r in prefixed),
                              fix="known: " + (", ".join(r["id"] for r in rows[-5:]) or "none"))
    return db.experiment(prefixed[0]["id"]), None


def _run_seconds(db: ResultsDB, run_id: str) -> float:
    return sum(s["train_seconds"] or 0.0 for s in db.steps(run_id) if s["step"] != INITIAL_STEP)


def _short(value) -> str:
    """A settings value as one short line (JSON-like)."""
    if value is MISSING:
        return MISSING
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=False, default=str)


def _resolved_unlearner(name: str, settings: dict) -> dict:
    try:
        from ..core.registry import UNLEARNERS
        return UNLEARNERS.get(name).obj.Config(**settings).model_dump(mode="json")
    except Exception:  # noqa: BLE001  (an unknown or changed unlearner: show the settings as stored)
        return dict(settings)


def _resolved_strategy(name: str, settings: dict, plus: list, dataset: str, scenario: str) -> dict:
    try:
        from ..run.kinds.learn import make_strategy
        return make_strategy(name, settings, plus, dataset, scenario).settings()
    except Exception:  # noqa: BLE001  (a plugin strategy no longer loadable: show the settings as stored)
        return dict(settings)


def settings_tree(db: ResultsDB, exp: dict, notes: list[str]) -> dict:
    """The experiment's settings as a tree: the stored spec re-read with today's defaults, its list of
    strategies (or methods) keyed by label, each with the settings its runs used (learn/defaults.py's
    tuned values and the strategy's own defaults filled in) and its own training overrides."""
    from ..run.spec import parse_spec
    raw = yaml.safe_load(exp.get("spec_yaml") or "") or {}
    try:
        spec = parse_spec(raw, f"stored spec of {exp['id']}")
        tree = spec.model_dump(mode="json")
        entries_field = type(spec).entries_field
    except PalimpsestError as err:
        notes.append(f"{exp['id']}: its stored spec no longer parses ({err.what}); its settings are shown as stored")
        tree = dict(raw) if isinstance(raw, dict) else {}
        entries_field = "methods" if "methods" in tree else "strategies"
    entries = tree.pop(entries_field, None) or []
    used: dict[str, dict] = {}
    if exp["kind"] == "unlearn":
        for e in db.ledger(exp["id"]):
            used.setdefault(e["label"], _resolved_unlearner(e["method"], e.get("settings") or {}))
    else:
        for r in db.runs(exp["id"]):
            used.setdefault(r["label"], json.loads(r["settings_json"] or "{}"))
    benchmark = tree.get("benchmark") or {}
    keyed: dict[str, dict] = {}
    for entry in entries:
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        plus = entry.get("plus") or []
        label = entry.get("label") or "+".join([entry["name"], *(p["name"] if isinstance(p, dict) else p for p in plus)])
        settings = used.get(label)
        if settings is None:
            settings = (_resolved_unlearner(entry["name"], entry.get("settings") or {}) if exp["kind"] == "unlearn"
                        else _resolved_strategy(entry["name"], entry.get("settings") or {}, plus,
                                                benchmark.get("dataset", ""), benchmark.get("scenario", "")))
        settings = dict(settings)
        plus_used = settings.pop("plus", None)
        out = {"name": entry["name"], "settings": settings}
        if entry.get("training"):
            out["training"] = entry["training"]
        if plus_used or plus:
            out["plus"] = {p["name"]: p.get("settings", {}) for p in (plus_used or plus) if isinstance(p, dict)}
        keyed[label] = out
    tree[entries_field] = keyed
    return tree


def _learn_units(db: ResultsDB, exp_id: str, wanted_bases: Sequence[str], notes: list[str]):
    runs = db.runs(exp_id)
    units: dict[str, dict[int, dict[str, float]]] = {}
    unfinished: dict[str, dict[int, str]] = {}
    scenarios = set()
    recomputed: dict[str, int] = {}
    for label in strategy_labels(db, exp_id, runs):
        units[label] = {}
        for r in (r for r in runs if r["label"] == label):
            if r.get("stream_json"):
                scenarios.add(json.loads(r["stream_json"]).get("scenario"))
            if r["status"] != "finished":
                unfinished.setdefault(label, {})[r["seed"]] = r["status"]
                continue
            values = dict(db.metrics(r["id"]))
            views = {k.partition("/")[2] for k in values if "/" in k} or {"class"}
            if any(f"{b}/{v}" not in values for b in wanted_bases if b in METRIC_NAMES for v in views):
                # a metric added after the run was stored: recomputed from the stored accuracy matrix and
                # predictions (pure functions), in memory only
                fresh = compute_metrics(db.record(r["id"]))
                for k in fresh:
                    if k not in values and k.partition("/")[0] in wanted_bases:
                        recomputed[k] = recomputed.get(k, 0) + 1
                values = {**fresh, **values}
            values[TRAIN_SECONDS] = _run_seconds(db, r["id"])
            units[label][r["seed"]] = values
    if recomputed:
        counts = ", ".join(f"{k} ({n} runs)" for k, n in sorted(recomputed.items(), key=lambda kv: metric_sort_key(kv[0])))
        notes.append(f"{exp_id} was stored before some metrics existed: {counts} recomputed from its stored "
                     f"accuracy matrices and predictions (in memory; nothing written)")
    scenario = scenarios.pop() if len(scenarios) == 1 else None
    return units, unfinished, scenario


def _unlearn_units(db: ResultsDB, exp_id: str):
    units: dict[str, dict[int, dict[str, float]]] = {}
    unfinished: dict[str, dict[int, str]] = {}
    for e in db.ledger(exp_id):
        index = int(e["id"].split("/request")[1].split("/")[0])
        label = e["label"] if index == 0 else f"{e['label']}#{index}"
        units.setdefault(label, {})
        if e["status"] != "finished" or not e["audit"]:
            unfinished.setdefault(label, {})[e["seed"]] = e["status"]
            continue
        units[label][e["seed"]] = {k: float("nan") if v is None else float(v) for k, v in e["audit"].items()
                                   if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    return units, unfinished, None


def load_experiment(text: str, default_root: str | Path, wanted_bases: Sequence[str] = LEARN_HEADLINE) -> StoredExperiment:
    """Read one experiment (see `StoredExperiment`); `text` is an id, a name, a unique id prefix or
    ROOT:ID. `wanted_bases` are metric names a learning run that did not store them gets recomputed."""
    root, ident = split_root(text, Path(default_root))
    with ResultsDB(root, create=False) as db:
        exp, note = find_experiment(db, ident)
        notes = [note] if note else []
        kind = exp.get("kind") or "learn"
        if kind == "unlearn":
            units, unfinished, scenario = _unlearn_units(db, exp["id"])
        else:
            units, unfinished, scenario = _learn_units(db, exp["id"], wanted_bases, notes)
        tree = settings_tree(db, exp, notes)
    return StoredExperiment(given=text, root=root, id=exp["id"], name=exp["name"], kind=kind,
                            spec_yaml=exp.get("spec_yaml") or "", settings=tree, units=units,
                            unfinished=unfinished, scenario=scenario, notes=notes)


# -- the comparison -----------------------------------------------------------------------------

@dataclass
class Row:
    unit: str
    metric: str
    result: Paired
    unfinished_a: dict[int, str]
    unfinished_b: dict[int, str]


@dataclass
class PairComparison:
    """Experiment `b` against the baseline `a`."""

    a: StoredExperiment
    b: StoredExperiment
    rows: list[Row]
    only_a: list[str]            # strategies (rows) only the baseline has
    only_b: list[str]
    differences: list[tuple[str, object, object]]   # (settings path, value in A, value in B)


@dataclass
class Comparison:
    experiments: list[StoredExperiment]
    metrics: list[str]
    confidence: float
    pairs: list[PairComparison]
    notes: list[str]

    @property
    def baseline(self) -> StoredExperiment:
        return self.experiments[0]

    def role(self, i: int) -> str:
        """"A" for the baseline; "B" (two experiments) or "B1", "B2", ... for the others."""
        if i == 0:
            return "A"
        return "B" if len(self.experiments) == 2 else f"B{i}"


def _available(exp: StoredExperiment) -> set[str]:
    return {k for by_seed in exp.units.values() for values in by_seed.values() for k, v in values.items()
            if not math.isnan(v)}


def _lead_view(experiments: Sequence[StoredExperiment]) -> str:
    return "task" if all(e.scenario == "task" for e in experiments) else "class"


def resolve_metrics(experiments: Sequence[StoredExperiment], requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The metric keys to compare and notes on defaults left out. A learning metric named without a
    view ("forgetting") takes the leading view (task-IL when every experiment is task-incremental)."""
    kind = experiments[0].kind
    common = set.intersection(*(_available(e) for e in experiments))
    every = set.union(*(_available(e) for e in experiments))
    view = _lead_view(experiments)
    notes: list[str] = []
    if not requested:
        wanted = [f"{b}/{view}" for b in LEARN_HEADLINE] if kind != "unlearn" else list(UNLEARN_HEADLINE)
        kept = [m for m in wanted if m in common]
        left = [m for m in wanted if m not in common]
        if left:
            notes.append(f"left out (not stored for every experiment): {', '.join(left)}")
        if not kept:
            raise PalimpsestError("no headline metric is stored for every experiment", expected=", ".join(wanted),
                                  got=", ".join(sorted(every)[:12]) or "no metrics",
                                  fix="choose metrics with --metric NAME (repeatable)")
        return kept, notes
    out = []
    for name in requested:
        key = name
        if kind != "unlearn" and "/" not in name and name != TRAIN_SECONDS:
            key = f"{name}/{view}"
        if key not in common:
            where = [e.id for e in experiments if key not in _available(e)]
            close = close_matches(key, sorted(common), n=3)
            raise PalimpsestError(f"metric {name!r} is not stored for every experiment (missing in {', '.join(where)})",
                                  expected="a metric of every experiment: " + ", ".join(sorted(common, key=metric_sort_key)),
                                  got=name, fix=did_you_mean(close) if close else
                                  "pick one from the expected list")
        if key not in out:
            out.append(key)
    return out, notes


def _check_compatible(experiments: Sequence[StoredExperiment]) -> None:
    base = experiments[0]
    for other in experiments[1:]:
        if other.kind != base.kind:
            raise PalimpsestError(f"experiments of different kinds: {base.id} is {base.kind}, {other.id} is "
                                  f"{other.kind}", expected="experiments of one kind (learn, unlearn or adapt)",
                                  got=f"{base.kind} and {other.kind}", fix="compare learning experiments with learning "
                                  "experiments, unlearning ones with unlearning ones")
        common_units = [u for u in base.units if u in other.units]
        if not common_units:
            what, one = ("methods", "method") if base.kind in ("unlearn", "adapt") else ("strategies", "strategy")
            raise PalimpsestError(f"no common {what}: {base.id} and {other.id} share no {one} label",
                                  expected=f"at least one {one} label in both",
                                  got=f"{', '.join(base.units) or 'none'} vs {', '.join(other.units) or 'none'}",
                                  fix="rows are paired by label: give the same `label:` to the entries that should be "
                                      "compared")
        seeds_a = {s for u in common_units for s in base.units[u]}
        seeds_b = {s for u in common_units for s in other.units[u]}
        if not seeds_a & seeds_b:
            raise PalimpsestError(f"no common seeds: {base.id} and {other.id} have no finished seed in common",
                                  expected="the same seed finished in both (runs are paired by seed)",
                                  got=f"{sorted(seeds_a) or 'none'} vs {sorted(seeds_b) or 'none'}",
                                  fix=f"run one spec again with --seeds {','.join(map(str, sorted(seeds_a or seeds_b)))}")


def one_sided_entries_as_lines(a: dict, b: dict) -> tuple[dict, dict]:
    """The settings trees with each strategy (method) that only one side has written as one line, so
    it is one row of the settings diff rather than one per field."""
    a, b = dict(a), dict(b)
    for key in ("strategies", "methods"):
        ea, eb = a.get(key), b.get(key)
        if isinstance(ea, dict) and isinstance(eb, dict):
            def line(entry):
                return " ".join([str(entry.get("name")), *(f"{k}={_short(v)}" for part in ("settings", "training", "plus")
                                                           for k, v in (entry.get(part) or {}).items())])
            a[key] = {label: e if label in eb else line(e) for label, e in ea.items()}
            b[key] = {label: e if label in ea else line(e) for label, e in eb.items()}
    return a, b


def compare_experiments(texts: Sequence[str], root: str | Path = "palimpsest-results", metrics: Sequence[str] = (),
                        confidence: float = 0.95) -> Comparison:
    """Compare every experiment with the first (the baseline): per common strategy (or unlearning
    method), per metric, the paired per-seed differences B − A with a t interval and an exact sign
    test (evaluate/compare.py), and the settings that differ. Reads only."""
    if len(texts) < 2:
        raise PalimpsestError("compare needs at least two experiments", expected="EXP_A EXP_B [EXP_C ...] (the first "
                              "is the baseline)", got=" ".join(texts) or "none",
                              fix="list the experiments to compare (see `palimpsest runs`)")
    if not 0.0 < confidence < 1.0:
        raise PalimpsestError("bad --confidence", expected="a level in (0, 1), e.g. 0.95", got=confidence)
    bases = tuple(dict.fromkeys([*LEARN_HEADLINE, *(m.partition("/")[0] for m in metrics)]))
    experiments = [load_experiment(t, root, bases) for t in texts]
    _check_compatible(experiments)
    keys, notes = resolve_metrics(experiments, metrics)
    notes = [n for e in experiments for n in e.notes] + notes
    notes += [f"{e.id} is compared with itself (every difference is 0)" for e in experiments[1:] if e.id == experiments[0].id
              and e.root.resolve() == experiments[0].root.resolve()]
    base = experiments[0]
    pairs = []
    for other in experiments[1:]:
        rows = []
        for unit in (u for u in base.units if u in other.units):
            for key in keys:
                a = {s: v.get(key, float("nan")) for s, v in base.units[unit].items()}
                b = {s: v.get(key, float("nan")) for s, v in other.units[unit].items()}
                rows.append(Row(unit, key, paired(a, b, confidence), base.unfinished.get(unit, {}),
                                other.unfinished.get(unit, {})))
        pairs.append(PairComparison(
            a=base, b=other, rows=rows, only_a=[u for u in base.units if u not in other.units],
            only_b=[u for u in other.units if u not in base.units],
            differences=settings_diff(*one_sided_entries_as_lines(base.settings, other.settings))))
    return Comparison(experiments, keys, confidence, pairs, notes)


# -- numbers as text ----------------------------------------------------------------------------

def is_percent(metric: str) -> bool:
    return metric.partition("/")[0] not in NOT_PERCENT


SHORT_TITLES = {"final_example_accuracy": "Example acc"}


def shared_view(metrics: Sequence[str]) -> str | None:
    """The view ("class", "task") every metric has, if they all have the same one."""
    views = {m.partition("/")[2] for m in metrics}
    return views.pop() if len(views) == 1 and "" not in views else None


def metric_title(metric: str, view: bool = True) -> str:
    """"Final acc (class-IL)" ("Final acc" without `view`), "Forget acc", ... with ↓ where lower is
    better."""
    base = metric.partition("/")[0]
    if base in METRIC_NAMES or metric == TRAIN_SECONDS:
        if base in SHORT_TITLES:
            return SHORT_TITLES[base] + (f" ({VIEW_TITLES.get(metric.partition('/')[2], '')})" if view else "")
        return column_title(metric if view else base)
    from .unlearning import COLUMNS
    title = next((t.replace("\n", " ") for k, t, _ in COLUMNS if k == base), base.replace("_", " ").capitalize())
    return title + (" ↓" if base in LOWER_IS_BETTER and "↓" not in title else "")


def _number(value: float, metric: str, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    scale, digits = (100.0, 1) if is_percent(metric) else (1.0, 2)
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def interval_text(r: Paired, metric: str) -> str:
    if math.isnan(r.ci_low):
        return "—"
    return f"[{_number(r.ci_low, metric, True)}, {_number(r.ci_high, metric, True)}]"


def p_text(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def skipped_text(row: Row) -> str:
    """Which seeds were left out of this row and why."""
    r = row.result
    parts = []
    for seeds, side, status in ((r.only_a, "A", row.unfinished_b), (r.only_b, "B", row.unfinished_a)):
        if seeds:
            why = ", ".join(f"{s} ({status[s]} in {'B' if side == 'A' else 'A'})" if s in status else str(s)
                            for s in seeds)
            parts.append(f"only in {side}: {why}")
    if r.undefined:
        parts.append(f"undefined: {', '.join(map(str, r.undefined))}")
    return "; ".join(parts)


def caption(comparison: Comparison, skipped_where: str = "listed above") -> str:
    level = f"{comparison.confidence:.0%}"
    return (f"B − A per seed, runs paired by seed; A and B are means over the paired seeds, differences in "
            f"percentage points (seconds unscaled). {level} CI: Student t interval of the mean paired difference "
            f"(n − 1 degrees of freedom, sample std). p: exact two-sided sign test (ties dropped); with n pairs "
            f"it cannot go below 2^(1−n), 0.25 for 3 seeds. n: pairs (*: some seeds not paired, {skipped_where}). "
            f"Formulas: docs/METRICS.md.")


# -- the terminal table -------------------------------------------------------------------------

def build_comparison_table(comparison: Comparison, box_style: box.Box = box.SIMPLE_HEAD) -> Table:
    several = len(comparison.experiments) > 2
    level = f"{comparison.confidence:.0%}"
    title = "Paired differences, B − A" if not several else "Paired differences against the baseline A"
    view = shared_view(comparison.metrics)
    if view:
        title += f" ({VIEW_TITLES.get(view, view)})"
    table = Table(title=title, caption=caption(comparison), box=box_style, caption_justify="left",
                  pad_edge=False, show_edge=False)
    if several:
        table.add_column("", no_wrap=True)
    table.add_column("Strategy" if comparison.baseline.kind == "learn" else "Method", style="bold", no_wrap=True)
    table.add_column("Metric", no_wrap=True)
    for name in ("A", "B", "B − A"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column(f"{level} CI", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for i, pair in enumerate(comparison.pairs, start=1):
        if i > 1:
            table.add_section()
        last = None
        for row in pair.rows:
            r = row.result
            cells = [row.unit if row.unit != last else "", metric_title(row.metric, not view), _number(r.mean_a, row.metric),
                     _number(r.mean_b, row.metric), _number(r.mean_difference, row.metric, True),
                     interval_text(r, row.metric), p_text(r.p_sign), str(r.n) + ("*" if r.skipped else "")]
            table.add_row(*([comparison.role(i) if row.unit != last or last is None else ""] if several else []), *cells)
            last = row.unit
    return table


def header_lines(comparison: Comparison) -> list[str]:
    """Who is A and B, then what was left out (strategies in one experiment only, skipped seeds)."""
    lines = []
    for i, e in enumerate(comparison.experiments):
        role = comparison.role(i)
        lines.append(f"{role}{' (baseline)' if i == 0 else ''}: {e.id}  [{e.kind}, seeds {e.seeds}, {e.root}]")
    if len(comparison.experiments) > 2:
        lines.append("Each experiment is compared with the first, the baseline A.")
    for i, pair in enumerate(comparison.pairs, start=1):
        role = comparison.role(i)
        if pair.only_a:
            lines.append(f"only in A (not compared with {role}): {', '.join(pair.only_a)}")
        if pair.only_b:
            lines.append(f"only in {role} (not compared): {', '.join(pair.only_b)}")
        skipped: dict[str, dict[str, str]] = {}
        for row in pair.rows:
            text = skipped_text(row)
            if text:
                skipped.setdefault(row.unit, {})[row.metric] = text
        for unit, texts in skipped.items():
            n_metrics = sum(r.unit == unit for r in pair.rows)
            if len(texts) == n_metrics and len(set(texts.values())) == 1:
                lines.append(f"* {role}, {unit}: seeds skipped (not paired) — {next(iter(texts.values()))}")
            else:
                lines += [f"* {role}, {unit}, {metric_title(m)}: seeds skipped (not paired) — {t}" for m, t in texts.items()]
    lines += [f"note: {n}" for n in comparison.notes]
    return lines


def settings_table(pair: PairComparison, role: str = "B", box_style: box.Box = box.SIMPLE_HEAD) -> Table:
    """The settings that differ; a strategy only one side has is one row saying so (the page and
    the settings CSV give its settings)."""
    one_sided = {f"{key}.{label}" for key in ("strategies", "methods") for label in [*pair.only_a, *pair.only_b]}
    table = Table(title=f"Settings that differ (A vs {role})", box=box_style, show_edge=False, pad_edge=False)
    table.add_column("Setting", no_wrap=True)
    table.add_column("A", overflow="fold")
    table.add_column(role, overflow="fold")
    for path, va, vb in pair.differences:
        if path in one_sided:
            va, vb = ("—", f"only in {role}") if va is MISSING else ("only in A", "—")
        table.add_row(path, _short(va), _short(vb))
    if not pair.differences:
        table.add_row("(none)", "", "")
    return table


def render_comparison(comparison: Comparison, console: Console | None = None) -> None:
    """Print who is compared, the paired-differences table and the settings that differ."""
    console = console or Console()
    for line in header_lines(comparison):
        console.print(line, highlight=False, markup=False)
    console.print(build_comparison_table(comparison))
    for i, pair in enumerate(comparison.pairs, start=1):
        if pair.differences:
            console.print(settings_table(pair, comparison.role(i)))
        else:
            console.print(f"Settings that differ (A vs {comparison.role(i)}): none", highlight=False)


def comparison_text(comparison: Comparison) -> str:
    """Everything `render_comparison` prints, as plain text without colour (logs, tests, docs)."""
    buffer = io.StringIO()
    render_comparison(comparison, Console(file=buffer, width=200, color_system=None, force_terminal=False,
                                          soft_wrap=False))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


# -- files: the page and the CSVs -------------------------------------------------------------

def default_page(comparison: Comparison) -> Path:
    """<root of A>/reports/compare-<A>-vs-<B>[...]/compare.html, next to `palimpsest report`'s folders."""
    name = "compare-" + "-vs-".join(e.id for e in comparison.experiments)
    if len(name) > MAX_FOLDER_NAME:
        name = name[:MAX_FOLDER_NAME - 17] + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return comparison.baseline.root / "reports" / name / PAGE_FILE


def page_path(comparison: Comparison, out: str | Path | None) -> Path:
    """`out` as the page (a .html path) or as its folder; default `default_page`."""
    if out is None:
        return default_page(comparison)
    out = Path(out)
    return out if out.suffix.lower() in (".html", ".htm") else out / PAGE_FILE


def _csv_cell(value) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def export_comparison_csv(comparison: Comparison, folder: str | Path, stem: str = "compare") -> list[Path]:
    """<stem>.csv: one row per (experiment vs baseline, strategy, metric): values as fractions
    (not %), the paired seeds, the per-seed differences, the interval and both p-values;
    <stem>_settings.csv: one row per differing setting."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, settings = folder / f"{stem}.csv", folder / f"{stem}_settings.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["baseline", "experiment", "strategy", "metric", "n_pairs", "paired_seeds", "skipped_seeds",
                    "mean_a", "mean_b", "mean_difference", "sd_difference", "interval", "confidence", "ci_low",
                    "ci_high", "p_sign", "p_t", "differences"])
        for pair in comparison.pairs:
            for row in pair.rows:
                r = row.result
                w.writerow([_csv_cell(v) for v in (
                    pair.a.id, pair.b.id, row.unit, row.metric, r.n, " ".join(map(str, r.seeds)),
                    " ".join(map(str, r.skipped)), r.mean_a, r.mean_b, r.mean_difference, r.sd_difference,
                    r.interval, r.confidence, r.ci_low, r.ci_high, r.p_sign, r.p_t,
                    " ".join(f"{s}:{d:.6g}" for s, d in zip(r.seeds, r.differences)))])
    with settings.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["baseline", "experiment", "setting", "value_a", "value_b"])
        for pair in comparison.pairs:
            for path, va, vb in pair.differences:
                w.writerow([pair.a.id, pair.b.id, path, _short(va), _short(vb)])
    return [table, settings]


def differences_figure(pair: PairComparison, metrics: Sequence[str], confidence: float) -> Figure | None:
    """One panel per metric: per strategy, each seed's B − A (dots), their mean (diamond) and its t
    interval (bar); the dashed line is no difference."""
    units = list(dict.fromkeys(r.unit for r in pair.rows))
    if not units or not any(r.result.n for r in pair.rows):
        return None
    fig = Figure(figsize=(min(4.2 * len(metrics), 16), 0.45 * len(units) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        scale = 100.0 if is_percent(metric) else 1.0
        for y, unit in enumerate(units):
            row = next((r for r in pair.rows if r.unit == unit and r.metric == metric), None)
            if row is None or not row.result.n:
                continue
            r = row.result
            ax.scatter(np.asarray(r.differences) * scale, [y] * r.n, s=14, color="#7f7f7f", zorder=2)
            if not math.isnan(r.ci_low):
                ax.plot([r.ci_low * scale, r.ci_high * scale], [y, y], color="#1f77b4", lw=2.2, zorder=1)
            ax.scatter([r.mean_difference * scale], [y], marker="D", s=36, color="#1f77b4", zorder=3)
        ax.axvline(0.0, color="#444", lw=0.8, ls="--")
        ax.set_yticks(range(len(units)))
        ax.set_yticklabels(units if ax is axes[0] else [""] * len(units), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric_title(metric), fontsize=9)
        ax.set_xlabel("B − A (points)" if scale == 100.0 else "B − A", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    return fig


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], caption_text: str = "",
                numeric: Sequence[bool] | None = None) -> str:
    e = html.escape
    numeric = numeric or [False] * len(head)
    body = "".join("<tr>" + "".join(f'<td class="num">{e(c)}</td>' if n else f"<td>{e(c)}</td>"
                                    for c, n in zip(row, numeric)) + "</tr>" for row in rows)
    cap = f"<caption>{e(caption_text)}</caption>" if caption_text else ""
    return (f'<table class="summary">{cap}<thead><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def comparison_sections(comparison: Comparison) -> list[str]:
    e = html.escape
    level = f"{comparison.confidence:.0%}"
    sections = ["<h2>Experiments</h2>", _html_table(
        ["Role", "Experiment", "Name", "Kind", "Seeds", "Results folder"],
        [[comparison.role(i) + (" (baseline)" if i == 0 else ""), x.id, x.name, x.kind,
          ", ".join(map(str, x.seeds)), str(x.root)] for i, x in enumerate(comparison.experiments)])]
    if len(comparison.experiments) > 2:
        sections.append("<p>Each experiment is compared with the first, the baseline A.</p>")
    for note in comparison.notes:
        sections.append(f'<p class="note">{e(note)}</p>')
    for i, pair in enumerate(comparison.pairs, start=1):
        role = comparison.role(i)
        sections.append(f"<h2>{e(role)} − A: paired differences</h2>")
        sections.append(f"<p class=\"meta\">A = <code>{e(pair.a.id)}</code>, {e(role)} = <code>{e(pair.b.id)}</code></p>")
        rows = []
        for row in pair.rows:
            r = row.result
            per_seed = ", ".join(f"{s}: {_number(d, row.metric, True)}" for s, d in zip(r.seeds, r.differences))
            rows.append([row.unit, metric_title(row.metric), _number(r.mean_a, row.metric), _number(r.mean_b, row.metric),
                         _number(r.mean_difference, row.metric, True), interval_text(r, row.metric),
                         _number(r.sd_difference, row.metric), p_text(r.p_sign), p_text(r.p_t),
                         str(r.n) + ("*" if r.skipped else ""), per_seed,
                         skipped_text(row) or "—"])
        sections.append(_html_table(
            ["Strategy" if pair.a.kind == "learn" else "Method", "Metric", "A", role, f"{role} − A",
             f"{level} CI (t)", "sd of differences", "p (sign test)", "p (paired t)", "n",
             f"per seed: {role} − A", "seeds skipped"], rows,
            caption(comparison, "see the last column").replace("B − A", f"{role} − A"),
            [False, False, True, True, True, True, True, True, True, True, False, False]))
        sections.append(figure_html(differences_figure(pair, comparison.metrics, comparison.confidence),
                                    f"{role} − A per strategy",
                                    f"Grey dots: each seed's {role} − A; diamond: the mean; bar: its {level} t interval; "
                                    f"dashed line: no difference."))
        left = [f"only in A: {', '.join(pair.only_a)}"] * bool(pair.only_a) + \
               [f"only in {role}: {', '.join(pair.only_b)}"] * bool(pair.only_b)
        if left:
            sections.append(f'<p class="note">Not compared (in one experiment only) — {e("; ".join(left))}</p>')
        sections.append(f"<h2>Settings that differ (A vs {e(role)})</h2>")
        sections.append(_html_table(["Setting", "A", role], [[p, _short(va), _short(vb)] for p, va, vb in pair.differences]
                                    or [["(none)", "", ""]],
                                    "The stored specs re-read with today's defaults; each strategy's settings as its "
                                    "runs used them (learn/defaults.py's tuned values included)."))
    return sections


def write_comparison_page(comparison: Comparison, path: str | Path) -> Path:
    """The self-contained HTML page of a comparison (report/page.py's skeleton), with the specs."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    specs = "\n".join(f"# {comparison.role(i)}: {x.id}\n{x.spec_yaml}" for i, x in enumerate(comparison.experiments))
    e = html.escape
    meta = (f"{e(comparison.baseline.kind)} experiments · baseline A <code>{e(comparison.baseline.id)}</code> · "
            f"compared: " + ", ".join(f"<code>{e(x.id)}</code>" for x in comparison.experiments[1:]))
    title = "palimpsest compare: " + " vs ".join(x.name for x in comparison.experiments)
    out.write_text(page(title, meta, comparison_sections(comparison), specs), encoding="utf-8")
    return out


def write_comparison(comparison: Comparison, out: str | Path | None = None) -> list[Path]:
    """The page and its two CSVs (beside it, same stem); returns [page, table CSV, settings CSV]."""
    target = page_path(comparison, out)
    written = write_comparison_page(comparison, target)
    return [written, *export_comparison_csv(comparison, target.parent, target.stem)]


__all__ = ["Comparison", "PairComparison", "Row", "StoredExperiment", "build_comparison_table", "compare_experiments",
           "comparison_text", "default_page", "export_comparison_csv", "find_experiment", "load_experiment",
           "render_comparison", "resolve_metrics", "settings_table", "split_root", "write_comparison",
           "write_comparison_page"]
