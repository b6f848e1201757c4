"""One suite over every registered strategy (sklearn's parametrize_with_checks idea).

A strategy that cannot run in a scenario declares it in `unsupported`; the tester reads that
declaration and never special-cases a strategy by name.
"""
import numpy as np
import pytest
import torch

import palimpsest.learn  # noqa: F401
from palimpsest.core.errors import ConfigError, SpecError
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental, domain_incremental, online, task_incremental
from palimpsest.evaluate import evaluate_stream
from palimpsest.learn import TrainContext, TrainingConfig, make_optimizer, merge, train_step
from palimpsest.models import create_model
from palimpsest.run.store.files import load_state, save_state

NAMES = STRATEGIES.names()
SCENARIOS = ["class", "task", "domain", "online"]


def make_stream(digits, scenario):
    if scenario == "domain":
        return domain_incremental(digits, 3)
    if scenario == "task":
        return task_incremental(digits, 5)
    s = class_incremental(digits, 5)
    return online(s, 16) if scenario == "online" else s


def fit(name, stream, seed=0, settings=None, steps=None, epochs=1):
    torch.manual_seed(seed)
    strategy = STRATEGIES.create(name, **(settings or {}))
    strategy.check_stream(stream)
    model = create_model("mlp", stream=stream, hidden=(16,))
    cfg = TrainingConfig(epochs=1 if stream.online_batch_size else epochs, batch_size=32, lr=0.05)
    ctx = TrainContext(model, make_optimizer(model.parameters(), cfg), stream, cfg, torch.device("cpu"), seed)
    strategy.setup(ctx)
    schedule = strategy.schedule(stream)
    for k, ids in enumerate(schedule[:steps]):
        ctx.step = k
        train_step(ctx, strategy, merge([stream.train[i] for i in ids]))
    return strategy, model, ctx


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", NAMES)
def test_default_config_runs_or_declares_unsupported(name, scenario, digits):
    stream = make_stream(digits, scenario)
    cls = STRATEGIES.get(name).obj
    if scenario in cls.unsupported:
        with pytest.raises(ConfigError, match="does not support"):
            fit(name, stream)
        return
    _, model, _ = fit(name, stream)
    acc = evaluate_stream(model, stream).accuracy("task")
    assert np.isfinite(acc).all() and acc.max() > 0.3


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips(name):
    s = STRATEGIES.create(name)
    again = STRATEGIES.create(name, **s.settings())
    assert again.settings() == s.settings()
    assert repr(again) == repr(s)


@pytest.mark.parametrize("name", NAMES)
def test_bad_settings_give_the_clear_error(name):
    with pytest.raises(SpecError) as info:
        STRATEGIES.create(name, not_a_setting=1)
    assert "not_a_setting: expected no such field" in str(info.value)
    for field in STRATEGIES.get(name).obj.Config.model_fields:
        with pytest.raises(SpecError, match=field):
            STRATEGIES.create(name, **{field: object()})


def assert_same_state(a, b, path="state"):
    """Nested states (dicts, lists, tensors, scalars) equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}.{i}")
    else:
        assert a == b, path


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips(name, digits, tmp_path):
    stream = class_incremental(digits, 5)
    strategy, _, ctx = fit(name, stream, steps=2)
    save_state(tmp_path / "s.safetensors", strategy.state_dict())
    fresh = STRATEGIES.create(name, **strategy.settings())
    fresh.setup(ctx)
    fresh.load_state_dict(load_state(tmp_path / "s.safetensors"))
    assert_same_state(strategy.state_dict(), fresh.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_fixed_seed_is_deterministic(name, digits):
    stream = class_incremental(digits, 5)
    _, m1, _ = fit(name, stream, seed=5, steps=3)
    _, m2, _ = fit(name, stream, seed=5, steps=3)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    _, m3, _ = fit(name, stream, seed=6, steps=3)
    assert any(not torch.equal(p, q) for p, q in zip(m1.parameters(), m3.parameters()))
