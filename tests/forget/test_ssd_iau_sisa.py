"""Behaviour tests of SSD, IAU and SISA (and the diagonal Fisher they share) on digits.
Importing their modules registers "ssd", "iau" and "sisa"."""
import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from palimpsest.core.errors import ConfigError, SpecError
from palimpsest.forget import ForgetRequest, LeakageError, UnlearnContext, UnlearningData, resolve
from palimpsest.train.importance import diagonal_fisher
from palimpsest.forget.iau import IAU, gradient_restriction_loss
from palimpsest.forget.sisa import SISA, SISAEnsemble, slice_epochs, train_sisa
from palimpsest.forget.ssd import CACHE_KEY, SSD, cache_key, full_data_importance
from palimpsest.learn import TrainingConfig
from palimpsest.models import create_model

from .conftest import accuracy, class_forget_accuracies, make_model, unlearning_setup

CLASS_3 = ForgetRequest(kind="classes", classes=[3])


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- diagonal Fisher ---------------------------------------------------------------------------

def test_batch_fisher_matches_a_plain_loop_over_batches(trained_digits, digits_tensors):
    x, y = digits_tensors[0][:150], digits_tensors[1][:150]
    fisher = diagonal_fisher(trained_digits, x, y, batch_size=64, estimator="batch")
    expected = {n: torch.zeros_like(p) for n, p in trained_digits.named_parameters()}
    model = copy.deepcopy(trained_digits).eval()
    batches = 0
    for start in range(0, 150, 64):  # 64, 64, 22: the short batch counts as one
        model.zero_grad()
        F.cross_entropy(model(x[start:start + 64]), y[start:start + 64]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad ** 2
        batches += 1
    assert batches == 3 and fisher.batch_size == 64 and fisher.n_examples == 150
    for n, value in expected.items():
        torch.testing.assert_close(fisher[n], value / 3, rtol=1e-5, atol=1e-12)


def test_example_fisher_matches_per_example_gradients(trained_digits, digits_tensors):
    x, y = digits_tensors[0][:20], digits_tensors[1][:20]
    fisher = diagonal_fisher(trained_digits, x, y, batch_size=8, estimator="example")
    model = copy.deepcopy(trained_digits).eval()
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(20):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad ** 2 / 20
    for n, value in expected.items():
        torch.testing.assert_close(fisher[n], value, rtol=1e-4, atol=1e-10)


def test_by_class_order_groups_the_batches_by_label(trained_digits, digits_tensors):
    x, y = digits_tensors[0][:200], digits_tensors[1][:200]
    grouped = torch.argsort(y, stable=True)
    by_class = diagonal_fisher(trained_digits, x, y, 32, order="by_class")
    assert by_class.order == "by_class"
    same = diagonal_fisher(trained_digits, x[grouped], y[grouped], 32)
    for n in same:
        torch.testing.assert_close(by_class[n], same[n])


def test_fisher_restores_the_training_mode_and_leaves_grads_alone(trained_digits, digits_tensors):
    model = copy.deepcopy(trained_digits).train()
    diagonal_fisher(model, digits_tensors[0][:64], digits_tensors[1][:64])
    assert model.training and all(p.grad is None for p in model.parameters())


# -- SSD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dampening", [1.0, 20.0])  # with lambda > alpha the min(., 1) bound is active
def test_ssd_dampens_only_selected_parameters_and_never_increases_them(dampening, digits, digits_tensors,
                                                                       trained_digits):
    split, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SSD.reads)
    x, y = digits_tensors[0], digits_tensors[1]
    forget = torch.as_tensor(split.forget)
    full = diagonal_fisher(trained_digits, x, y, 64)  # SSD's default: the stored order
    forget_importance = diagonal_fisher(trained_digits, x[forget], y[forget], 64)
    before = _params(trained_digits)
    ssd = SSD(dampening=dampening, target_forget_accuracy=None)  # the paper's fixed alpha
    out = ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    n_selected, n_kept = 0, 0
    for name, p in out.named_parameters():
        chosen = forget_importance[name] > 10 * full[name]
        n_selected += int(chosen.sum())
        assert torch.equal(p[~chosen], before[name][~chosen]), name  # bit-identical
        beta = (dampening * full[name][chosen] / forget_importance[name][chosen]).clamp(max=1)
        torch.testing.assert_close(p[chosen], before[name][chosen] * beta)
        n_kept += int((beta == 1).sum())
        assert (p.abs() <= before[name].abs()).all()
    assert (n_kept > 0) == (dampening > 10)
    assert 0 < n_selected == ssd.last_report["dampened"] < sum(p.numel() for p in before.values())


