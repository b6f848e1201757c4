"""Unlearning audits: per-example outputs, accuracies, avg gap and the retrain comparison against
hand-computed values; relearning and linear probes must expose a class that was only suppressed
in the head (shallow forgetting) but not one the model never learned."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.evaluate.audits import (
    AVG_GAP_KEYS,
    avg_gap,
    binomial_tolerance,
    compare_to_reference,
    model_outputs,
    subset_outputs,
    unlearning_accuracies,
)
from palimpsest.evaluate.probe import linear_probe, probe_from_features
from palimpsest.evaluate.relearn import compare_relearning, relearn, steps_to_recover
from palimpsest.learn import TrainingConfig, fit
from palimpsest.models import MASKED_LOGIT, create_model

# -- model_outputs by hand ---------------------------------------------------------------------

LOGITS = torch.tensor([[2.0, 0.0, 0.0],
                       [0.0, 0.0, MASKED_LOGIT],     # a class the model may not predict
                       [1.0, 3.0, 0.0]])
TARGETS = torch.tensor([0, 1, 2])


def _hand(logits: list[float], y: int) -> dict[str, float]:
    exps = [math.exp(v) for v in logits]
    p = [e / sum(exps) for e in exps]
    ent = -sum(q * math.log(q) for q in p if q > 0)
    mentr = -(1 - p[y]) * math.log(p[y]) - sum(q * math.log(1 - q) for j, q in enumerate(p) if j != y)
    return {"pred": max(range(len(p)), key=lambda j: (p[j], -j)), "loss": -math.log(p[y]), "confidence": max(p),
            "correct_prob": p[y], "entropy": ent, "modified_entropy": mentr,
            "scaled_confidence": math.log(p[y] / (1 - p[y]))}


def test_model_outputs_match_hand_computation():
    out = model_outputs(torch.nn.Identity(), LOGITS, TARGETS)
    for i in range(3):
        expected = _hand(LOGITS[i].tolist(), int(TARGETS[i]))
        for key, value in expected.items():
            assert out[key][i] == pytest.approx(value, rel=1e-9, abs=1e-12), (i, key)
    # Row 0 in closed form: loss log(e² + 2) − 2, φ = 2 − log 2; row 1: the masked class adds 0.
    assert out["loss"][0] == pytest.approx(math.log(math.e ** 2 + 2) - 2)
    assert out["scaled_confidence"][0] == pytest.approx(2 - math.log(2))
    assert out["entropy"][1] == pytest.approx(math.log(2)) and out["scaled_confidence"][1] == pytest.approx(0.0)
    np.testing.assert_array_equal(out["pred"], [0, 0, 1])
    np.testing.assert_array_equal(out["targets"], [0, 1, 2])


def test_scaled_confidence_stays_finite_when_the_probability_rounds_to_one():
    out = model_outputs(torch.nn.Identity(), torch.tensor([[60.0, 0.0]]), torch.tensor([0]))
    assert out["correct_prob"][0] == 1.0 and out["scaled_confidence"][0] == pytest.approx(60.0)
    assert np.isfinite(out["modified_entropy"][0])


def test_model_outputs_batches_restore_mode_and_keep_logits(digits):
    torch.manual_seed(0)
    model = create_model("mlp", digits.input_shape, digits.n_classes, hidden=(16,))
    model.observe_classes(range(digits.n_classes))
    model.train()
    x, y = torch.from_numpy(digits.x_test[:50]), torch.from_numpy(digits.y_test[:50])
    one = model_outputs(model, x, y, batch_size=7, keep_logits=True)
    assert model.training
    full = model_outputs(model, x, y)
    for key in full:
        np.testing.assert_allclose(one[key], full[key], rtol=1e-6, atol=1e-9)
    assert one["logits"].shape == (50, 10)
    part = subset_outputs(full, full["targets"] == 3)
    assert (part["targets"] == 3).all() and len(part["loss"]) == int((y == 3).sum())
    empty = model_outputs(model, x[:0], y[:0])
    assert all(len(v) == 0 for v in empty.values())
    with pytest.raises(ConfigError, match="length"):
        model_outputs(model, x, y[:3])


# -- accuracies, avg gap, comparison -----------------------------------------------------------


def test_unlearning_accuracies_by_hand():
    acc = unlearning_accuracies(forget_pred=[0, 1, 1, 3], forget_targets=[0, 1, 2, 2],
                                retain_pred=[4, 5, 6], retain_targets=[4, 5, 6],
                                test_pred=[0, 1, 1, 0], test_targets=[0, 0, 1, 2], forget_classes=[0])
    assert acc["forget_accuracy"] == 0.5 and acc["retain_accuracy"] == 1.0 and acc["test_accuracy"] == 0.5
    # Test examples of class 0: (0 -> 0 right, 0 -> 1 wrong); others: (1 -> 1 right, 2 -> 0 wrong).
    assert acc["test_forget_class_accuracy"] == 0.5 and acc["test_other_accuracy"] == 0.5
    plain = unlearning_accuracies([1], [1], [1], [0], [], [])
    assert set(plain) == {"forget_accuracy", "retain_accuracy", "test_accuracy"}
    assert math.isnan(plain["test_accuracy"])


RESULT = {"forget_accuracy": 0.10, "retain_accuracy": 0.95, "test_accuracy": 0.90, "mia_score": 0.20}
RETRAINED = {"forget_accuracy": 0.00, "retain_accuracy": 0.97, "test_accuracy": 0.91, "mia_score": 0.10}


def test_avg_gap_by_hand():
    # (|0.10 − 0| + |0.95 − 0.97| + |0.90 − 0.91| + |0.20 − 0.10|) / 4 = 0.23 / 4
    assert avg_gap(RESULT, RETRAINED) == pytest.approx(0.0575, abs=1e-12)
    assert avg_gap(RETRAINED, RETRAINED) == 0.0
    # SalUn's own terms (UA = 1 − forget accuracy, MIA-efficacy = 1 − MIA score) give the same gap.
    salun = lambda r: {"ua": 1 - r["forget_accuracy"], "ra": r["retain_accuracy"],
                       "ta": r["test_accuracy"], "eff": 1 - r["mia_score"]}
    assert avg_gap(salun(RESULT), salun(RETRAINED), keys=("ua", "ra", "ta", "eff")) == pytest.approx(0.0575)
    assert math.isnan(avg_gap({**RESULT, "mia_score": float("nan")}, RETRAINED))
    with pytest.raises(ConfigError, match="mia_score"):
        avg_gap({k: RESULT[k] for k in AVG_GAP_KEYS[:3]}, RETRAINED)


def test_compare_to_reference_labels():
    assert compare_to_reference(0.30, 0.10) == "under-forgotten"
    assert compare_to_reference(0.05, 0.10) == "over-forgotten"
    assert compare_to_reference(0.11, 0.10) == "matches retrain"
    assert compare_to_reference(0.05, 0.10, tolerance=0.1) == "matches retrain"
    # MIA efficacy: higher = more "non-member", so a higher value than retrain is over-forgetting.
    assert compare_to_reference(0.95, 0.80, higher_means_remembered=False) == "over-forgotten"
    assert compare_to_reference(0.50, 0.80, higher_means_remembered=False) == "under-forgotten"
    assert compare_to_reference(float("nan"), 0.1) == "undefined"
    with pytest.raises(ConfigError):
        compare_to_reference(0.1, 0.1, tolerance=-1)
    assert binomial_tolerance(0.5, 100) == pytest.approx(0.1)
    assert binomial_tolerance(0.0, 100) == 0.0 and math.isnan(binomial_tolerance(0.5, 0))


# -- relearning and probes: shallow vs deep forgetting -----------------------------------------
#
# Digits, a one-hidden-layer MLP (16 units), forgotten class 8. "original": trained on every
# class; "shallow": the original with class 8's output bias lowered by 20 (it never predicts 8,
# but its features are untouched); "never": trained without class 8 (the retrained model).

FORGET_CLASS = 8
RECIPE = TrainingConfig(epochs=8, batch_size=32, lr=0.05, momentum=0.9)


def _train(digits, keep, seed=0):
    torch.manual_seed(seed)
    model = create_model("mlp", digits.input_shape, digits.n_classes, hidden=(16,))
    model.observe_classes(range(digits.n_classes))
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    fit(model, x[keep], y[keep], RECIPE, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def models(digits):
    y = torch.from_numpy(digits.y_train)
    original = _train(digits, torch.ones(len(y), dtype=torch.bool))
    never = _train(digits, y != FORGET_CLASS)
    shallow = copy.deepcopy(original)
    with torch.no_grad():
        shallow.head.bias[FORGET_CLASS] -= 20.0
    return {"original": original, "shallow": shallow, "never": never}


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _relearn_args(digits):
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    xt, yt = torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test)
    f, ft = y == FORGET_CLASS, yt == FORGET_CLASS
    return {"forget_x": x[f], "forget_y": y[f], "eval_x": xt[ft], "eval_y": yt[ft], "retain_x": x[~f],
            "retain_y": y[~f], "n_retain": 10, "control_x": xt[~ft], "control_y": yt[~ft], "n_examples": 10,
            "steps": 20, "lr": 0.1, "momentum": 0.0}


def test_relearning_is_faster_after_shallow_forgetting(digits, models):
    args = _relearn_args(digits)
    for name in ("shallow", "never"):
        assert _accuracy(models[name], args["eval_x"], args["eval_y"]) == 0.0   # both "forgot" class 8
    curves = {name: relearn(models[name], **args) for name in ("shallow", "never")}
    shallow_steps = steps_to_recover(curves["shallow"], 0.5)
    never_steps = steps_to_recover(curves["never"], 0.5)
    assert shallow_steps is not None and never_steps is not None
    assert shallow_steps < never_steps, (curves["shallow"].accuracy, curves["never"].accuracy)
    summary = compare_relearning(curves["shallow"], curves["never"], 0.5)
    assert summary["steps"] == shallow_steps and summary["reference_steps"] == never_steps
    assert summary["mean_accuracy_gap"] > 0.03
    # Mixing retain examples keeps the other classes: no degenerate "predict 8 everywhere" recovery.
    assert curves["shallow"].control_accuracy[-1] > 0.85
    assert len(curves["shallow"].accuracy) == len(curves["shallow"].control_accuracy) == 21
    assert len(curves["shallow"].loss) == 20


def test_relearn_leaves_the_model_alone_and_is_seeded(digits, models):
    args = _relearn_args(digits)
    before = {k: v.clone() for k, v in models["shallow"].state_dict().items()}
    a = relearn(models["shallow"], **{**args, "steps": 3}, seed=1)
    b = relearn(models["shallow"], **{**args, "steps": 3}, seed=1)
    c = relearn(models["shallow"], **{**args, "steps": 3}, seed=2)
    for k, v in models["shallow"].state_dict().items():
        assert torch.equal(v, before[k])
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.chosen, b.chosen)
    assert not np.array_equal(a.chosen, c.chosen)
    assert a.as_dict()["steps"] == 3 and isinstance(a.as_dict()["accuracy"], list)
    # Default evaluation set: the forget examples that were not fine-tuned on.
    d = relearn(models["shallow"], args["forget_x"], args["forget_y"], n_examples=5, steps=1)
    assert len(d.chosen) == 5 and len(d.control_accuracy) == 0
    with pytest.raises(ConfigError):
        relearn(models["shallow"], args["forget_x"], args["forget_y"], n_examples=10_000)
    with pytest.raises(ConfigError, match="n_retain"):
        relearn(models["shallow"], args["forget_x"], args["forget_y"], n_retain=5)


def test_steps_to_recover_and_compare_by_hand():
    curve = np.array([0.0, 0.2, 0.6, 0.9])
    assert steps_to_recover(curve, 0.5) == 2
    assert steps_to_recover(curve, 0.0) == 0
    assert steps_to_recover(curve, 0.95) is None
    summary = compare_relearning(curve, [0.0, 0.0, 0.2, 0.5], 0.5)
    assert summary == {"steps": 2, "reference_steps": 3, "mean_accuracy_gap": pytest.approx(0.25),
                       "final_accuracy_gap": pytest.approx(0.4)}


def test_linear_probe_recovers_a_class_only_removed_from_the_head(digits, models):
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    xt, yt = torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test)
    zeroed = copy.deepcopy(models["original"])
    with torch.no_grad():                     # head row zeroed, bias pushed down: never predicts 8
        zeroed.head.weight[FORGET_CLASS] = 0.0
        zeroed.head.bias[FORGET_CLASS] = -20.0
    ft = yt == FORGET_CLASS
    assert _accuracy(zeroed, xt[ft], yt[ft]) == 0.0
    probes = {name: linear_probe(m, x, y, xt, yt, forget_classes=[FORGET_CLASS])
              for name, m in (("original", models["original"]), ("zeroed", zeroed), ("never", models["never"]))}
    assert probes["zeroed"]["forget_class_accuracy"] > 0.9
    assert probes["zeroed"]["forget_class_accuracy"] == probes["original"]["forget_class_accuracy"]
    assert probes["never"]["forget_class_accuracy"] < probes["zeroed"]["forget_class_accuracy"] - 0.1
    # The other classes are probed about equally well from both feature sets.
    assert abs(probes["never"]["other_accuracy"] - probes["zeroed"]["other_accuracy"]) < 0.05
    assert set(probes["never"]["per_class_accuracy"]) == set(range(10))


def test_probe_needs_the_forgotten_class_in_its_training_set():
    feats = np.random.default_rng(0).normal(size=(20, 3))
    labels = np.arange(20) % 2
    with pytest.raises(ConfigError, match="lacks the forgotten classes"):
        probe_from_features(feats, labels, feats, labels, forget_classes=[2])
    out = probe_from_features(feats, labels, feats, labels)
    assert math.isnan(out["forget_class_accuracy"]) and 0 <= out["accuracy"] <= 1
