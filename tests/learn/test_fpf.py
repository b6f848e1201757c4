"""FPF and k-FPF ("Does Continual Learning Equally Forget All Parameters?", ICML 2023): fine-tune only
the forgetting-prone modules (classifier, last layer, norms) on a small buffer, after each experience
(FPF, a plug-in) or k times spread over the stream without any replay (k-FPF)."""
import numpy as np
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental
from palimpsest.evaluate import evaluate_stream
from palimpsest.learn import Composite, train_step
from palimpsest.learn.fpf import forgetting_prone, module_drift
from palimpsest.models import create_model

from .test_refresh import context, run


def test_the_forgetting_prone_modules_are_the_last_layers_and_the_norms(digits):
    stream = class_incremental(digits, 5)
    mlp = create_model("mlp", stream=stream, hidden=(16, 16))
    assert forgetting_prone(mlp) == ["backbone.3.weight", "backbone.3.bias", "head.weight", "head.bias"]
    assert forgetting_prone(mlp, layers=0) == ["head.weight", "head.bias"]
    cnn = create_model("cnn", stream=stream, channels=(4, 8), hidden=16, norm="batch")
    chosen = forgetting_prone(cnn)
    # both BatchNorm layers, the hidden linear layer and the classifier; never the convolutions
    assert chosen == ["backbone.0.1.weight", "backbone.0.1.bias", "backbone.0.5.weight", "backbone.0.5.bias",
                      "backbone.1.weight", "backbone.1.bias", "head.weight", "head.bias"]
    assert forgetting_prone(cnn, modules=["backbone.1"]) == ["backbone.1.weight", "backbone.1.bias"]
    with pytest.raises(ConfigError, match="match no parameter"):
        forgetting_prone(cnn, modules=["backbone.9"])


def test_fpf_fine_tunes_only_the_chosen_modules(digits_stream):
    fpf = STRATEGIES.create("fpf", layers=0, steps=20)
    ctx = run(fpf, digits_stream, [0])
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    ctx.adapter.observe_classes(digits_stream.train[1].classes)
    fpf.memory.add(digits_stream.train[1].batch(torch.arange(40), torch.device("cpu"), digits_stream.train[1].task_ids))
    fpf.finetune(ctx)
    moved = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in ctx.model.parameters())      # the paused layers train again
    assert fpf.finetunes == 2 and len(fpf.drift) == 1                  # one after the experience, one here


def test_fpf_recovers_old_classes_that_plain_fine_tuning_forgets(digits_stream):
    def final_accuracy(plugins):
        strategy = STRATEGIES.create("naive")
        if plugins:
            strategy = Composite(strategy, plugins)
        ctx = run(strategy, digits_stream, range(5))
        return float(np.mean(evaluate_stream(ctx.model, digits_stream).accuracy("class")))

    naive = final_accuracy([])
    with_fpf = final_accuracy([STRATEGIES.create("fpf", buffer_size=100)])
    # measured (seed 0, MLP 16, 1 epoch): naive 11%, with FPF on 100 buffered examples 91%
    assert naive < 0.25 and with_fpf > naive + 0.25


def test_kfpf_fine_tunes_k_times_evenly_the_last_at_the_last_step(digits_stream):
    kfpf = STRATEGIES.create("kfpf", k=3, steps=5)
    ctx = run(kfpf, digits_stream, range(5))
    total = sum(-(-len(e) // 32) for e in digits_stream.train)
    assert kfpf.finetunes == 3 and kfpf.steps_done == total
    assert kfpf.triggers == {round(total / 3), round(2 * total / 3), total}
    assert len(kfpf.memory) == 500 and len(kfpf.drift) == 5
    assert ctx.optimizer.param_groups[0]["lr"] == 0.05


def test_module_drift_is_relative_to_the_starting_weights(digits_stream):
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.head.weight.mul_(1.5)
        model.head.bias.mul_(1.5)
    drift = module_drift(start, model)
    assert drift["head"] == pytest.approx(0.5, rel=1e-5) and drift["backbone.1"] == 0.0


def test_fpf_with_zero_steps_trains_exactly_as_its_base(digits_stream):
    def weights(strategy):
        ctx = run(strategy, digits_stream, [0, 1])
        return torch.cat([p.detach().flatten() for p in ctx.model.parameters()])

    plain = weights(STRATEGIES.create("er", buffer_size=30))
    same = weights(Composite(STRATEGIES.create("er", buffer_size=30), [STRATEGIES.create("fpf", steps=0)]))
    assert torch.equal(plain, same)


def test_the_classifier_drifts_most_during_a_new_experience(digits_stream):
    """The paper's measurement: during each new experience the classifier moves much more, relative
    to its size, than the layers below it (measured, seed 0: 0.33-0.53 against 0.13-0.19)."""
    fpf = STRATEGIES.create("fpf", steps=0)
    torch.manual_seed(0)
    model = create_model("mlp", stream=digits_stream, hidden=(32, 32))
    ctx = context(digits_stream, fpf, model=model)
    ctx.training = ctx.training.model_copy(update={"epochs": 3})
    for k in range(5):
        ctx.step = k
        train_step(ctx, fpf, digits_stream.train[k])
    assert len(fpf.drift) == 5
    for drift in fpf.drift[1:]:
        assert drift["head"] > 2 * max(drift["backbone.1"], drift["backbone.3"])
