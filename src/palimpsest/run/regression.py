"""Regression against a table of expected results (recipes/expected_results.csv).

Each row: recipe, strategy (label), metric, expected, tolerance, budget. For an unlearning recipe
the "strategy" is a method's label (or "original") and the metric an audit key (forget_accuracy,
avg_gap, ...); a recipe with several forget requests names request i > 0 as "label#i". A row passes when the
measured mean over the recipe's seeds lies within expected ± tolerance: two-sided, so a number
that silently RISES fails too (a fix that changes results must update the table on purpose).
`budget` is "ci" (tiny recipes that run in seconds, checked by the test suite) or "full" (the
published numbers, `palimpsest regress --full`).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError
from .runner import run_experiment
from .spec import load_spec
from .store.db import ResultsDB
from .summary import summary_table

COLUMNS = ("recipe", "strategy", "metric", "expected", "tolerance", "budget")


@dataclass(frozen=True)
class Expectation:
    recipe: str
    strategy: str
    metric: str
    expected: float
    tolerance: float
    budget: str


@dataclass
class Outcome:
    row: Expectation
    measured: float

    @property
    def passed(self) -> bool:
        return not math.isnan(self.measured) and abs(self.measured - self.row.expected) <= self.row.tolerance


def read_expectations(path: str | Path) -> list[Expectation]:
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(row for row in f if not row.startswith("#"))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks columns {missing}", expected=", ".join(COLUMNS),
                            got=", ".join(reader.fieldnames or []))
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                rows.append(Expectation(r["recipe"], r["strategy"], r["metric"], float(r["expected"]),
                                        float(r["tolerance"]), r["budget"]))
            except ValueError:
                raise DataError(f"{path}, line {i}: expected and tolerance must be numbers",
                                expected="e.g. 0.2,0.02", got=f"{r['expected']},{r['tolerance']}") from None
    return rows


def check(expectations: list[Expectation], recipes_dir: str | Path, root: str | Path,
          budget: str = "ci", progress: bool = False) -> list[Outcome]:
    """Run every recipe that has rows of `budget` once and compare its metric means."""
    chosen = [e for e in expectations if e.budget == budget]
    outcomes: list[Outcome] = []
    for recipe in dict.fromkeys(e.recipe for e in chosen):
        exp_id = run_experiment(load_spec(Path(recipes_dir) / recipe), root=root, progress=progress)
        with ResultsDB(root) as db:
            summary = summary_table(db, exp_id)
        for e in (e for e in chosen if e.recipe == recipe):
            stat = summary.get(e.strategy, {}).get(e.metric)
            outcomes.append(Outcome(e, stat["mean"] if stat else float("nan")))
    return outcomes


def outcome_lines(outcomes: list[Outcome]) -> list[str]:
    return [f"{'PASS' if o.passed else 'FAIL'}  {o.row.recipe:<34} {o.row.strategy:<14} {o.row.metric:<34} "
            f"measured {o.measured:.4f}  expected {o.row.expected:.4f} ± {o.row.tolerance:.4f}" for o in outcomes]
