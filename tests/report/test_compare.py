"""`palimpsest compare`: experiments paired strategy by strategy and seed by seed, the settings that
differ, one page and two CSVs; reading never creates or changes anything else; clear errors."""
import csv
import hashlib
import math

import pytest
from typer.testing import CliRunner

from palimpsest.cli import app
from palimpsest.evaluate.compare import paired
from palimpsest.report.compare import compare_experiments, comparison_text
from palimpsest.run import ResultsDB, parse_spec, run_experiment

from ..conftest import tiny_spec


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def learn(name, buffer_size, seeds, strategies=None):
    strategies = strategies or ["naive", {"name": "er", "settings": {"buffer_size": buffer_size}}]
    return parse_spec(tiny_spec(name=name, strategies=strategies, seeds=seeds))


def unlearn(name, alpha):
    return parse_spec({"kind": "unlearn", "name": name, "seeds": [0, 1],
                       "train": {"dataset": "digits", "model": {"name": "mlp", "settings": {"hidden": [32]}},
                                 "training": {"epochs": 4, "batch_size": 32, "lr": 0.05, "momentum": 0.9}},
                       "forget": [{"kind": "classes", "classes": [3]}],
                       "methods": ["retrain", {"name": "ssd", "settings": {"alpha": alpha}}],
                       "audits": {"population_mia": False}})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A results folder with two comparable learning experiments (seeds 0-2 and 1-3, ER's buffer 20 vs
    60, B also runs LwF), one without a common strategy, one without a common seed, and two unlearning
    experiments (SSD's alpha 10 vs 5)."""
    root = tmp_path_factory.mktemp("compare") / "res"
    ids = {}
    ids["a"] = run_experiment(learn("cmp_a", 20, [0, 1, 2]), root=root, progress=False)
    ids["b"] = run_experiment(learn("cmp_b", 60, [1, 2, 3], ["naive", {"name": "er", "settings": {"buffer_size": 60}},
                                                            "lwf"]), root=root, progress=False)
    ids["other"] = run_experiment(learn("cmp_other", 0, [0], ["lwf"]), root=root, progress=False)
    ids["late"] = run_experiment(learn("cmp_late", 20, [7]), root=root, progress=False)
    ids["u10"] = run_experiment(unlearn("cmp_u10", 10.0), root=root, progress=False)
    ids["u5"] = run_experiment(unlearn("cmp_u5", 5.0), root=root, progress=False)
    return root, ids


def snapshot(folder):
    """Every file under `folder` with its content digest."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_experiments_are_paired_by_seed_strategy_by_strategy(store):
    root, ids = store
    before = snapshot(root)
    result = invoke("compare", "cmp_a", "cmp_b", "--root", root)
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Paired differences, B − A (class-IL)" in out
    assert "only in B (not compared): lwf" in out
    assert "seeds skipped (not paired) — only in A: 0; only in B: 3" in out
    assert "95% CI" in out and "Student t interval" in out and "sign test" in out
    assert "strategies.er.settings.buffer_size 20 60" in out and "seeds [0, 1, 2] [1, 2, 3]" in out
    # the page and both CSVs, in the root's reports/ like `palimpsest report`'s; nothing else changed
    folder = root / "reports" / f"compare-{ids['a']}-vs-{ids['b']}"
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith("reports/")} == before
    assert sorted(k for k in after if k.startswith("reports/")) == [
        f"reports/{folder.name}/{f}" for f in ("compare.csv", "compare.html", "compare_settings.csv")]
    page = (folder / "compare.html").read_text()
    assert "B − A: paired differences" in page and "data:image/png;base64," in page and "buffer_size" in page
    rows = {(r["strategy"], r["metric"]): r for r in csv.DictReader((folder / "compare.csv").open())}
    assert set(rows) == {(s, m) for s in ("naive", "er") for m in ("final_average_accuracy/class",
                                                                   "final_example_accuracy/class", "forgetting/class")}
    # the numbers are the stored ones, paired by seed: naive has the same settings on both sides, so
    # each seed's run is the same run and every difference is exactly 0
    naive = rows[("naive", "final_average_accuracy/class")]
    assert naive["paired_seeds"] == "1 2" and naive["skipped_seeds"] == "0 3" and float(naive["mean_difference"]) == 0
    with ResultsDB(root, create=False) as db:
        value = {(e, s): db.metrics(f"{ids[e]}/er/seed{s}")["final_average_accuracy/class"]
                 for e, seeds in (("a", (0, 1, 2)), ("b", (1, 2, 3))) for s in seeds}
    expected = paired({s: value["a", s] for s in (0, 1, 2)}, {s: value["b", s] for s in (1, 2, 3)})
    er = rows[("er", "final_average_accuracy/class")]
    assert er["n_pairs"] == "2" and er["interval"] == "t" and er["confidence"] == "0.95"
    by_hand = (value["b", 1] - value["a", 1] + value["b", 2] - value["a", 2]) / 2
    assert float(er["mean_difference"]) == pytest.approx(by_hand) == expected.mean_difference
    for key in ("ci_low", "ci_high", "p_sign", "p_t"):
        assert float(er[key]) == pytest.approx(getattr(expected, key))


def test_the_page_goes_where_out_says_and_the_root_is_left_alone(store, tmp_path):
    root, ids = store
    before = snapshot(root)
    result = invoke("compare", ids["a"], "cmp_b", "--root", root, "--out", tmp_path / "mine" / "er.html",
                    "--metric", "forgetting", "--metric", "train_seconds", "--confidence", "0.9")
    assert result.exit_code == 0, result.stderr
    assert snapshot(root) == before
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["er.csv", "er.html", "er_settings.csv"]
    rows = list(csv.DictReader((tmp_path / "mine" / "er.csv").open()))
    assert {r["metric"] for r in rows} == {"forgetting/class", "train_seconds"} and {r["confidence"] for r in rows} == {"0.9"}
    assert "90% CI" in result.stdout


def test_several_experiments_are_each_compared_with_the_first(store, tmp_path):
    root, ids = store
    other_root = tmp_path / "elsewhere"
    run_experiment(learn("cmp_far", 20, [0]), root=other_root, progress=False)
    comparison = compare_experiments(["cmp_a", "cmp_b", f"{other_root}:cmp_far"], root=root)
    text = comparison_text(comparison)
    assert [comparison.role(i) for i in range(3)] == ["A", "B1", "B2"]
    assert "Each experiment is compared with the first, the baseline A." in text
    far = comparison.pairs[1]
    assert far.b.root == other_root and far.only_a == [] and far.only_b == []
    naive = next(r for r in far.rows if r.unit == "naive")
    assert naive.result.seeds == [0] and naive.result.differences == [0.0]   # same spec and seed: the same run
    assert math.isnan(naive.result.ci_low)                                   # one pair: no interval
    assert not (other_root / "reports").exists() and not (root / "reports" / "x").exists()


def test_unlearning_experiments_compare_method_by_method(store):
    root, ids = store
    comparison = compare_experiments(["cmp_u10", "cmp_u5"], root=root)
    assert comparison.metrics == ["forget_accuracy", "retain_accuracy", "test_accuracy", "avg_gap"]
    pair = comparison.pairs[0]
    assert {r.unit for r in pair.rows} == {"original", "retrain", "ssd"}
    retrain = next(r for r in pair.rows if r.unit == "retrain" and r.metric == "forget_accuracy")
    assert retrain.result.seeds == [0, 1] and retrain.result.differences == [0.0, 0.0]   # the cached reference
    # settings resolved from the unlearner's Config: SSD's alpha differs, its other defaults do not
    assert ("methods.ssd.settings.alpha", 10.0, 5.0) in pair.differences
    assert not any(p.startswith("methods.ssd.settings.dampening") for p, _, _ in pair.differences)


BAD = [
    (["nope", "cmp_b"], "experiment 'nope' not found"),
    (["cmp_a"], "compare needs at least two experiments"),
    (["cmp_a", "cmp_u10"], "experiments of different kinds"),
    (["cmp_a", "cmp_other"], "no common strategies"),
    (["cmp_a", "cmp_late"], "no common seeds"),
    (["cmp_a", "cmp_b", "--metric", "forgeting"], "did you mean 'forgetting/class'"),
    (["cmp_a", "cmp_b", "--confidence", "1.5"], "bad --confidence"),
    (["cmp_a", "{root}/missing:cmp_b"], "no results database"),
    (["cmp_", "cmp_b"], "is ambiguous"),
]


@pytest.mark.parametrize("args,words", BAD, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else "")
def test_bad_comparisons_are_clear_errors_and_create_nothing(store, args, words):
    root, ids = store
    before = snapshot(root.parent)
    result = invoke("compare", *[a.format(root=root.parent) for a in args], "--root", root)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and "Traceback" not in result.stderr and words in text, text
    assert snapshot(root.parent) == before
