import numpy as np
import pytest
import torch

from palimpsest.forget import ForgetRequest, UnlearnContext, UnlearningData, resolve
from palimpsest.learn import TrainingConfig, fit
from palimpsest.models import create_model

RECIPE = TrainingConfig(epochs=8, batch_size=32, lr=0.05, momentum=0.9)


def make_model(digits):
    def factory():
        m = create_model("mlp", digits.input_shape, digits.n_classes, hidden=(32,))
        m.observe_classes(range(digits.n_classes))
        return m
    return factory


@pytest.fixture(scope="session")
def digits_tensors(digits):
    return (torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train),
            torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test))


@pytest.fixture(scope="session")
def trained_digits(digits, digits_tensors):
    """An MLP trained on all of digits with RECIPE (the 'original' model of the unlearning tests)."""
    x, y, _, _ = digits_tensors
    torch.manual_seed(0)
    model = make_model(digits)()
    fit(model, x, y, RECIPE, seed=0)
    model.eval()
    return model


def unlearning_setup(digits, digits_tensors, request: ForgetRequest, reads):
    x, y, _, _ = digits_tensors
    split = resolve(request, digits.y_train, digits.n_classes)
    data = UnlearningData(x, y, split, reads, digits.n_classes)
    ctx = UnlearnContext(RECIPE, make_model(digits), torch.device("cpu"), seed=0)
    return split, data, ctx


def accuracy(model, x, y):
    with torch.no_grad():
        model.eval()
        return float((model(x).argmax(1) == y).float().mean()) if len(y) else float("nan")


def class_forget_accuracies(model, digits, digits_tensors, forget_class):
    x, y, xt, yt = digits_tensors
    f, r = y == forget_class, y != forget_class
    ft, rt = yt == forget_class, yt != forget_class
    return {"forget": accuracy(model, x[f], y[f]), "retain": accuracy(model, x[r], y[r]),
            "test_forget_class": accuracy(model, xt[ft], yt[ft]), "test_other": accuracy(model, xt[rt], yt[rt])}


__all__ = ["np", "RECIPE", "make_model", "unlearning_setup", "accuracy", "class_forget_accuracies"]