def test_ssd_with_infinite_alpha_leaves_the_model_unchanged(digits, digits_tensors, trained_digits):
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SSD.reads)
    out = SSD(alpha=float("inf"), target_forget_accuracy=None).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    for p, q in zip(out.parameters(), trained_digits.parameters()):
        assert torch.equal(p, q)


def test_ssd_forgets_the_class_and_keeps_the_others(digits, digits_tensors, trained_digits):
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SSD.reads)
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    for ssd in (SSD(), SSD(target_forget_accuracy=None)):  # the default alpha search; the paper's alpha = 10
        out = ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model
        after = class_forget_accuracies(out, digits, digits_tensors, 3)
        assert before["forget"] > 0.95 and after["forget"] <= 0.05 and after["test_forget_class"] <= 0.05
        assert after["test_other"] >= before["test_other"] - 0.06
    assert SSD().search_target(data) == 0.01 and SSD(target_forget_accuracy=None).search_target(data) is None
    # a larger alpha dampens fewer parameters and keeps the other classes better
    gentle = SSD(alpha=20, target_forget_accuracy=None).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert class_forget_accuracies(gentle, digits, digits_tensors, 3)["test_other"] >= after["test_other"]


def test_ssd_searches_alpha_only_for_whole_classes(digits, digits_tensors, trained_digits):
    request = ForgetRequest(kind="random", fraction=0.1)
    _, data, ctx = unlearning_setup(digits, digits_tensors, request, SSD.reads)
    ssd = SSD()
    ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert ssd.last_report["searched"] == [] and ssd.last_report["alpha"] == 10.0
    assert ssd.last_report["target_forget_accuracy"] is None
    forced = SSD(target_forget_accuracy=0.5)
    forced.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert forced.last_report["searched"] and forced.last_report["target_forget_accuracy"] == 0.5
    with pytest.raises(SpecError, match="target_forget_accuracy"):
        SSD(target_forget_accuracy=1.5)


def test_ssd_alpha_search_keeps_the_weakest_dampening_that_reaches_the_target(digits, digits_tensors,
                                                                              trained_digits):
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SSD.reads)
    ssd = SSD(search_alpha=80, target_forget_accuracy=0.05)
    out = ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    tried = ssd.last_report["searched"]
    assert [t["alpha"] for t in tried] == [80 / 2 ** k for k in range(len(tried))] and len(tried) > 1
    assert all(t["forget_accuracy"] > 0.05 for t in tried[:-1]) and tried[-1]["forget_accuracy"] <= 0.05
    assert class_forget_accuracies(out, digits, digits_tensors, 3)["forget"] <= 0.05
    # the same as plain SSD with the alpha it settled on (earlier tries are fully undone)
    used = ssd.last_report["alpha"]
    plain = SSD(alpha=used, dampening=min(1.0, used)).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    for p, q in zip(out.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_ssd_with_cached_importance_never_reads_the_training_set(digits, digits_tensors, trained_digits):
    x, y = digits_tensors[0], digits_tensors[1]
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, {"forget"})
    with pytest.raises(LeakageError):  # the guard is live: without the cache SSD must read train
        SSD().unlearn(copy.deepcopy(trained_digits), data, ctx).model
    ctx.cache[CACHE_KEY] = full_data_importance(trained_digits, x, y)
    ssd = SSD()
    cached = ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert ssd.last_report["used_cached_full_importance"]
    _, full_data, full_ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SSD.reads)
    uncached = SSD().unlearn(copy.deepcopy(trained_digits), full_data, full_ctx).model
    for p, q in zip(cached.parameters(), uncached.parameters()):
        assert torch.equal(p, q)


def test_ssd_rejects_a_cache_measured_differently(digits, digits_tensors, trained_digits):
    x, y = digits_tensors[0], digits_tensors[1]
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, {"forget"})
    ctx.cache[CACHE_KEY] = full_data_importance(trained_digits, x, y, batch_size=32)
    with pytest.raises(ConfigError, match="batch_size"):
        SSD().unlearn(copy.deepcopy(trained_digits), data, ctx).model
    ctx.cache[CACHE_KEY] = full_data_importance(trained_digits, x, y, order="by_class")
    with pytest.raises(ConfigError, match="order"):
        SSD().unlearn(copy.deepcopy(trained_digits), data, ctx).model
    ctx.cache[CACHE_KEY] = dict(full_data_importance(trained_digits, x, y, batch_size=32).values)
    with pytest.raises(ConfigError, match="does not say how it was measured"):
        SSD().unlearn(copy.deepcopy(trained_digits), data, ctx).model
    del ctx.cache[CACHE_KEY]
    ctx.cache[cache_key("batch", 64, "stored")] = {"head.weight": torch.zeros(3)}
    with pytest.raises(ConfigError, match="does not belong to this model"):
        SSD().unlearn(copy.deepcopy(trained_digits), data, ctx).model


