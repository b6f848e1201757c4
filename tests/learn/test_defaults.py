"""Every tuned default in learn/defaults.py runs the benchmark it was tuned on without a warning
(issue 10: EWC's task-IL default used to warn that it diverges, on its own default)."""
from __future__ import annotations

import fnmatch
import os
import warnings
from pathlib import Path

import pytest

from palimpsest.learn.defaults import DEFAULTS
from palimpsest.run.runner import run_experiment
from palimpsest.run.spec import parse_spec
from palimpsest.run.store.db import ResultsDB

FASHION = Path(os.environ.get("PALIMPSEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
# The benchmark each scenario's defaults were tuned on (see the comments in learn/defaults.py and
# the recipes cl_split_fmnist_task, cl_permuted_fmnist and cl_split_fmnist_class_b200): full
# Fashion-MNIST, MLP 256-256, SGD lr 0.05, batch 128. One epoch per experience keeps this test
# short; the recipes' 5 task-IL epochs give smaller penalties (measured in FEATURES.md). A test
# subset only shortens evaluation: the penalties are estimated on the full training data.
BENCHMARKS = {
    "task": {"dataset": "fashion_mnist", "scenario": "task", "n_experiences": 5, "test_subset": 1000},
    "domain": {"dataset": "fashion_mnist", "scenario": "domain", "transform": "permutation", "n_experiences": 5,
               "test_subset": 1000},
    "class": {"dataset": "fashion_mnist", "scenario": "class", "n_experiences": 5, "test_subset": 1000},
}


def strategies_for(scenario: str) -> list[str]:
    """Strategies with a default that applies to `scenario`; '*/*' defaults are checked in class-IL."""
    out = []
    for name, table in DEFAULTS.items():
        own = [p for p in table if fnmatch.fnmatchcase(f"fashion_mnist/{scenario}", p)]
        if any(p.split("/")[1] == scenario for p in own) or (scenario == "class" and "*/*" in table):
            out.append(name)
    return out


def test_every_default_pattern_has_a_benchmark_here():
    covered = {s for scenario in BENCHMARKS for s in strategies_for(scenario)}
    assert covered == set(DEFAULTS)
    for table in DEFAULTS.values():
        for pattern in table:
            assert pattern.split("/")[1] in (*BENCHMARKS, "*"), f"no benchmark for defaults under {pattern!r}"


@pytest.mark.slow
@pytest.mark.skipif(not any(FASHION.glob("train-images-idx3-ubyte*")),
                    reason="Fashion-MNIST files not installed (scripts/setup.sh installs dataset-fashion-mnist)")
@pytest.mark.parametrize("scenario", list(BENCHMARKS))
def test_defaults_run_their_benchmark_without_warnings(scenario, tmp_path):
    spec = parse_spec({"kind": "learn", "name": f"defaults_{scenario}", "benchmark": BENCHMARKS[scenario],
                       "model": {"name": "mlp", "settings": {"hidden": [256, 256]}},
                       "training": {"epochs": 1, "batch_size": 128, "optimizer": "sgd", "lr": 0.05},
                       "strategies": strategies_for(scenario), "seeds": [0]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp_id = run_experiment(spec, tmp_path, progress=False)
    ours = [str(w.message) for w in caught if "palimpsest" in w.filename or issubclass(w.category, RuntimeWarning)]
    assert ours == []
    with ResultsDB(tmp_path, create=False) as db:
        assert {r["strategy"]: r["status"] for r in db.runs(exp_id)} == dict.fromkeys(strategies_for(scenario),
                                                                                      "finished")
