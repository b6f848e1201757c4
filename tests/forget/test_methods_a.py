"""Behaviour of the fine-tuning style unlearners on digits (class 3 forgotten, MLP of conftest):
finetune, gradient_ascent, neggrad_plus, random_labels, salun, scrub."""
import copy

import pytest
import torch

# importing the modules registers the unlearners tested here
import palimpsest.forget.finetune
import palimpsest.forget.gradient_ascent
import palimpsest.forget.neggrad_plus
import palimpsest.forget.random_labels
import palimpsest.forget.salun
import palimpsest.forget.scrub  # noqa: F401
from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import UNLEARNERS
from palimpsest.core.seeding import generator
from palimpsest.forget import ForgetRequest, UnlearnContext
from palimpsest.forget.common import paired_batches, random_wrong_labels
from palimpsest.forget.salun import saliency_mask

from .conftest import RECIPE, class_forget_accuracies, unlearning_setup

CLASS_3 = ForgetRequest(kind="classes", classes=[3])

# Settings for digits (146 forget examples, batches of 32: a handful of steps per epoch).
DIGITS_SETTINGS = {
    "neggrad_plus": {"alpha": 0.9, "epochs": 12, "lr": 0.01},
    "random_labels": {"lr": 0.004},
    "salun": {"lr": 0.004},
    "scrub": {"lr": 0.005, "forget_batch_size": 32},
}


def unlearn(name, digits, digits_tensors, trained, request=CLASS_3, reads=None, **settings):
    cls = UNLEARNERS.get(name).obj
    _, data, ctx = unlearning_setup(digits, digits_tensors, request, cls.reads if reads is None else reads)
    torch.manual_seed(0)
    return UNLEARNERS.create(name, **settings).unlearn(copy.deepcopy(trained), data, ctx).model


def forget_loss(model, digits_tensors, cls=3):
    x, y, _, _ = digits_tensors
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x[y == cls]), y[y == cls]))


@pytest.mark.parametrize("name", sorted(DIGITS_SETTINGS))
def test_class_forgetting_drops_the_class_and_keeps_the_others(name, digits, digits_tensors, trained_digits):
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    model = unlearn(name, digits, digits_tensors, trained_digits, **DIGITS_SETTINGS[name])
    after = class_forget_accuracies(model, digits, digits_tensors, 3)
    assert before["forget"] > 0.95 and before["test_forget_class"] > 0.9
    assert after["forget"] < 0.1 and after["test_forget_class"] < 0.1
    assert after["test_other"] > before["test_other"] - 0.03
    assert after["retain"] > before["retain"] - 0.03


def test_gradient_ascent_lowers_forget_accuracy_reading_only_the_forget_set(digits, digits_tensors, trained_digits):
    model = unlearn("gradient_ascent", digits, digits_tensors, trained_digits, reads={"forget"}, lr=0.01, epochs=3)
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    after = class_forget_accuracies(model, digits, digits_tensors, 3)
    assert after["forget"] < before["forget"] - 0.5
    assert forget_loss(model, digits_tensors) > forget_loss(trained_digits, digits_tensors) + 1.0


def test_neggrad_plus_with_alpha_one_does_not_forget_but_lower_alpha_does(digits, digits_tensors, trained_digits):
    # alpha = 1 drops the ascent term: plain fine-tuning on retain batches, which keeps class 3.
    settings = dict(DIGITS_SETTINGS["neggrad_plus"])
    keep = unlearn("neggrad_plus", digits, digits_tensors, trained_digits, **{**settings, "alpha": 1.0})
    drop = unlearn("neggrad_plus", digits, digits_tensors, trained_digits, **settings)
    assert class_forget_accuracies(keep, digits, digits_tensors, 3)["forget"] > 0.9
    assert class_forget_accuracies(drop, digits, digits_tensors, 3)["forget"] < 0.1


def test_finetune_reads_only_the_retain_set(digits, digits_tensors, trained_digits):
    assert UNLEARNERS.get("finetune").obj.declared() == {"retain": "examples"}
    model = unlearn("finetune", digits, digits_tensors, trained_digits, reads={"retain"}, epochs=2)
    after = class_forget_accuracies(model, digits, digits_tensors, 3)
    assert after["retain"] > 0.95   # more of the original recipe on retain data does not break the model


def test_scrub_max_steps_do_the_forgetting(digits, digits_tensors, trained_digits):
    settings = DIGITS_SETTINGS["scrub"]
    without = unlearn("scrub", digits, digits_tensors, trained_digits, **{**settings, "msteps": 0})
    with_max = unlearn("scrub", digits, digits_tensors, trained_digits, **settings)
    assert class_forget_accuracies(without, digits, digits_tensors, 3)["forget"] > 0.9
    assert class_forget_accuracies(with_max, digits, digits_tensors, 3)["forget"] < 0.1


