"""Bad input gets a clear error that lists every problem at once."""
import pytest
import yaml

from palimpsest.core.errors import SpecError
from palimpsest.run import load_spec, parse_spec

from ..conftest import tiny_spec


def problems_of(data):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return "\n".join(info.value.problems)


def test_tiny_spec_is_valid():
    spec = parse_spec(tiny_spec())
    assert spec.strategies[0].name == "naive" and spec.training.epochs == 1


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstrategies: [naive\nseeds: [0]\n")
    with pytest.raises(SpecError, match=r"YAML syntax at line \d+, column \d+"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="expected an existing YAML spec"):
        load_spec(tmp_path / "nope.yaml")


def test_unknown_strategy_suggests_close_names():
    text = problems_of(tiny_spec(strategies=["naiv"]))
    assert "strategies.0.name: unknown strategy 'naiv'; did you mean 'naive'" in text


def test_negative_epochs():
    assert "training.epochs: expected a number >= 1, got -2" in problems_of(tiny_spec(training={"epochs": -2}))


def test_empty_and_duplicated_class_order():
    assert "class_order is empty" in problems_of(tiny_spec(benchmark={"class_order": []}))
    assert "class_order repeats classes [1]" in problems_of(tiny_spec(benchmark={"class_order": [0, 1, 1]}))


def test_dataset_path_that_does_not_exist(tmp_path):
    text = problems_of(tiny_spec(benchmark={"root": str(tmp_path / "missing")}))
    assert "benchmark.root: expected an existing path" in text


def test_more_experiences_than_classes():
    assert "benchmark.n_experiences: expected at most 10" in problems_of(tiny_spec(benchmark={"n_experiences": 12}))


def test_every_problem_reported_at_once():
    data = tiny_spec(training={"epochs": 0, "lr": -1, "optimizr": "sgd"}, seeds=[])
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert len(info.value.problems) == 4
    text = str(info.value)
    assert "4 problem(s)" in text and "optimizr: expected no such field" in text


def test_semantic_problems_are_reported_together():
    data = tiny_spec(strategies=["naiv", {"name": "naive", "settings": {"lam": 1}}],
                     benchmark={"dataset": "fashon_mnist"})
    text = problems_of(data)
    assert "benchmark.dataset: unknown dataset 'fashon_mnist'; did you mean 'fashion_mnist'" in text
    assert "strategies.0.name" in text and "strategies.1.settings.lam: expected no such field" in text


def test_bad_strategy_training_override_and_duplicate_labels():
    text = problems_of(tiny_spec(strategies=[{"name": "naive", "training": {"batch_size": 0}}]))
    assert "strategies.0.training.batch_size: expected a number >= 1, got 0" in text
    assert "appear twice" in problems_of(tiny_spec(strategies=["naive", "naive"]))


def test_online_needs_a_single_epoch():
    text = problems_of(tiny_spec(benchmark={"online_batch_size": 10}, training={"epochs": 3}))
    assert "expected 1 in an online scenario" in text


def test_not_a_mapping():
    assert "expected a mapping" in problems_of(["naive"])


def test_spec_round_trips_through_yaml():
    spec = parse_spec(tiny_spec())
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec
    assert parse_spec(yaml.safe_load(spec.to_yaml())).digest() == spec.digest()
