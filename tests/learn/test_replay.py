"""Behaviour of the replay strategies (ER, DER, DER++, ER-ACE, A-GEM) on digits: assertions that
fail if the buffer, the losses or the projection are wrong."""
import copy

import pytest
import torch
from torch.nn import functional as F

# registers the strategies (until learn/__init__ imports them)
import palimpsest.learn.agem
import palimpsest.learn.der
import palimpsest.learn.er
import palimpsest.learn.er_ace  # noqa: F401
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental, online, task_incremental
from palimpsest.evaluate import evaluate_stream
from palimpsest.models.adapters import ModelOutput
from palimpsest.learn import Batch, TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.models import create_model
from palimpsest.run.store.files import load_state, save_state

from .test_conformance import fit

REPLAY = ["er", "der", "derpp", "er_ace", "agem"]


def context(stream, seed=0, hidden=(16,)):
    torch.manual_seed(seed)
    model = create_model("mlp", stream=stream, hidden=hidden)
    cfg = TrainingConfig(epochs=1, batch_size=32, lr=0.05)
    return TrainContext(model, make_optimizer(model.parameters(), cfg), stream, cfg, torch.device("cpu"), seed)


def train(strategy, ctx, steps):
    strategy.setup(ctx)
    for k in steps:
        ctx.step = k
        train_step(ctx, strategy, ctx.stream.train[k])


def first_batch(exp, n=32):
    return Batch(inputs=exp.inputs[:n], targets=exp.targets[:n], task_ids=torch.full((n,), exp.task_id, dtype=torch.long))


def values_for(batch):
    """The per-step values the loop starts a mini-batch with."""
    return {"incoming": batch.rows}


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
@pytest.mark.parametrize("name", REPLAY)
def test_buffer_stays_within_budget(name, policy, digits_stream):
    strategy, _, _ = fit(name, digits_stream, settings={"buffer_size": 40, "buffer_policy": policy})
    buffer = strategy.buffer
    assert 0 < len(buffer) <= 40
    assert all(len(t) == 40 for t in buffer.data.values())   # storage never grows past the budget
    if name != "agem":                                      # A-GEM keeps 40 // 5 per finished experience
        assert len(buffer) == 40 and buffer.seen == sum(len(e) for e in digits_stream.train)
    if policy == "class_balanced":
        counts = buffer.class_counts()
        assert max(counts.values()) - min(counts.values()) <= 1


def test_agem_memory_gets_an_equal_share_of_each_finished_experience(digits_stream):
    strategy, _, _ = fit("agem", digits_stream, settings={"buffer_size": 50}, steps=3)
    assert len(strategy.buffer) == 30    # 50 // 5 experiences, after each of the 3 finished ones
    assert sorted(strategy.buffer.class_counts()) == [0, 1, 2, 3, 4, 5]


def test_er_trains_on_replayed_examples(digits_stream):
    strategy, _, ctx = fit("er", digits_stream, steps=1)
    incoming = first_batch(digits_stream.train[1])
    values = values_for(incoming)
    batch = strategy.prepare_batch(ctx, incoming, values)
    assert len(batch.targets) == 64 and torch.equal(batch.inputs[:32], incoming.inputs)
    assert set(batch.targets[32:].tolist()) <= {0, 1}    # the replayed half comes from experience 0
    output = ctx.output(batch)
    logits = output.logits
    loss = strategy.batch_loss(ctx, batch, output, values)
    assert torch.allclose(loss, F.cross_entropy(logits, batch.targets))     # one joint cross-entropy
    assert not torch.allclose(loss, F.cross_entropy(logits[:32], incoming.targets))


def test_er_with_an_empty_buffer_or_no_replay_is_naive(digits_stream):
    strategy = STRATEGIES.create("er")
    ctx = context(digits_stream)
    strategy.setup(ctx)
    incoming = first_batch(digits_stream.train[0])
    assert strategy.prepare_batch(ctx, incoming, values_for(incoming)) is incoming   # nothing stored yet: as it is
    _, er_model, _ = fit("er", digits_stream, settings={"replay_batch_size": 0}, steps=3)
    _, naive_model, _ = fit("naive", digits_stream, steps=3)
    for p, q in zip(er_model.parameters(), naive_model.parameters()):
        assert torch.equal(p, q)


