"""Exact unlearning of a linear head: the refit depends only on the retain set's features."""
import copy

import torch

from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget import ForgetRequest

from .conftest import class_forget_accuracies, unlearning_setup


def refit(model, request, digits, digits_tensors):
    _, data, ctx = unlearning_setup(digits, digits_tensors, request, UNLEARNERS.get("linear_head_exact").obj.reads)
    return UNLEARNERS.create("linear_head_exact").unlearn(copy.deepcopy(model), data, ctx)


def test_the_refit_head_does_not_depend_on_the_head_it_replaces(digits, digits_tensors, trained_digits):
    request = ForgetRequest(kind="random", fraction=0.1, seed=3)
    a = refit(trained_digits, request, digits, digits_tensors)
    scrambled = copy.deepcopy(trained_digits)
    with torch.no_grad():
        scrambled.head.weight.normal_()
        scrambled.head.bias.normal_()
    b = refit(scrambled, request, digits, digits_tensors)
    assert torch.allclose(a.model.head.weight, b.model.head.weight, atol=1e-4)
    assert a.report["head_max_grad"] < 1e-4                    # converged to the unique optimum
    for (k, p), q in zip(trained_digits.backbone.state_dict().items(), a.model.backbone.state_dict().values()):
        assert torch.equal(p, q), k                             # the backbone is the original's


def test_a_forgotten_class_gets_no_probability(digits, digits_tensors, trained_digits):
    out = refit(trained_digits, ForgetRequest(kind="classes", classes=[3]), digits, digits_tensors)
    after = class_forget_accuracies(out.model, digits, digits_tensors, 3)
    assert after["forget"] == 0.0 and after["test_other"] > 0.9
