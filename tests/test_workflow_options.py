"""Issue 10's researcher options, each a behaviour that can fail: user code from a file (CLI flag and
spec list), labels of user data checked or explicitly remapped, and the peer-parity options (raw
[0, 1] inputs, an unpermuted first task, a plain unmasked head, plain init seeding)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
import yaml

from palimpsest.core.errors import DataError
from palimpsest.core.seeding import seed_everything
from palimpsest.data import load_dataset
from palimpsest.run import parse_spec
from palimpsest.run.kinds.learn import build_model, build_stream, strategy_from_spec

from .conftest import tiny_spec
from .test_plugins import PLUGIN

# test_plugins' strategy under another name, saved as a user's own file
PLUGIN_FILE = PLUGIN.replace('"half_lr"', '"my_half_lr"')


def _cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "palimpsest", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_strategy_in_a_users_file_runs_from_the_cli_and_from_the_spec(tmp_path):
    (tmp_path / "my_methods.py").write_text(PLUGIN_FILE)
    spec = tmp_path / "mine.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["my_half_lr", "naive"])))
    refused = _cli("validate", str(spec), cwd=tmp_path)
    assert refused.returncode == 2 and "unknown strategy 'my_half_lr'" in refused.stderr and "--plugin" in refused.stderr, refused.stderr
    out = _cli("run", str(spec), "--plugin", "my_methods.py", "--root", "res", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "my_half_lr" in out.stdout

    # the spec's own list, relative to the spec's folder (run from elsewhere), and the stored spec
    # keeps the absolute path so `report` reloads the file
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "my_methods.py").write_text(PLUGIN_FILE)
    listed = sub / "listed.yaml"
    listed.write_text(yaml.safe_dump({**tiny_spec(strategies=["my_half_lr"]), "plugins": ["my_methods.py"]}))
    out = _cli("run", str(listed), "--root", "res2", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _cli("report", "--root", "res2", cwd=tmp_path).returncode == 0

    missing = _cli("run", str(spec), "--plugin", "nowhere.py", "--root", "res3", cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere.py" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "res3" / "results.sqlite").exists()


def _npz(path, y_train, y_test):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.normal(size=(len(y_train), 4)), y_train=np.asarray(y_train),
             x_test=rng.normal(size=(len(y_test), 4)), y_test=np.asarray(y_test))
    return path


def test_labels_one_to_ten_are_refused_or_remapped_never_read_as_eleven_classes(tmp_path):
    path = _npz(tmp_path / "one_based.npz", np.arange(40) % 10 + 1, np.arange(20) % 10 + 1)
    with pytest.raises(DataError) as info:
        load_dataset("npz", path=path)
    message = str(info.value)
    assert "0..K-1" in message and "remap_labels" in message and "[1, 2, 3" in message
    data = load_dataset("npz", path=path, remap_labels=True)
    assert data.n_classes == 10 and set(np.unique(data.y_train)) == set(range(10))
    assert data.class_names == tuple(str(v) for v in range(1, 11))   # the original values name the classes
    # through a spec, as the error message says
    spec = parse_spec({**tiny_spec(), "benchmark": {"dataset": "npz", "root": str(path), "n_experiences": 5,
                                                    "options": {"remap_labels": True}}})
    stream = build_stream(spec.benchmark, 0)
    assert sorted(c for e in stream.train for c in e.classes) == list(range(10))


def _stream(**benchmark):
    return build_stream(parse_spec(tiny_spec(benchmark=benchmark)).benchmark, 0)


def test_standardize_false_keeps_pixels_in_zero_one():
    raw = _stream(dataset="digits", standardize=False)
    scaled = _stream(dataset="digits")
    x = raw.train[0].inputs
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert float(scaled.train[0].inputs.min()) < 0.0


def test_keep_first_leaves_only_the_first_permuted_experience_unpermuted():
    kept = _stream(dataset="digits", scenario="domain", n_experiences=3, keep_first=True)
    every = _stream(dataset="digits", scenario="domain", n_experiences=3)
    x_kept, x_perm = kept.test[0].inputs.flatten(1), every.test[0].inputs.flatten(1)
    assert torch.equal(x_kept.sort(1).values, x_perm.sort(1).values)   # the same pixels ...
    assert not torch.equal(x_kept, x_perm)                              # ... in another order
    assert torch.equal(kept.test[1].inputs, every.test[1].inputs)       # later tasks: the same permutations
    plain = _stream(dataset="digits", scenario="class", n_experiences=1)
    assert torch.equal(x_kept.sort(0).values, plain.test[0].inputs.flatten(1).sort(0).values)


def test_an_unmasked_head_scores_every_class_from_the_start():
    for mask_unseen, masked in ((True, True), (False, False)):
        spec = parse_spec(tiny_spec(model={"name": "mlp", "settings": {"hidden": [8]}, "mask_unseen": mask_unseen}))
        stream = build_stream(spec.benchmark, 0)
        strategy = strategy_from_spec(spec.strategies[0], spec.benchmark)
        model = build_model(spec.model, stream, strategy)
        model.observe_classes(stream.train[0].classes)
        logits = model(stream.test[1].inputs[:4])
        unseen = [c for c in range(stream.n_classes) if c not in stream.train[0].classes]
        assert bool((logits[:, unseen] < -1e3).all()) == masked


SEEN: list[torch.Tensor] = []


def test_plain_init_seeding_is_torch_manual_seed_before_the_model():
    from palimpsest.core.registry import STRATEGIES
    from palimpsest.learn import Strategy
    from palimpsest.run import run_experiment

    if "first_weights_probe" not in STRATEGIES:
        @STRATEGIES.register("first_weights_probe", summary="test probe: records the initial weights")
        class Probe(Strategy):
            name = "first_weights_probe"

            def setup(self, ctx):
                super().setup(ctx)
                SEEN.append(next(ctx.model.parameters()).detach().clone())

    found = {}
    for how in ("plain", "derived"):
        SEEN.clear()
        spec = parse_spec({**tiny_spec(strategies=["first_weights_probe"], seeds=[3],
                                       benchmark={"n_experiences": 2}), "init_seed": how, "name": f"init-{how}"})
        with tempfile.TemporaryDirectory() as root:
            run_experiment(spec, root=root, progress=False)
        found[how] = SEEN[0]
    stream = build_stream(spec.benchmark, 3)
    strategy = strategy_from_spec(spec.strategies[0], spec.benchmark)
    seed_everything(3)   # what a plain script does: torch.manual_seed(3), then build the model
    expected = next(build_model(spec.model, stream, strategy).parameters()).detach()
    assert torch.equal(found["plain"], expected)
    assert not torch.equal(found["derived"], expected)