class InsertionProbe:
    """Wraps a DER strategy's hooks: snapshots the model before each step, and after each step
    compares what the buffer stored with the snapshot's logits."""

    def __init__(self, strategy):
        self.strategy, self.checked = strategy, 0
        self.prepare, self.after = strategy.prepare_batch, strategy.after_step
        strategy.prepare_batch, strategy.after_step = self.prepare_batch, self.after_step

    def prepare_batch(self, ctx, batch, values):
        self.snapshot, self.incoming, self.size = copy.deepcopy(ctx.model), batch, len(self.strategy.buffer)
        return self.prepare(ctx, batch, values)

    def after_step(self, ctx, batch, values):
        self.after(ctx, batch, values)
        stored = self.strategy.buffer.data["logits"][self.size:len(self.strategy.buffer)]
        x = self.incoming.inputs
        with torch.no_grad():
            then = self.snapshot.head(self.snapshot.features(x))    # raw outputs, every class
            now = ctx.model.head(ctx.model.features(x))
        assert len(stored) == len(x)
        assert torch.allclose(stored, then, atol=1e-5)
        assert not torch.allclose(stored, now, atol=1e-3)        # not the post-step (or later) model's
        self.checked += 1


@pytest.mark.parametrize("name", ["der", "derpp"])
def test_der_stores_logits_when_each_example_is_seen(name, digits_stream):
    strategy = STRATEGIES.create(name, buffer_size=5000)   # larger than the stream: every example kept in order
    probe = InsertionProbe(strategy)
    ctx = context(digits_stream)
    train(strategy, ctx, [0, 1])
    assert probe.checked == sum(-(-len(digits_stream.train[k]) // 32) for k in (0, 1))
    # logits of the first experience were not refreshed at its end: they differ from the final model's
    first = strategy.buffer.all()
    with torch.no_grad():
        final = ctx.model.head(ctx.model.features(first["inputs"][:50]))
    assert not torch.allclose(first["logits"][:50], final, atol=1e-2)


def test_der_loss_ignores_masked_logits(digits_stream):
    strategy, _, ctx = fit("der", digits_stream, steps=1)
    stored = strategy.buffer.all()["logits"]
    # raw outputs are stored, so classes not yet seen hold real numbers, not MASKED_LOGIT
    assert torch.isfinite(stored).all() and stored.abs().max() < 100
    ctx.model.observe_classes(digits_stream.train[1].classes)
    incoming = first_batch(digits_stream.train[1])
    values = values_for(incoming)
    batch = strategy.prepare_batch(ctx, incoming, values)
    loss = strategy.batch_loss(ctx, batch, ctx.output(batch), values).detach()
    assert 0 < float(loss) < 20        # the matching term over classes 0..3 stays on the scale of CE
    # and the matching term does act: a large alpha raises the loss
    big = STRATEGIES.create("der", alpha=100.0)
    big.setup(ctx)
    big.load_state_dict(strategy.state_dict())
    values = values_for(incoming)
    batch = big.prepare_batch(ctx, incoming, values)
    assert float(big.batch_loss(ctx, batch, ctx.output(batch), values).detach()) > float(loss)


def test_er_ace_masks_the_incoming_loss_to_current_classes(digits_stream):
    grads = {}
    for name in ("er", "er_ace"):
        strategy, _, ctx = fit(name, digits_stream, steps=1)
        ctx.model.observe_classes(digits_stream.train[1].classes)
        strategy.before_experience(ctx, digits_stream.train[1])
        incoming = first_batch(digits_stream.train[1])
        values = values_for(incoming)
        batch = strategy.prepare_batch(ctx, incoming, values)
        logits = ctx.forward(batch).detach().requires_grad_()
        strategy.batch_loss(ctx, batch, ModelOutput(logits), values).backward()
        grads[name] = logits.grad
    old = [0, 1]
    assert grads["er_ace"][:32, old].abs().max() == 0        # incoming rows leave old classes alone
    assert grads["er_ace"][32:, old].abs().max() > 0         # replayed rows still train them
    assert grads["er"][:32, old].abs().max() > 0             # plain ER pushes old classes down


def test_agem_projection_never_opposes_the_reference_gradient(digits_stream):
    strategy = STRATEGIES.create("agem", replay_batch_size=64)
    seen = {"steps": 0, "dots": []}
    sample, before = strategy.buffer.sample, strategy.before_step

    def recording_sample(n):
        seen["memory"] = sample(n)
        return seen["memory"]

    def checked_before_step(ctx, batch, values):
        seen["memory"] = {}
        params = list(ctx.model.parameters())
        incoming = [p.grad.clone() for p in params]
        before(ctx, batch, values)
        if not seen["memory"]:
            return
        m = seen["memory"]
        loss = F.cross_entropy(ctx.forward(Batch(inputs=m["inputs"], targets=m["targets"], task_ids=m["task_ids"])),
                               m["targets"])
        ref = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        g = torch.cat([p.grad.flatten() for p in params])
        g0 = torch.cat([x.flatten() for x in incoming])
        assert float(g @ ref) >= -1e-5 * float(g.norm() * ref.norm())
        if float(g0 @ ref) >= 0:
            assert torch.equal(g, g0)              # no conflict: the gradient is left exactly as it was
        seen["dots"].append(float(g0 @ ref))
        seen["steps"] += 1

    strategy.before_step = checked_before_step
    ctx = context(digits_stream)
    strategy.setup(ctx)
    strategy.buffer.sample = recording_sample   # after setup, which rebuilds the buffer from the seed
    for k in [0, 1, 2]:
        ctx.step = k
        train_step(ctx, strategy, ctx.stream.train[k])
    assert seen["steps"] == sum(-(-len(digits_stream.train[k]) // 32) for k in (1, 2))  # none during exp 0
    conflicts = sum(d < 0 for d in seen["dots"])
    assert conflicts > 0 and int(strategy.projected_steps) == conflicts


@pytest.mark.parametrize("name", ["er", "der", "derpp", "er_ace"])
def test_replay_forgets_less_than_naive_in_class_il(name, digits_stream):
    def final(n):
        _, model, _ = fit(n, digits_stream, epochs=5, settings={} if n == "naive" else {"buffer_size": 200})
        return evaluate_stream(model, digits_stream).accuracy("class")
    naive, replay = final("naive"), final(name)
    assert naive[:-1].max() < 0.1
    assert replay[:-1].mean() > 0.3 and replay.mean() > naive.mean() + 0.2


def test_agem_forgets_less_than_naive_in_task_il(digits):
    stream = task_incremental(digits, 5)
    accs = {}
    for name in ("naive", "agem"):
        _, model, _ = fit(name, stream, epochs=1)
        accs[name] = evaluate_stream(model, stream).accuracy("task")[:-1].mean()
    assert accs["agem"] > accs["naive"] + 0.05


@pytest.mark.parametrize("name", REPLAY)
def test_resuming_from_saved_state_is_exact(name, digits, tmp_path):
    stream = online(class_incremental(digits, 5), 16)
    _, reference, _ = fit(name, stream, steps=3)
    strategy, model, ctx = fit(name, stream, steps=2)
    save_state(tmp_path / "s.safetensors", {"strategy": strategy.state_dict(), "model": model.state_dict(),
                                            "optimizer": ctx.optimizer.state_dict()})
    saved = load_state(tmp_path / "s.safetensors")
    resumed = STRATEGIES.create(name)
    ctx2 = context(stream, seed=0)
    resumed.setup(ctx2)
    ctx2.model.load_state_dict(saved["model"])
    ctx2.optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["strategy"])
    ctx2.step = 2
    train_step(ctx2, resumed, stream.train[2])
    for p, q in zip(reference.parameters(), ctx2.model.parameters()):
        assert torch.equal(p, q)
