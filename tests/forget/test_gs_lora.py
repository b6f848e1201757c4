"""GS-LoRA(++): adapters per request, a group lasso that edits few layers, a bounded forget loss,
merged afterwards so the model keeps its architecture."""
import copy

import pytest
import torch

from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget import ForgetRequest

from .conftest import class_forget_accuracies, unlearning_setup

pytest.importorskip("peft")


def forget_class(name, digits, digits_tensors, trained_digits, **settings):
    cls = UNLEARNERS.get(name).obj
    _, data, ctx = unlearning_setup(digits, digits_tensors, ForgetRequest(kind="classes", classes=[3]), cls.reads)
    torch.manual_seed(0)
    out = UNLEARNERS.create(name, **settings).unlearn(copy.deepcopy(trained_digits), data, ctx)
    return out.model, out.report


def test_gs_lora_forgets_a_class_keeps_the_rest_and_the_architecture(digits, digits_tensors, trained_digits):
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    model, report = forget_class("gs_lora", digits, digits_tensors, trained_digits)
    after = class_forget_accuracies(model, digits, digits_tensors, 3)
    assert after["forget"] < 0.05 and after["test_forget_class"] < 0.1
    assert after["test_other"] > before["test_other"] - 0.03
    # merged: the same parameter names and shapes as before (no adapters left), all trainable again
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in trained_digits.state_dict().items()}
    assert all(p.requires_grad for p in model.parameters()) and not hasattr(model, "peft_config")
    assert report["adapted_layers"] >= 1 and set(report["update_norms"]) and report["finite"]
    # the head was not adapted (target: backbone), so it is unchanged
    assert torch.equal(model.head.weight, trained_digits.head.weight)


def test_the_group_lasso_shrinks_the_adapter_groups(digits, digits_tensors, trained_digits):
    _, plain = forget_class("gs_lora", digits, digits_tensors, trained_digits, group_alpha=0.0)
    _, sparse = forget_class("gs_lora", digits, digits_tensors, trained_digits, group_alpha=0.5)
    assert sum(sparse["group_norms"].values()) < 0.9 * sum(plain["group_norms"].values())


def test_gs_lora_plus_plus_pulls_retained_examples_to_their_prototypes(digits, digits_tensors, trained_digits):
    model, report = forget_class("gs_lora", digits, digits_tensors, trained_digits, proto=0.5)
    after = class_forget_accuracies(model, digits, digits_tensors, 3)
    assert after["forget"] < 0.05 and after["test_other"] > 0.9 and report["finite"]
