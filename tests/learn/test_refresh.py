"""Refresh learning ("A Unified and General Framework for Continual Learning", ICLR 2024): a plug-in
that unlearns the incoming batch (Fisher-scaled gradient ascent with noise) before the composed
strategy's step relearns it."""
import torch

from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental
from palimpsest.learn import Batch, Composite, TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.models import create_model


def context(stream, strategy, seed=0, model=None):
    torch.manual_seed(seed)
    model = model or create_model("mlp", stream=stream, hidden=(16,))
    cfg = TrainingConfig(epochs=1, batch_size=32, lr=0.05)
    ctx = TrainContext(model, make_optimizer(strategy.parameters(model), cfg), stream, cfg, torch.device("cpu"), seed)
    strategy.setup(ctx)
    return ctx


def run(strategy, stream, steps, seed=0):
    ctx = context(stream, strategy, seed)
    for k in steps:
        ctx.step = k
        train_step(ctx, strategy, stream.train[k])
    return ctx


def incoming(exp, n=32):
    return Batch(inputs=exp.inputs[:n], targets=exp.targets[:n], task_ids=torch.full((n,), exp.task_id))


def test_unlearning_step_raises_the_loss_of_the_incoming_batch(digits_stream):
    refresh = STRATEGIES.create("refresh", delta=0.02, noise=0.0)
    ctx = run(refresh, digits_stream, [0])
    batch = incoming(digits_stream.train[0])
    with torch.no_grad():
        before = ctx.task_loss(batch, ctx.output(batch)).item()
    refresh.prepare_batch(ctx, batch, {"incoming": batch.rows})
    with torch.no_grad():
        after = ctx.task_loss(batch, ctx.output(batch)).item()
    assert after > before * 1.05


def test_fisher_slows_the_unlearning_of_important_weights(digits_stream):
    refresh = STRATEGIES.create("refresh", delta=0.02, noise=0.0, fisher_scale=1.0)
    ctx = run(refresh, digits_stream, [0])
    assert set(refresh.fisher) == {n for n, _ in ctx.model.named_parameters()}   # kept at the experience's end
    names = sorted(refresh.fisher)
    for name in names:                                  # one tensor is made very important, the rest not at all
        refresh.fisher[name] = torch.full_like(refresh.fisher[name], 1e6 if name == "head.weight" else 0.0)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    batch = incoming(digits_stream.train[1])
    refresh.prepare_batch(ctx, batch, {"incoming": batch.rows})
    moved = {n: (p.detach() - before[n]).norm().item() / before[n].norm().item() for n, p in ctx.model.named_parameters()}
    assert moved["head.weight"] < 1e-6
    assert min(v for n, v in moved.items() if n != "head.weight" and "backbone" in n) > 1e-3


def test_refresh_wraps_any_strategy_and_without_a_step_changes_nothing(digits_stream):
    def final_weights(plugins, main="er"):
        strategy = STRATEGIES.create(main, buffer_size=30)
        if plugins:
            strategy = Composite(strategy, [STRATEGIES.create("refresh", **plugins)])
        ctx = run(strategy, digits_stream, [0, 1])
        return torch.cat([p.detach().flatten() for p in ctx.model.parameters()])

    for main in ("er", "derpp"):
        plain = final_weights(None, main)
        assert torch.equal(plain, final_weights({"delta": 0.0}, main))          # delta 0: exactly the base
        assert not torch.allclose(plain, final_weights({"delta": 1e-3}, main))  # a refresh step changes training


def test_unlearning_pass_leaves_batchnorm_statistics_alone(digits):
    stream = class_incremental(digits, 5)
    refresh = STRATEGIES.create("refresh", delta=0.01)
    torch.manual_seed(0)
    model = create_model("cnn", stream=stream, channels=(4, 8), hidden=16, norm="batch")
    ctx = context(stream, refresh, model=model)
    ctx.adapter.observe_classes(stream.train[0].classes)
    ctx.model.train()
    stats = {n: b.clone() for n, b in ctx.model.named_buffers() if "running" in n or "tracked" in n}
    batch = incoming(stream.train[0])
    refresh.prepare_batch(ctx, batch, {"incoming": batch.rows})
    for n, b in ctx.model.named_buffers():
        if n in stats:
            assert torch.equal(stats[n], b), n