def test_scrub_retain_batches_caps_the_min_steps(digits, digits_tensors, trained_digits):
    # with no max-step and at most one retain batch per epoch the student barely moves
    a = unlearn("scrub", digits, digits_tensors, trained_digits, msteps=0, epochs=1, retain_batches=1, lr=1e-3)
    b = unlearn("scrub", digits, digits_tensors, trained_digits, msteps=0, epochs=1, lr=1e-3)
    moved = lambda m: sum(float((p.detach() - q.detach()).abs().sum()) for p, q in zip(m.parameters(), trained_digits.parameters()))
    assert 0 < moved(a) < moved(b) / 5


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_salun_updates_only_the_salient_weights(weight_decay, digits, digits_tensors, trained_digits):
    cls = UNLEARNERS.get("salun").obj
    _, data, ctx = unlearning_setup(digits, digits_tensors, CLASS_3, cls.reads)
    # weight decay would move every weight if the mask were applied to gradients only
    ctx = UnlearnContext(RECIPE.model_copy(update={"weight_decay": weight_decay}), ctx.make_model, ctx.device, 0)
    mask = saliency_mask(trained_digits, data.forget(), 0.3, ctx.device)
    n_total = sum(m.numel() for m in mask.values())
    assert abs(sum(int(m.sum()) for m in mask.values()) - 0.3 * n_total) <= 1
    model = UNLEARNERS.create("salun", threshold=0.3, lr=0.003).unlearn(copy.deepcopy(trained_digits), data, ctx).model
    changed = 0
    for (name, p), q in zip(model.named_parameters(), trained_digits.parameters()):
        assert torch.equal(p[~mask[name]], q[~mask[name]]), name
        changed += int((p[mask[name]] != q[mask[name]]).sum())
    assert changed > 0.5 * 0.3 * n_total


def test_saliency_mask_follows_the_forget_gradient(digits, digits_tensors, trained_digits):
    # head rows of classes other than 3 get small gradients from class-3 examples; row 3 gets large ones
    cls = UNLEARNERS.get("salun").obj
    _, data, _ = unlearning_setup(digits, digits_tensors, CLASS_3, cls.reads)
    mask = saliency_mask(trained_digits, data.forget(), 0.05, torch.device("cpu"))
    head = mask["head.weight"].float().mean(1)
    assert head[3] > 0.5 and head[3] >= head.max()


def test_random_wrong_labels_are_never_the_true_label():
    gen = generator(0, "test")
    targets = torch.arange(10).repeat(2000)
    classes = torch.arange(10)
    wrong = random_wrong_labels(targets, classes, gen)
    assert not (wrong == targets).any()
    assert set(wrong.tolist()) == set(range(10))
    counts = torch.bincount(wrong[targets == 0], minlength=10)[1:].float()
    assert counts.min() > 0.8 * counts.mean()          # uniform over the nine other classes
    some = random_wrong_labels(torch.tensor([1, 2, 7] * 100), torch.tensor([1, 2, 5]), gen)
    assert set(some.tolist()) <= {1, 2, 5} and not (some[::3] == 1).any() and not (some[1::3] == 2).any()
    with pytest.raises(ConfigError, match="at least two classes"):
        random_wrong_labels(targets, torch.tensor([4]), gen)


def test_random_labels_never_trains_on_the_true_label(digits, digits_tensors, trained_digits, monkeypatch):
    from palimpsest.forget import common
    seen = []
    original = common.random_wrong_labels
    monkeypatch.setattr(common, "random_wrong_labels", lambda t, c, g: seen.append((t, r := original(t, c, g))) or r)
    unlearn("random_labels", digits, digits_tensors, trained_digits, retain_ratio=0)
    (targets, labels), = seen
    assert (targets == 3).all() and not (labels == 3).any() and len(labels) == 146


def test_random_labels_without_retain_reads_only_forget(digits, digits_tensors, trained_digits):
    model = unlearn("random_labels", digits, digits_tensors, trained_digits, reads={"forget"}, retain_ratio=0)
    assert class_forget_accuracies(model, digits, digits_tensors, 3)["forget"] < 0.1


def test_paired_batches_cover_the_forget_set_each_epoch_and_cycle_the_retain_set():
    steps = list(paired_batches(10, 25, 4, 4, 3, generator(0, "pairs")))
    assert len(steps) == 9   # ceil(10 / 4) steps per epoch
    for epoch in range(3):
        forget = torch.cat([f for f, _ in steps[3 * epoch:3 * epoch + 3]])
        assert sorted(forget.tolist()) == list(range(10))
    retain = torch.cat([r for _, r in steps])
    assert sorted(retain[:25].tolist()) == list(range(25))   # a full pass before any repeat
    assert all(r is None for _, r in paired_batches(5, None, 2, 2, 1, generator(0, "x")))



def test_union_batches_walk_forget_and_retain_as_one_shuffled_set():
    from palimpsest.forget.common import union_batches
    gen = torch.Generator().manual_seed(0)
    steps = list(union_batches(10, 30, 8, epochs=2, gen=gen))
    assert len(steps) == 2 * 5  # ceil(40 / 8) batches per pass over the union
    assert all(len(f) + len(r) == 8 for f, r in steps)
    for epoch in (steps[:5], steps[5:]):  # every example exactly once per epoch
        assert sorted(torch.cat([f for f, _ in epoch]).tolist()) == list(range(10))
        assert sorted(torch.cat([r for _, r in epoch]).tolist()) == list(range(30))


def test_random_labels_with_the_union_loader_forgets(digits, digits_tensors, trained_digits):
    model = unlearn("random_labels", digits, digits_tensors, trained_digits, retain_ratio=None, epochs=1)
    assert class_forget_accuracies(model, digits, digits_tensors, 3)["forget"] <= 0.2