def test_ssd_artifacts_are_kept_per_setting(digits, digits_tensors, trained_digits):
    x, y = digits_tensors[0], digits_tensors[1]
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, {"forget"})
    for settings in ({}, {"batch_size": 32}, {"full_data_order": "by_class"}):
        ssd = SSD(**settings)
        ctx.cache.update(ssd.artifacts(trained_digits, x, y, ctx))
    assert len(ctx.cache) == 3
    for settings in ({}, {"batch_size": 32}, {"full_data_order": "by_class"}):
        ssd = SSD(**settings)
        ssd.unlearn(copy.deepcopy(trained_digits), data, ctx).model  # reads only the forget set
        assert ssd.last_report["used_cached_full_importance"]


# -- IAU ---------------------------------------------------------------------------------------

def test_iau_lowers_forget_accuracy_and_keeps_test_accuracy(digits, digits_tensors, trained_digits):
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, IAU.reads)
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    out = IAU(lr=1e-2, steps=3).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    after = class_forget_accuracies(out, digits, digits_tensors, 3)
    assert after["forget"] <= before["forget"] - 0.5
    assert after["test_other"] >= before["test_other"] - 0.05
    # without the retain-set correction (pure ascent) the same step forgets less selectively
    ascent = IAU(lr=1e-2, steps=3, retain_weight=0).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert class_forget_accuracies(ascent, digits, digits_tensors, 3)["retain"] < after["retain"]


def test_iau_step_is_descent_on_retain_and_ascent_on_forget(digits, digits_tensors, trained_digits):
    split, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, IAU.reads)
    x, y = digits_tensors[0], digits_tensors[1]
    f, r = torch.as_tensor(split.forget), torch.as_tensor(split.retain)
    model = copy.deepcopy(trained_digits)
    loss = F.cross_entropy(model(x[r]), y[r]) - F.cross_entropy(model(x[f]), y[f])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    out = IAU(optimizer="sgd", lr=0.5).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    for p, q, g in zip(out.parameters(), trained_digits.parameters(), grads):
        torch.testing.assert_close(p, q - 0.5 * g, rtol=1e-4, atol=1e-6)


def test_gradient_restriction_loss_adds_the_gradient_norms(trained_digits, digits_tensors):
    model = copy.deepcopy(trained_digits)
    x, y = digits_tensors[0][:64], digits_tensors[1][:64]
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    norms = sum(torch.linalg.vector_norm(g) for g in torch.autograd.grad(ce, list(model.parameters()),
                                                                          retain_graph=True))
    total = gradient_restriction_loss(model, alpha=0.1)(logits, y)
    torch.testing.assert_close(total, ce + 0.1 * norms)
    total.backward()  # double back-propagation works
    assert all(p.grad is not None for p in model.parameters())


# -- SISA --------------------------------------------------------------------------------------

SMALL = TrainingConfig(epochs=4, batch_size=32, lr=0.05, momentum=0.9)  # slice steps of 2 epochs each (R=3)


@pytest.fixture(scope="module")
def sisa_digits(digits, digits_tensors):
    x, y = digits_tensors[0], digits_tensors[1]
    return train_sisa(make_model(digits), x, y, shards=3, slices=3, training=SMALL, seed=0)


def test_slice_schedule_follows_bourtoule():
    assert slice_epochs(20, 1) == [20]
    assert slice_epochs(4, 3) == [2, 2, 2]
    assert sum(slice_epochs(20, 4)) == int(2 * 20 * 4 / 5)
    assert slice_epochs(1, 4) == [0, 0, 1, 0]


