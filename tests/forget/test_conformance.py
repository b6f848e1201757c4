"""One suite over every registered unlearner: default config runs with only the splits it
declares (the guard raises on any other), settings round-trip, bad settings raise the clear
error, a fixed seed is deterministic, and the method changes the model."""
import pytest
import torch

import palimpsest.forget  # noqa: F401
from palimpsest.core.errors import SpecError
from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget import ForgetRequest

from .conftest import unlearning_setup

NAMES = UNLEARNERS.names()
REQUEST = ForgetRequest(kind="classes", classes=[3])


def run(name, digits, digits_tensors, trained_digits):
    cls = UNLEARNERS.get(name).obj
    for module in cls.requires:
        pytest.importorskip(module)
    _, data, ctx = unlearning_setup(digits, digits_tensors, REQUEST, cls.reads)
    model = pickle_copy(trained_digits)
    torch.manual_seed(0)
    return UNLEARNERS.create(name).unlearn(model, data, ctx).model


def pickle_copy(model):
    import copy
    return copy.deepcopy(model)


@pytest.mark.parametrize("name", NAMES)
def test_runs_with_only_its_declared_splits_and_changes_the_model(name, digits, digits_tensors, trained_digits):
    out = run(name, digits, digits_tensors, trained_digits)
    x = digits_tensors[0][:64]
    with torch.no_grad():
        assert torch.isfinite(out(x)).all()
        assert not torch.equal(out(x), trained_digits(x))


@pytest.mark.parametrize("name", NAMES)
def test_settings_round_trip_and_bad_settings(name):
    u = UNLEARNERS.create(name)
    assert UNLEARNERS.create(name, **u.settings()).settings() == u.settings()
    with pytest.raises(SpecError, match="not_a_setting"):
        UNLEARNERS.create(name, not_a_setting=1)
    for field in UNLEARNERS.get(name).obj.Config.model_fields:
        with pytest.raises(SpecError, match=field):
            UNLEARNERS.create(name, **{field: object()})


@pytest.mark.parametrize("name", NAMES)
def test_declares_valid_reads(name):
    assert set(UNLEARNERS.get(name).obj.declared()) <= {"forget", "retain", "train"}


@pytest.mark.parametrize("name", NAMES)
def test_fixed_seed_is_deterministic(name, digits, digits_tensors, trained_digits):
    a = run(name, digits, digits_tensors, trained_digits)
    b = run(name, digits, digits_tensors, trained_digits)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", NAMES)
def test_zero_steps_return_the_model_unchanged(name, digits, digits_tensors, trained_digits):
    """Every unlearner declares the settings under which it takes no step (None for exact methods,
    which rebuild the model); under them the model comes back bit for bit."""
    cls = UNLEARNERS.get(name).obj
    for module in cls.requires:
        pytest.importorskip(module)
    if cls.zero_steps is None:
        assert cls.exact or cls.rebuilds, f"{name} declares no zero-step setting but is not exact"
        return
    _, data, ctx = unlearning_setup(digits, digits_tensors, REQUEST, cls.reads)
    model = pickle_copy(trained_digits)
    out, report = UNLEARNERS.create(name, **cls.zero_steps).unlearn(model, data, ctx)
    for (k, a), b in zip(trained_digits.state_dict().items(), out.state_dict().values()):
        assert torch.equal(a, b), k
    assert isinstance(report, dict)


def test_a_split_read_at_the_indices_level_serves_no_examples(digits, digits_tensors):
    from palimpsest.core.errors import LeakageError
    _, data, _ = unlearning_setup(digits, digits_tensors, REQUEST, {"forget": "indices", "retain": "labels"})
    forget, retain = data.forget(), data.retain()
    assert len(forget.indices) == data.n_forget and len(retain.targets) == data.n_retain
    with pytest.raises(LeakageError, match="read the inputs of the forget set"):
        forget.inputs
    with pytest.raises(LeakageError, match="read the inputs of the retain set"):
        retain.inputs
    assert UNLEARNERS.get("sisa").obj.declared()["forget"] == "indices"   # SISA needs only which points go
