"""Weight Aligning ("Maintaining Discrimination and Fairness in Class Incremental Learning", CVPR
2020): new classes' weight rows are scaled to the old classes' mean norm after each experience, and
with imbalanced exemplar replay the bias towards the newest classes shrinks."""
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import task_incremental
from palimpsest.learn import Composite
from palimpsest.learn.wa import align_weights
from palimpsest.models import create_model

from .test_refresh import context, run
from .test_uer import evaluate


def test_align_weights_equalises_mean_norms():
    w = torch.tensor([[3.0, 4.0], [0.0, 5.0], [0.0, 20.0], [12.0, 16.0]])
    gamma = align_weights(w, [0, 1], [2, 3])
    assert gamma == pytest.approx(5.0 / 20.0)
    assert w[2:].norm(dim=1).mean().item() == pytest.approx(w[:2].norm(dim=1).mean().item())
    assert align_weights(w, [], [2, 3]) == 1.0


def test_wa_aligns_after_each_experience_and_keeps_weights_positive(digits_stream):
    wa = STRATEGIES.create("wa")
    ctx = run(wa, digits_stream, [0, 1, 2])
    weight = ctx.model.head.weight.detach()
    assert weight.min() >= 0
    norms = weight.norm(dim=1)
    assert wa.seen == list(range(6)) and wa.gammas[0] == 1.0 and wa.gammas[1] != 1.0
    # right after the last alignment the newest classes' mean norm equals the older classes'
    assert norms[4:6].mean().item() == pytest.approx(norms[:4].mean().item(), rel=1e-4)


def test_wa_refuses_a_model_with_one_head_per_task(digits):
    stream = task_incremental(digits, 5)
    model = create_model("mlp", stream=stream, hidden=(16,), head="multi")
    with pytest.raises(ConfigError):
        context(stream, STRATEGIES.create("wa"), model=model)


def test_wa_on_distillation_reduces_the_bias_towards_new_classes(digits_stream):
    def fit(plus, seed=0):
        strategy = Composite(STRATEGIES.create("er", buffer_size=100, replay_batch_size=4),
                             [STRATEGIES.create(p) for p in plus])
        ctx = run(strategy, digits_stream, range(5), seed)
        return evaluate(strategy, ctx, digits_stream)

    kd_accuracy, kd_bias = fit(["lwf"])
    wa_accuracy, wa_bias = fit(["wa", "lwf"])
    # measured (seed 0, hidden 16, 1 epoch, 4 replayed rows per batch of 32): distillation alone 12%
    # with every test image called one of the last two classes; with WA 22% and 70%
    assert wa_bias < kd_bias - 0.1 and wa_accuracy > kd_accuracy + 0.05
