"""One suite over every registered strategy (sklearn's parametrize_with_checks idea).

A strategy that cannot run in a scenario declares it in `unsupported`, a model it needs in
`model_requirements`, the training it needs `training_requirements`, a method that never reads
labels `label_free`; the tester reads those declarations and never special-cases a strategy by
name. Models are built as the runner builds them: created, prepared by the strategy, then an
optimizer over the strategy's parameters.
"""
import copy

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
from palimpsest.models.adapters import freeze
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


def make_model(strategy, stream):
    """A small model that has what the strategy declares it needs."""
    if "batchnorm" in strategy.model_requirements:
        return create_model("cnn", stream=stream, channels=(4, 8), hidden=16, norm="batch")
    return create_model("mlp", stream=stream, hidden=(16,))


def start(name, stream, seed=0, settings=None, epochs=1, frozen=()):
    """Strategy, context and schedule of a run, built as the runner builds them."""
    torch.manual_seed(seed)
    strategy = STRATEGIES.create(name, **(settings or {}))
    strategy.check_stream(stream)
    model = make_model(strategy, stream)
    if frozen:
        freeze(model, frozen)
    model = strategy.prepare(model)
    cfg = TrainingConfig(**{"epochs": 1 if stream.online_batch_size else epochs, "batch_size": 32, "lr": 0.05,
                            **strategy.training_requirements})
    ctx = TrainContext(model, make_optimizer(strategy.parameters(model), cfg), stream, cfg, torch.device("cpu"), seed)
    strategy.setup(ctx)
    return strategy, ctx, strategy.schedule(stream)


def train(strategy, ctx, schedule, steps):
    for k, ids in enumerate(schedule):
        if k in steps:
            ctx.step = k
            train_step(ctx, strategy, merge([ctx.stream.train[i] for i in ids]), label_free=strategy.label_free)


def fit(name, stream, seed=0, settings=None, steps=None, epochs=1):
    strategy, ctx, schedule = start(name, stream, seed, settings, epochs)
    train(strategy, ctx, schedule, range(len(schedule))[:steps])
    return strategy, ctx.model, ctx


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", NAMES)
def test_default_config_runs_or_declares_unsupported(name, scenario, digits):
    stream = make_stream(digits, scenario)
    cls = STRATEGIES.get(name).obj
    if scenario in cls.unsupported:
        with pytest.raises(ConfigError, match="does not support"):
            fit(name, stream)
        return
    strategy, model, _ = fit(name, stream)
    acc = evaluate_stream(strategy.eval_model(model), stream).accuracy("task")
    assert np.isfinite(acc).all()
    if not cls.label_free:   # a label-free method cannot learn new classes; it must only run
        chance = 1 / max(len(e.classes) for e in stream.test)
        assert acc.max() > 1.5 * chance


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


def _state(strategy, ctx):
    return {"model": copy.deepcopy(ctx.model.state_dict()), "optimizer": copy.deepcopy(ctx.optimizer.state_dict()),
            "strategy": strategy.state_dict(), "torch_rng": torch.get_rng_state()}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", NAMES)
def test_resume_from_a_checkpoint_is_bit_identical(name, scenario, digits, tmp_path):
    """Train, save (model, optimizer, strategy, random generator) to disk, load into fresh objects,
    continue: the parameters equal an uninterrupted run's bit for bit, for every strategy with state."""
    stream = make_stream(digits, scenario)
    if scenario in STRATEGIES.get(name).obj.unsupported:
        pytest.skip(f"{name} declares {scenario} unsupported")
    strategy, ctx, schedule = start(name, stream, seed=3)
    train(strategy, ctx, schedule, range(len(schedule)))
    reference = [p.detach().clone() for p in ctx.model.parameters()]

    cut = min(2, len(schedule) - 1)
    first, ctx1, _ = start(name, stream, seed=3)
    train(first, ctx1, schedule, range(cut))
    save_state(tmp_path / "state.safetensors", _state(first, ctx1))
    saved = load_state(tmp_path / "state.safetensors")
    again, ctx2, _ = start(name, stream, seed=99)        # fresh objects, other initial weights and draws
    ctx2.model.load_state_dict(saved["model"])
    ctx2.optimizer.load_state_dict(saved["optimizer"])
    again.load_state_dict(saved["strategy"])
    torch.set_rng_state(saved["torch_rng"])
    ctx2.seed = 3
    train(again, ctx2, schedule, range(cut, len(schedule)))
    for p, q in zip(reference, ctx2.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", NAMES)
def test_only_declared_trainable_parameters_change(name, digits):
    """With the backbone frozen, no strategy moves a frozen weight (not by its optimizer, its
    penalties, its snapshots or a re-initialisation)."""
    stream = class_incremental(digits, 5)
    strategy, ctx, schedule = start(name, stream, frozen=["backbone"])
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if not p.requires_grad}
    declared = {id(p) for p in strategy.parameters(ctx.model)}
    assert before and all(id(p) not in declared for n, p in ctx.model.named_parameters() if n in before)
    train(strategy, ctx, schedule, range(3))
    for n, p in ctx.model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
