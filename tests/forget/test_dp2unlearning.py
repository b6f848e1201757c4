"""DP2Unlearning: a DP-SGD base at (ε, δ) kept at training time, fine-tuned on the retain set."""
import copy

import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget import ForgetRequest
from palimpsest.forget.dp2unlearning import BASE_KEY, group_epsilon

from .conftest import accuracy, unlearning_setup

pytest.importorskip("opacus")

FAST = {"epochs": 3, "batch_size": 128, "finetune_epochs": 1}


def test_the_base_spends_the_target_epsilon_and_fine_tuning_recovers_utility(digits, digits_tensors, trained_digits):
    split, data, ctx = unlearning_setup(digits, digits_tensors, ForgetRequest(kind="random", fraction=0.05),
                                        UNLEARNERS.get("dp2unlearning").obj.reads)
    x, y, xt, yt = digits_tensors
    u = UNLEARNERS.create("dp2unlearning", epsilon=2.0, **FAST)
    base = u.artifacts(trained_digits, x, y, ctx)[BASE_KEY]
    assert base["epsilon"] <= 2.0 + 1e-6 and base["epsilon"] > 1.5 and base["noise_multiplier"] > 0.5
    ctx.cache = {BASE_KEY: base}
    out, report = u.unlearn(copy.deepcopy(trained_digits), data, ctx)
    assert report["base_cached"] and report["epsilon"] == base["epsilon"]
    assert report["epsilon_group"] == pytest.approx(len(split.forget) * base["epsilon"])
    # the DP base alone is noisy; fine-tuning on the retain set brings test accuracy back up
    plain = UNLEARNERS.get("dp2unlearning").obj.Config
    assert plain.model_fields["finetune_epochs"].default >= 1
    assert accuracy(out, xt, yt) > 0.8
    # a stricter budget needs more noise
    strict = UNLEARNERS.create("dp2unlearning", epsilon=0.5, **FAST).artifacts(trained_digits, x, y, ctx)[BASE_KEY]
    assert strict["noise_multiplier"] > base["noise_multiplier"] and strict["epsilon"] <= 0.5 + 1e-6


def test_group_privacy_and_a_model_dp_sgd_cannot_train(digits, digits_tensors):
    assert group_epsilon(1.0, 1e-5, 1) == (1.0, 1e-5)
    eps, delta = group_epsilon(0.5, 1e-5, 3)
    assert eps == 1.5 and delta == pytest.approx(3 * torch.e ** 1.0 * 1e-5)
    from palimpsest.forget.base import UnlearnContext
    from palimpsest.forget.dp2unlearning import train_dp_base
    from palimpsest.models import create_model
    from .conftest import RECIPE

    def make():
        return create_model("cnn", digits.input_shape, digits.n_classes, norm="batch")
    x, y, _, _ = digits_tensors
    ctx = UnlearnContext(RECIPE, make, torch.device("cpu"))
    with pytest.raises(ConfigError, match="BatchNorm"):
        train_dp_base(make, x[:64], y[:64], epsilon=1, delta=1e-5, max_grad_norm=1, epochs=1, batch_size=32,
                      lr=0.1, seed=0, device=ctx.device)
