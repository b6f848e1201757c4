"""Behaviour of LwF, iCaRL and GDumb on digits: assertions that fail if a method is wrong."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import palimpsest.learn.gdumb  # registers gdumb, icarl and lwf (until learn/__init__ imports them)
import palimpsest.learn.icarl
import palimpsest.learn.lwf  # noqa: F401
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental, domain_incremental, task_incremental
from palimpsest.data.scenarios import Experience
from palimpsest.evaluate import evaluate_stream
from palimpsest.learn import Batch, TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.learn.strategy import Strategy
from palimpsest.models import MASKED_LOGIT, Classifier, create_model

from .test_conformance import fit


def start(name, stream, head="single", settings=None, epochs=1, seed=0):
    torch.manual_seed(seed)
    strategy = STRATEGIES.create(name, **(settings or {}))
    strategy.check_stream(stream)
    model = create_model("mlp", stream=stream, head=head, hidden=(16,))
    cfg = TrainingConfig(epochs=epochs, batch_size=32, lr=0.05)
    ctx = TrainContext(model, make_optimizer(model.parameters(), cfg), stream, cfg, torch.device("cpu"), seed)
    strategy.setup(ctx)
    return strategy, model, ctx


def learn(ctx, strategy, steps):
    for k in steps:
        ctx.step = k
        train_step(ctx, strategy, ctx.stream.train[k])


def first_batch(exp, n=64):
    return Batch(inputs=exp.inputs[:n], targets=exp.targets[:n], task_ids=exp.task_ids[:n])


def shared_labels(stream):
    """Task-IL with the labels 0 and 1 in every task (heads that share class ids need task ids)."""
    relabel = lambda e: Experience.from_tensors(e.inputs, e.targets - e.classes[0], e.task_id, (0, 1), e.indices, e.split)
    return dataclasses.replace(stream, train=tuple(map(relabel, stream.train)), test=tuple(map(relabel, stream.test)),
                               n_classes=2)


# ------------------------------------------------------------------------------------------ LwF
@pytest.mark.parametrize("scenario,head", [("class", "single"), ("task", "single"), ("task", "multi"),
                                           ("task-shared-labels", "multi")])
def test_lwf_distillation_is_zero_at_the_snapshot_and_positive_after_a_change(digits, scenario, head):
    stream = class_incremental(digits, 5) if scenario == "class" else task_incremental(digits, 5)
    if scenario == "task-shared-labels":
        stream = shared_labels(stream)
    strategy, model, ctx = start("lwf", stream, head)
    learn(ctx, strategy, [0])
    exp = stream.train[1]
    ctx.step = 1
    model.observe_classes(exp.classes)
    strategy.before_experience(ctx, exp)
    # what the snapshot knew: the classes of experience 0, one softmax per old task in task-IL
    assert [g.tolist() for g in strategy._groups] == [[0, 1]]
    assert model.needs_task_ids == (scenario == "task-shared-labels")
    batch = first_batch(exp)
    _, kd = strategy.distillation(ctx, batch, ctx.forward(batch))
    assert kd.item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    logits, kd = strategy.distillation(ctx, batch, ctx.forward(batch))
    assert kd.item() > 1e-4
    assert torch.equal(logits, ctx.forward(batch))   # the cross-entropy sees the model's own logits
    kd.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_lwf_forgets_less_than_naive_in_task_il(digits):
    stream = task_incremental(digits, 5)
    _, naive, _ = fit("naive", stream, epochs=5)
    _, lwf, _ = fit("lwf", stream, epochs=5)
    old_naive = evaluate_stream(naive, stream).accuracy("task")[:-1].mean()
    old_lwf = evaluate_stream(lwf, stream).accuracy("task")[:-1].mean()
    assert old_lwf > old_naive + 0.03


def test_lwf_resumes_exactly_from_its_state(digits):
    stream = task_incremental(digits, 5)
    strategy, model, ctx = start("lwf", stream, "multi")
    learn(ctx, strategy, [0, 1, 2])
    reference = [p.detach().clone() for p in model.parameters()]

    strategy, model, ctx = start("lwf", stream, "multi")
    learn(ctx, strategy, [0, 1])
    state, weights, opt = strategy.state_dict(), model.state_dict(), ctx.optimizer.state_dict()
    resumed, model2, ctx2 = start("lwf", stream, "multi")
    model2.load_state_dict(weights)
    ctx2.optimizer.load_state_dict(opt)
    resumed.load_state_dict(state)
    assert resumed.known_tasks == [0, 1]
    learn(ctx2, resumed, [2])
    assert all(torch.equal(p, q) for p, q in zip(reference, model2.parameters()))


# ---------------------------------------------------------------------------------------- iCaRL
def test_icarl_memory_is_class_balanced_within_budget(digits):
    stream = class_incremental(digits, 5)
    strategy, _, _ = fit("icarl", stream, settings={"memory_size": 50}, steps=3)
    assert strategy.memory.class_counts() == {c: 50 // 6 for c in range(6)}
    strategy, _, _ = fit("icarl", stream, settings={"memory_size": 50})
    assert strategy.memory.class_counts() == {c: 5 for c in range(10)}
    assert bool(strategy.has_mean.all()) and strategy.means.shape == (10, 16)


def test_icarl_nearest_mean_classifier_uses_exemplar_means():
    # identity features in 2-d: class 0's exemplars point along (1, 0) and (1, 1), class 1's along (0, 1)
    model = Classifier(nn.Flatten(), 2, 3)
    model.observe_classes([0, 1])
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        model.head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))   # the head alone always says class 1
    icarl = STRATEGIES.create("icarl", memory_size=4)
    x = torch.tensor([[2.0, 0.0], [3.0, 3.0], [0.0, 1.0], [0.0, 4.0]])
    icarl.memory.select_class_balanced(x, torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.long), "random")
    icarl.update_means(model, 3)
    mu0 = torch.tensor([1 + 2 ** -0.5, 2 ** -0.5])
    mu0 = mu0 / mu0.norm()
    assert torch.allclose(icarl.means[0], mu0) and torch.allclose(icarl.means[1], torch.tensor([0.0, 1.0]))
    assert icarl.has_mean.tolist() == [True, True, False]
    nme = icarl.eval_model(model)
    queries = torch.tensor([[5.0, 1.0], [1.0, 5.0], [-1.0, 0.0]])
    logits = nme(queries)
    f = queries / queries.norm(dim=1, keepdim=True)
    assert torch.allclose(logits[:, 0], -(f - mu0).pow(2).sum(1), atol=1e-6)
    assert torch.allclose(logits[:, 1], -(f - torch.tensor([0.0, 1.0])).pow(2).sum(1), atol=1e-6)
    assert (logits[:, 2] == MASKED_LOGIT).all()
    assert logits.argmax(1).tolist() == [0, 1, 1] and model(queries).argmax(1).tolist() == [1, 1, 1]
    assert STRATEGIES.create("icarl", classifier="head").eval_model(model) is model


def test_icarl_distils_old_classes_and_trains_on_exemplars(digits):
    stream = class_incremental(digits, 5)
    strategy, model, ctx = start("icarl", stream, settings={"memory_size": 40})
    learn(ctx, strategy, [0])
    exp = stream.train[1]
    model.observe_classes(exp.classes)
    strategy.before_experience(ctx, exp)
    assert strategy._distilled.nonzero().flatten().tolist() == [0, 1]
    data = strategy.training_data(ctx, exp)
    assert len(data) == len(exp) + 40 and set(data.targets[len(exp):].tolist()) == {0, 1}
    # binary cross-entropy over the 4 seen classes; old classes' targets are the snapshot's sigmoids
    batch = Batch(inputs=data.inputs[-50:], targets=data.targets[-50:], task_ids=data.task_ids[-50:])
    output = ctx.output(batch)
    logits = output.logits
    with torch.no_grad():
        old = torch.sigmoid(strategy.snapshot.model(batch.inputs))
    targets = torch.cat([old[:, :2], torch.nn.functional.one_hot(batch.targets, 10)[:, 2:4].float()], 1)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :4], targets)
    assert torch.allclose(strategy.batch_loss(ctx, batch, output, {"incoming": batch.rows}), expected)


def test_icarl_beats_naive_in_class_il(digits):
    stream = class_incremental(digits, 5)
    _, naive, _ = fit("naive", stream, epochs=5)
    icarl, model, _ = fit("icarl", stream, settings={"memory_size": 100}, epochs=5)
    acc_naive = evaluate_stream(naive, stream).accuracy("class").mean()
    acc_icarl = evaluate_stream(icarl.eval_model(model), stream).accuracy("class").mean()
    assert acc_icarl > acc_naive + 0.3


# ---------------------------------------------------------------------------------------- GDumb
def test_gdumb_trains_on_its_memory_only(digits):
    stream = class_incremental(digits, 5)
    strategy, model, ctx = start("gdumb", stream, settings={"memory_size": 30}, epochs=3)
    learn(ctx, strategy, [0])
    exp = stream.train[0]
    assert len(strategy.training_data(ctx, exp)) == 30
    kept = strategy.memory.all()["inputs"].flatten(1)
    in_memory = (exp.inputs.flatten(1)[:, None] == kept[None]).all(-1).any(1)
    assert int(in_memory.sum()) >= 30 and int((~in_memory).sum()) > 100
    # replace every example the memory did not keep by noise: the trained model does not change
    noisy = exp.inputs.clone()
    noisy[~in_memory] = torch.randn_like(noisy[~in_memory]) * 5
    other = dataclasses.replace(stream, train=(Experience.from_tensors(noisy, exp.targets, exp.task_id, exp.classes,
                                                                       exp.indices),
                                               *stream.train[1:]))
    strategy2, model2, ctx2 = start("gdumb", other, settings={"memory_size": 30}, epochs=3)
    learn(ctx2, strategy2, [0])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))


def test_gdumb_retrains_from_scratch_whatever_the_weights_before(digits):
    stream = class_incremental(digits, 5)
    strategy, model, ctx = start("gdumb", stream, settings={"memory_size": 40})
    learn(ctx, strategy, [0, 1, 2])
    reference = [p.detach().clone() for p in model.parameters()]
    strategy, model, ctx = start("gdumb", stream, settings={"memory_size": 40})
    learn(ctx, strategy, [0, 1])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    learn(ctx, strategy, [2])
    assert all(torch.equal(p, q) for p, q in zip(reference, model.parameters()))
    assert model.active.nonzero().flatten().tolist() == list(range(6))


def test_gdumb_memory_is_balanced_over_classes_and_domains(digits):
    stream = class_incremental(digits, 5)
    strategy, _, _ = fit("gdumb", stream, settings={"memory_size": 50})
    counts = torch.bincount(strategy.memory.all()["targets"] % 10, minlength=10)
    assert counts.tolist() == [5] * 10
    stream = domain_incremental(digits, 3)
    strategy, _, ctx = fit("gdumb", stream, settings={"memory_size": 60})
    memory = strategy.training_data(ctx, stream.train[-1])
    assert torch.bincount(memory.task_ids, minlength=3).tolist() == [60, 0, 0]   # the paper's sampler
    strategy, _, ctx = fit("gdumb", stream, settings={"memory_size": 60, "balance": "task_class"})
    memory = strategy.training_data(ctx, stream.train[-1])
    assert torch.bincount(memory.task_ids, minlength=3).tolist() == [20, 20, 20]
    assert torch.bincount(memory.targets, minlength=10).tolist() == [6] * 10
    assert np.all(memory.indices == -1)


def test_gdumb_sets_its_own_epochs_and_batch_size(digits):
    stream = class_incremental(digits, 5)
    _, _, ctx = start("gdumb", stream, epochs=2)
    assert STRATEGIES.create("gdumb").passes(ctx) == (2, 32)
    assert STRATEGIES.create("gdumb", epochs=30, batch_size=16).passes(ctx) == (30, 16)


@pytest.mark.skipif(not hasattr(Strategy, "passes"), reason="the trainer does not ask strategies for their passes yet")
def test_the_trainer_runs_gdumb_passes_over_its_memory(digits):
    stream = class_incremental(digits, 5)
    strategy, _, ctx = start("gdumb", stream, settings={"memory_size": 40, "epochs": 3, "batch_size": 16})
    stats = train_step(ctx, strategy, stream.train[0])
    assert stats.n_batches == 3 * 3 and stats.n_examples == 3 * 40
