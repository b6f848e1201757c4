"""The CI rows of recipes/expected_results.csv: each recipe runs in seconds; a number outside its
two-sided band fails, whether it dropped or rose."""
from pathlib import Path

import pytest

from palimpsest.core.errors import DataError
from palimpsest.run.regression import Expectation, Outcome, check, read_expectations

TABLE = Path(__file__).parents[1] / "recipes" / "expected_results.csv"


def test_ci_rows_stay_in_their_bands(tmp_path):
    rows = read_expectations(TABLE)
    assert any(r.budget == "full" for r in rows)
    outcomes = check(rows, TABLE.parent, tmp_path, budget="ci")
    assert outcomes and len(outcomes) == sum(r.budget == "ci" for r in rows)
    failed = [o for o in outcomes if not o.passed]
    assert not failed, "\n".join(f"{o.row} measured {o.measured}" for o in failed)


def test_bands_are_two_sided():
    row = Expectation("r", "s", "m", expected=0.5, tolerance=0.02, budget="ci")
    assert Outcome(row, 0.51).passed and Outcome(row, 0.49).passed
    assert not Outcome(row, 0.53).passed      # a rise fails too
    assert not Outcome(row, 0.47).passed
    assert not Outcome(row, float("nan")).passed


def test_every_full_row_names_an_existing_recipe():
    for r in read_expectations(TABLE):
        assert (TABLE.parent / r.recipe).exists(), r.recipe


def test_malformed_table_is_a_clear_error(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("recipe,strategy,metric,expected\nx,y,z,0.1\n")
    with pytest.raises(DataError, match="lacks columns"):
        read_expectations(bad)
    bad.write_text("recipe,strategy,metric,expected,tolerance,budget\nx,y,z,high,0.1,ci\n")
    with pytest.raises(DataError, match="line 2"):
        read_expectations(bad)
