"""The parity recipes (recipes/parity_*.yaml, docs/PARITY.md): every one validates, including the
MNIST ones whose data is not on this machine, and what only data can tell (the stream builds, the
strategies support it, the model builds) is checked on Fashion-MNIST in their place."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from palimpsest.core.errors import SpecError
from palimpsest.core.registry import KINDS
from palimpsest.run.spec import load_spec, parse_spec

from ..conftest import tiny_spec

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("parity_*.yaml"))
FASHION = Path(os.environ.get("PALIMPSEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def test_the_parity_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"parity_avalanche_gdumb_smnist", "parity_avalanche_gdumb_sfmnist", "parity_avalanche_agem_pmnist",
            "parity_avalanche_ewc_pmnist", "parity_mammoth_derpp_seqmnist_500",
            "parity_agem_split_fmnist_fixed_head"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_parity_recipe_validates(path):
    spec = load_spec(path)  # raises SpecError listing every problem
    assert spec.name == path.stem
    assert spec.init_seed == "plain" or "fixed_head" in path.stem
    assert spec.model.mask_unseen is False  # every protocol here uses a plain fixed head


@pytest.mark.skipif(not any(FASHION.glob("train-images-idx3-ubyte*")),
                    reason="Fashion-MNIST files not installed (scripts/setup.sh installs dataset-fashion-mnist)")
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_parity_recipe_passes_preflight_on_fashion_mnist(path):
    raw = yaml.safe_load(path.read_text())
    raw["benchmark"] = {**raw["benchmark"], "dataset": "fashion_mnist", "train_subset": 300, "test_subset": 100}
    spec = parse_spec(raw, str(path))
    KINDS.get(spec.kind).obj().preflight(spec)


def test_avalanche_ewc_recipe_uses_avalanches_fisher_with_twice_its_lambda():
    spec = load_spec(next(p for p in RECIPES if p.stem == "parity_avalanche_ewc_pmnist"))
    settings = spec.strategies[0].settings
    assert settings["fisher_estimator"] == "batch" and settings["fisher_labels"] == "true"
    assert settings["fisher_batch_size"] == spec.training.batch_size == 256    # Avalanche's train_mb_size
    assert settings["ewc_lambda"] == 2 * 1.0                                   # the baselines' ewc_lambda=1
    assert settings["max_examples"] is None


def test_mnist_recipe_preflight_fails_only_for_missing_data(monkeypatch, tmp_path):
    """What `palimpsest validate` runs after the spec loader, on an MNIST recipe: passes where the IDX
    files are, else a data error that says where to put them."""
    from palimpsest.core.errors import PalimpsestError
    spec = load_spec(next(p for p in RECIPES if p.stem == "parity_avalanche_gdumb_smnist"))
    monkeypatch.setenv("PALIMPSEST_MNIST", str(tmp_path))  # an empty folder: the files are missing here
    with pytest.raises(PalimpsestError) as info:
        KINDS.get(spec.kind).obj().preflight(spec)
    assert "MNIST files not found" in info.value.what and "PALIMPSEST_MNIST" in info.value.fix


@pytest.mark.parametrize("name, value, note", [
    ("si_lambda", 2.0, "si_c = si_lambda / 2"),
    ("e_lambda", 1.0, "ewc_lambda = 2 x e_lambda"),
    ("lambda", 1.0, "ewc_lambda = 2 x theirs"),
    ("mem_size", 100, "memory_size for gdumb"),
])
def test_other_libraries_names_say_when_the_value_changes(name, value, note):
    strategy = {"si_lambda": "si", "mem_size": "er"}.get(name, "ewc")
    with pytest.raises(SpecError) as info:
        parse_spec(tiny_spec(strategies=[{"name": strategy, "settings": {name: value}}]), "spec")
    text = "\n".join(info.value.problems)
    assert "did you mean" in text and note in text, text


def test_the_specs_shown_in_parity_md_are_the_recipes():
    import re
    text = (Path(__file__).parents[2] / "docs" / "PARITY.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    by_name = {p.stem: p for p in RECIPES}
    for block in blocks:
        shown = parse_spec(yaml.safe_load(block), "docs/PARITY.md")
        assert shown.name in by_name, f"docs/PARITY.md shows {shown.name}, which is no recipe"
        assert shown.model_dump() == load_spec(by_name[shown.name]).model_dump(), shown.name
