"""Fisher forgetting (Golatkar et al. 2020): noise the retain set's Fisher does not resist."""
import copy


from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget import ForgetRequest

from .conftest import class_forget_accuracies, unlearning_setup


def scrub(request, digits, digits_tensors, trained_digits, **settings):
    _, data, ctx = unlearning_setup(digits, digits_tensors, request, UNLEARNERS.get("fisher_forgetting").obj.reads)
    return UNLEARNERS.create("fisher_forgetting", **settings).unlearn(copy.deepcopy(trained_digits), data, ctx)


def test_a_class_request_removes_the_class_and_keeps_the_others(digits, digits_tensors, trained_digits):
    before = class_forget_accuracies(trained_digits, digits, digits_tensors, 3)
    out = scrub(ForgetRequest(kind="classes", classes=[3]), digits, digits_tensors, trained_digits)
    after = class_forget_accuracies(out.model, digits, digits_tensors, 3)
    assert out.report["forgotten_classes"] == [3]
    assert after["forget"] < 0.05 and after["test_other"] > before["test_other"] - 0.05
    assert float(out.model.head.weight[3].detach().abs().max()) < 0.1   # zeroed, then noise of variance 1e-4


def test_the_noise_follows_the_inverse_fisher(digits, digits_tensors, trained_digits):
    """Weights the retain set pins down (high Fisher) move less than weights it does not need."""
    from palimpsest.forget.fisher import retain_fisher
    request = ForgetRequest(kind="random", fraction=0.1)
    out = scrub(request, digits, digits_tensors, trained_digits, alpha=1e-4)
    assert out.report["forgotten_classes"] == [] and out.report["weight_change_norm"] > 0
    x, y, _, _ = digits_tensors
    fisher = retain_fisher(trained_digits, x, y, 0, "cpu")["backbone.1.bias"]
    moved = (out.model.backbone[1].bias - trained_digits.backbone[1].bias).abs()
    low, high = fisher < fisher.median(), fisher >= fisher.median()
    assert moved[low].mean() > moved[high].mean()
