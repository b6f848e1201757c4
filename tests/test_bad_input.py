"""Bad input never reaches a Python traceback: a corpus of malformed specs (tests/fixtures/bad_specs,
made by make_bad_specs.py) and a corpus of bad command lines. `validate` refuses exactly what `run`
refuses, both with the four-part error, and a refused `run` records nothing."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palimpsest.cli import app

CORPUS = Path(__file__).parent / "fixtures" / "bad_specs"
FILES = sorted(CORPUS.glob("*.yaml"))


def expected(path: Path) -> str:
    side = path.with_suffix(".expect")
    if side.exists():
        return side.read_text().strip()
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clear_error(result, words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception   # not an escaped exception
    text = " ".join(result.stderr.split())                                # rich wraps long lines
    assert "Traceback" not in result.stderr and text.startswith("error:"), result.stderr
    assert " ".join(words.split()) in text, (words, result.stderr)


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 80


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_validate_and_run_refuse_every_malformed_spec_with_a_clear_error(path, tmp_path):
    words = expected(path)
    assert_clear_error(invoke("validate", path, "--root", tmp_path / "res"), words)
    assert_clear_error(invoke("run", path, "--root", tmp_path / "res", "--no-progress"), words)
    db = tmp_path / "res" / "results.sqlite"
    if db.exists():   # nothing recorded
        from palimpsest.run import ResultsDB
        with ResultsDB(tmp_path / "res") as store:
            assert store.experiments() == []


def test_a_spec_over_a_megabyte_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("kind: learn\nstrategies: [naive]\ndescription: '" + "x" * 1_100_000 + "'\n")
    assert_clear_error(invoke("validate", big), "at most 1000 kB")


def test_a_directory_or_a_missing_file_is_refused(tmp_path):
    assert_clear_error(invoke("validate", tmp_path), "got the directory")
    assert_clear_error(invoke("run", tmp_path / "nope.yaml"), "expected an existing YAML spec")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A results folder with one finished tiny learning run."""
    import yaml

    from .conftest import tiny_spec
    root = tmp_path_factory.mktemp("stored")
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["joint"], training={"epochs": 2})))
    result = invoke("run", spec, "--root", root / "res", "--no-progress")
    assert result.exit_code == 0, result.stderr
    from palimpsest.run import ResultsDB
    with ResultsDB(root / "res") as db:
        exp = db.experiments()[0]["id"]
    return root, spec, exp


BAD_COMMAND_LINES = [
    (["run", "{spec}", "--seeds", ","], "no seed given"),
    (["run", "{spec}", "--seeds", "0,0"], "repeats a seed"),
    (["run", "{spec}", "--seeds", "a"], "bad --seeds"),
    (["run", "{spec}", "--seeds", "-1"], "out of range"),
    (["run", "{spec}", "--seeds", str(2 ** 70)], "out of range"),
    (["run", "{spec}", "--root", "{file}"], "is a file"),
    (["report", "nope", "--root", "{root}/res"], "experiment 'nope' not found"),
    (["report", "--root", "{root}/missing"], "no results database"),
    (["export", "--root", "{root}/missing"], "no results database"),
    (["audit", "--root", "{root}/missing"], "no results database"),
    (["audit", "{exp}", "--root", "{root}/res"], "is not an unlearning experiment"),
    (["forget", "{exp}/joint/seed0", "--classes", "12", "--root", "{root}/res"], "classes the model does not have"),
    (["forget", "{exp}/joint/seed0", "--fraction", "2", "--root", "{root}/res"], "fraction"),
    (["forget", "{exp}/joint/seed0", "--fraction", "0", "--root", "{root}/res"], "fraction"),
    (["forget", "{exp}/joint/seed0", "--indices", "-1", "--root", "{root}/res"], "forget indices out of range"),
    (["forget", "{exp}/joint/seed0", "--indices", "x", "--root", "{root}/res"], "integers separated by commas"),
    (["forget", "{exp}/joint/seed0", "--classes", "3", "--method", "ssdd", "--root", "{root}/res"],
     "unknown unlearner 'ssdd'"),
    (["forget", "{exp}/joint/seed0", "--root", "{root}/res"], "exactly one of --classes, --fraction, --indices"),
    (["forget", "{exp}/nope/seed0", "--classes", "3", "--root", "{root}/res"], "not found"),
    (["forget", "{exp}/joint/seed0", "--classes", "3", "--root", "{root}/missing"], "no results database"),
    (["forget", "{exp}/joint/seed0", "--classes", "3", "--step", "9", "--root", "{root}/res"], "no stored model"),
    (["regress", "--table", "{root}/nope.csv"], "no expected-results table"),
    (["ls", "strategy"], "unknown listing 'strategy'"),
    (["doctor", "--root", "{root}/missing"], "no results database"),
    (["doctor", "--reset-run", "nope/x/seed0", "--root", "{root}/res"], "not found"),
    (["validate", "{root}/nope.yaml"], "expected an existing YAML spec"),
]


@pytest.mark.parametrize("args,words", BAD_COMMAND_LINES, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else "")
def test_bad_command_lines_give_a_clear_error_and_create_nothing(args, words, stored):
    root, spec, exp = stored
    (root / "a_file").write_text("x")
    filled = [a.format(spec=spec, root=root, exp=exp, file=root / "a_file") for a in args]
    before = sorted(p.name for p in root.iterdir())
    assert_clear_error(invoke(*filled), words)
    assert sorted(p.name for p in root.iterdir()) == before   # no folder or database created
    from palimpsest.run import ResultsDB
    with ResultsDB(root / "res") as db:
        assert [e["id"] for e in db.experiments()] == [exp]   # nothing recorded