def test_sisa_ensemble_predicts_well_and_aggregates(sisa_digits, digits_tensors):
    xt, yt = digits_tensors[2], digits_tensors[3]
    with torch.no_grad():
        logits = sisa_digits(xt)
    assert torch.isfinite(logits).all()
    assert accuracy(sisa_digits, xt, yt) > 0.85
    # vote: the winning class has the most constituent votes
    with torch.no_grad():
        votes = sisa_digits.constituent_probs(xt).argmax(-1)
    counts = F.one_hot(votes, 10).sum(0)
    assert (counts.gather(1, logits.argmax(1, keepdim=True)).squeeze(1) == counts.max(1).values).all()
    soft = copy.deepcopy(sisa_digits)
    soft.aggregation = "mean_softmax"
    with torch.no_grad():
        torch.testing.assert_close(soft(xt).exp(), sisa_digits.constituent_probs(xt).mean(0))
    assert sisa_digits.checkpoint_bytes() > 0 and len(sisa_digits.checkpoints[0]) == 3


def test_sisa_deletion_retrains_only_affected_shards_and_is_exact(sisa_digits, digits, digits_tensors):
    x, y = digits_tensors[0], digits_tensors[1]
    ensemble = copy.deepcopy(sisa_digits)
    before = [copy.deepcopy(m.state_dict()) for m in ensemble.constituents]
    doomed = np.concatenate([ensemble.partition[1][1][:5], ensemble.partition[1][2][:3]])
    request = ForgetRequest(kind="indices", indices=doomed.tolist())
    split = resolve(request, digits.y_train, digits.n_classes)
    data = UnlearningData(x, y, split, SISA.reads, digits.n_classes)
    sisa = SISA()
    out = sisa.unlearn(ensemble, data, UnlearnContext(SMALL, make_model(digits), seed=0)).model
    assert out is ensemble and sisa.last_report["shards_retrained"] == [1]
    assert sisa.last_report["slice_steps_retrained"] == 2  # slices 1 and 2 of shard 1, not slice 0
    for k in (0, 2):
        for key, value in out.constituents[k].state_dict().items():
            assert torch.equal(value, before[k][key])
    assert not any(torch.equal(v, before[1][k]) for k, v in out.constituents[1].state_dict().items()
                   if v.is_floating_point())
    # exactness: the same as training that shard from scratch without the deleted points
    reduced = [[np.setdiff1d(s, doomed) for s in shard] for shard in sisa_digits.partition]
    scratch = train_sisa(make_model(digits), x, y, training=SMALL, seed=0, partition=reduced)
    for key, value in out.constituents[1].state_dict().items():
        assert torch.equal(value, scratch.constituents[1].state_dict()[key])
    # deleting the same points again is a no-op
    again = sisa.unlearn(out, data, UnlearnContext(SMALL, make_model(digits), seed=0)).model
    assert sisa.last_report["examples_deleted"] == 0 and sisa.last_report["shards_retrained"] == []
    assert again is out


def test_sisa_on_a_plain_model_builds_an_ensemble_without_the_forget_set(digits, digits_tensors, trained_digits):
    split, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, SISA.reads)
    sisa = SISA(shards=2, slices=2)
    out = sisa.unlearn(copy.deepcopy(trained_digits), data, ctx).model
    assert isinstance(out, SISAEnsemble) and sisa.last_report["built"]
    held = np.concatenate([s for shard in out.partition for s in shard])
    assert np.array_equal(np.sort(held), split.retain)
    assert class_forget_accuracies(out, digits, digits_tensors, 3)["forget"] == 0.0
    with pytest.raises(ConfigError, match="train_sisa"):
        SISA(build_if_plain=False).unlearn(copy.deepcopy(trained_digits), data, ctx).model


def test_sisa_deletion_is_exact_with_dropout(digits, digits_tensors):
    # dropout draws from the global RNG: each slice step is seeded, so a resumed shard matches
    x, y = digits_tensors[0], digits_tensors[1]

    def make():
        m = create_model("mlp", digits.input_shape, digits.n_classes, hidden=(32,), dropout=0.3)
        m.observe_classes(range(digits.n_classes))
        return m

    small = TrainingConfig(epochs=2, batch_size=64, lr=0.05)
    ensemble = train_sisa(make, x, y, shards=2, slices=2, training=small, seed=0)
    doomed = ensemble.partition[0][1][:4]
    split = resolve(ForgetRequest(kind="indices", indices=doomed.tolist()), digits.y_train, digits.n_classes)
    out = SISA().unlearn(ensemble, UnlearningData(x, y, split, SISA.reads, digits.n_classes),
                         UnlearnContext(small, make, seed=0)).model
    reduced = [[np.setdiff1d(s, doomed) for s in shard] for shard in out.partition]
    scratch = train_sisa(make, x, y, training=small, seed=0, partition=reduced)
    for key, value in out.constituents[0].state_dict().items():
        assert torch.equal(value, scratch.constituents[0].state_dict()[key])
