"""Every metric against hand-computed values; the worked example is the one in docs/METRICS.md."""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import METRICS
from palimpsest.evaluate import metrics as M
from palimpsest.evaluate.records import RunRecord

TOL = 1e-12

# Worked example (docs/METRICS.md): plain stream of 3 tasks, one per step.
ACC = np.array([[0.90, 0.10, 0.05],
                [0.95, 0.80, 0.20],
                [0.60, 0.50, 0.85]])
PLAIN = [[0], [1], [2]]
INITIAL = np.array([0.10, 0.10, 0.10])
REFERENCE = np.array([0.92, 0.85, 0.80])

# Recurring schedule: task 0 is trained at steps 0 and 2, task 2 only at the last step.
ACC_RECUR = np.array([[0.80, 0.00, 0.00],
                      [0.40, 0.90, 0.10],
                      [0.85, 0.50, 0.10],
                      [0.60, 0.70, 0.90]])
RECUR = [[0], [1], [0], [2]]

# Joint training: a single step over every task.
ACC_JOINT = np.array([[0.90, 0.80, 0.70]])
JOINT = [[0, 1, 2]]

# Tiny prediction arrays: 3 tasks x 2 test examples, one model per step of PLAIN.
TARGETS = np.array([0, 1, 2, 3, 4, 5])
TEST_TASK = np.array([0, 0, 1, 1, 2, 2])
PREDICTIONS = [np.array([0, 1, 9, 9, 9, 9]),   # step 0: task 0 right
               np.array([0, 9, 2, 3, 9, 9]),   # step 1: example 1 right -> wrong
               np.array([0, 1, 2, 9, 4, 5])]   # step 2: example 1 wrong -> right, 3 right -> wrong


def close(value: float, expected: float) -> bool:
    return math.isclose(value, expected, rel_tol=0.0, abs_tol=TOL)


@pytest.fixture(autouse=True)
def no_warnings():
    # NaN results must come without numpy's "mean of empty slice" warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- worked example --------------------------------------------------------------------------


def test_worked_example_matches_the_docs():
    assert close(M.final_average_accuracy(ACC), 0.65)
    assert close(M.average_incremental_accuracy(ACC, PLAIN), (0.90 + 0.875 + 0.65) / 3)
    np.testing.assert_allclose(M.forgetting_per_experience(ACC, PLAIN), [0.35, 0.30, np.nan],
                               rtol=0, atol=TOL)
    assert close(M.forgetting(ACC, PLAIN), 0.325)
    assert close(M.backward_transfer(ACC, PLAIN), -0.30)
    assert close(M.plasticity(ACC, PLAIN), 0.85)
    assert close(M.forward_transfer(ACC, PLAIN, REFERENCE), -0.02 / 3)
    assert close(M.forward_transfer_gem(ACC, PLAIN, INITIAL), 0.05)


def test_chaudhry_forgetting_differs_from_avalanche_forgetting():
    # Avalanche's forgetting (right-after-learning minus final) is -BWT on a plain stream: 0.30,
    # whereas task 0 peaked at step 1, so Chaudhry's forgetting is larger: 0.325.
    first = M.first_trained_step(PLAIN, 3)
    avalanche = np.mean([ACC[first[j], j] - ACC[-1, j] for j in (0, 1)])
    assert close(avalanche, -M.backward_transfer(ACC, PLAIN))
    assert M.forgetting(ACC, PLAIN) > avalanche + 0.02


def test_first_trained_step():
    np.testing.assert_array_equal(M.first_trained_step(RECUR, 3), [0, 1, 3])
    np.testing.assert_array_equal(M.first_trained_step([[0], [1]], 3), [0, 1, -1])
    np.testing.assert_array_equal(M.first_trained_step(JOINT, 3), [0, 0, 0])


# -- recurring schedule ----------------------------------------------------------------------


def test_recurring_schedule_uses_first_training_step():
    assert close(M.final_average_accuracy(ACC_RECUR), (0.60 + 0.70 + 0.90) / 3)
    # seen tasks: {0}, {0,1}, {0,1}, {0,1,2}
    expected_aia = (0.80 + (0.40 + 0.90) / 2 + (0.85 + 0.50) / 2 + (0.60 + 0.70 + 0.90) / 3) / 4
    assert close(M.average_incremental_accuracy(ACC_RECUR, RECUR), expected_aia)
    # task 0 peaks at step 2 (its second training), task 1 at step 1; task 2 is trained last
    np.testing.assert_allclose(M.forgetting_per_experience(ACC_RECUR, RECUR), [0.25, 0.20, np.nan],
                               rtol=0, atol=TOL)
    assert close(M.forgetting(ACC_RECUR, RECUR), 0.225)
    assert close(M.backward_transfer(ACC_RECUR, RECUR), ((0.60 - 0.80) + (0.70 - 0.90)) / 2)
    assert close(M.plasticity(ACC_RECUR, RECUR), (0.80 + 0.90 + 0.90) / 3)
    # acc[ℓ_j - 1, j] for j = 1 (row 0) and j = 2 (row 2)
    assert close(M.forward_transfer_gem(ACC_RECUR, RECUR, np.zeros(3)), (0.00 + 0.10) / 2)
    assert close(M.forward_transfer(ACC_RECUR, RECUR, np.full(3, 0.5)), (0.30 + 0.40 + 0.40) / 3)


# -- joint training: a single row ------------------------------------------------------------


def test_joint_single_row():
    assert close(M.final_average_accuracy(ACC_JOINT), 0.80)
    assert close(M.average_incremental_accuracy(ACC_JOINT, JOINT), 0.80)
    assert np.isnan(M.forgetting_per_experience(ACC_JOINT, JOINT)).all()
    assert math.isnan(M.forgetting(ACC_JOINT, JOINT))
    assert math.isnan(M.backward_transfer(ACC_JOINT, JOINT))
    assert close(M.plasticity(ACC_JOINT, JOINT), 0.80)
    assert math.isnan(M.forward_transfer_gem(ACC_JOINT, JOINT, np.zeros(3)))
    assert close(M.forward_transfer(ACC_JOINT, JOINT, np.ones(3)), -0.20)
    nfr, pfr = M.flip_rates([np.array([0, 1])], np.array([0, 1]), np.array([0, 1]), [[0, 1]])
    assert math.isnan(nfr) and math.isnan(pfr)


# -- NaN handling ----------------------------------------------------------------------------


def test_nan_entries_are_left_out():
    acc = ACC.copy()
    acc[1, 0] = np.nan          # task 0 not measured after step 1: its peak is then step 0
    acc[2, 1] = np.nan          # task 1 has no final value: no forgetting, no BWT
    assert close(M.final_average_accuracy(acc), (0.60 + 0.85) / 2)
    np.testing.assert_allclose(M.forgetting_per_experience(acc, PLAIN), [0.30, np.nan, np.nan],
                               rtol=0, atol=TOL)
    assert close(M.forgetting(acc, PLAIN), 0.30)
    assert close(M.backward_transfer(acc, PLAIN), -0.30)
    # step 1 sees tasks {0, 1} but only task 1 is defined; step 2 sees {0, 1, 2} with 1 undefined
    assert close(M.average_incremental_accuracy(acc, PLAIN), (0.90 + 0.80 + (0.60 + 0.85) / 2) / 3)


def test_all_nan_and_empty_give_nan_not_errors():
    nan = np.full((3, 3), np.nan)
    for value in (M.final_average_accuracy(nan), M.average_incremental_accuracy(nan, PLAIN),
                  M.forgetting(nan, PLAIN), M.backward_transfer(nan, PLAIN), M.plasticity(nan, PLAIN),
                  M.forward_transfer(nan, PLAIN, REFERENCE), M.forward_transfer_gem(nan, PLAIN, INITIAL),
                  M.final_average_accuracy(np.zeros((0, 3)))):
        assert math.isnan(value)


def test_missing_reference_or_initial_gives_nan():
    assert math.isnan(M.forward_transfer(ACC, PLAIN, None))
    assert math.isnan(M.forward_transfer_gem(ACC, PLAIN, None))


def test_untrained_tasks_are_left_out_of_schedule_metrics():
    # a partial run: 2 of 3 tasks trained; column 2 only counts in the final average
    acc = ACC[:2]
    steps = [[0], [1]]
    assert close(M.final_average_accuracy(acc), (0.95 + 0.80 + 0.20) / 3)
    assert close(M.average_incremental_accuracy(acc, steps), (0.90 + 0.875) / 2)
    # the window for task 0 is step 0 only (s < S-1 = 1); it improved, so forgetting is negative
    np.testing.assert_allclose(M.forgetting_per_experience(acc, steps), [0.90 - 0.95, np.nan, np.nan],
                               rtol=0, atol=TOL)
    assert close(M.backward_transfer(acc, steps), 0.05)
    assert close(M.plasticity(acc, steps), 0.85)
    assert close(M.forward_transfer_gem(acc, steps, INITIAL), 0.0)


def test_malformed_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="step_tasks"):
        M.forgetting(ACC, [[0], [1]])
    with pytest.raises(ConfigError, match="no column"):
        M.plasticity(ACC, [[0], [1], [3]])
    with pytest.raises(ConfigError, match="two-dimensional"):
        M.final_average_accuracy(np.array([0.5, 0.5]))
    with pytest.raises(ConfigError, match="reference"):
        M.forward_transfer(ACC, PLAIN, np.ones(2))
    with pytest.raises(ConfigError, match="differ in length"):
        M.flip_rates_between(np.zeros(3), np.zeros(2), np.zeros(3))


# -- flip rates ------------------------------------------------------------------------------


def test_flip_rates_between():
    targets = np.array([0, 1, 2, 3])
    before = np.array([0, 1, 0, 0])      # right, right, wrong, wrong
    after = np.array([0, 0, 2, 0])       # right, wrong, right, wrong
    nfr, pfr = M.flip_rates_between(before, after, targets)
    assert close(nfr, 0.25) and close(pfr, 0.25)
    nfr, pfr = M.flip_rates_between(before, before, targets)
    assert nfr == 0.0 and pfr == 0.0


def test_flip_rates_between_leaves_out_undefined_predictions():
    nfr, pfr = M.flip_rates_between(np.array([0, -1, 2]), np.array([1, 1, 2]), np.array([0, 1, 2]))
    assert close(nfr, 0.5) and close(pfr, 0.0)
    nfr, pfr = M.flip_rates_between(np.full(3, -1), np.full(3, -1), np.array([0, 1, 2]))
    assert math.isnan(nfr) and math.isnan(pfr)


def test_flip_rates_over_steps():
    # pair (0,1) on task 0's 2 examples: NFR 1/2, PFR 0
    # pair (1,2) on tasks 0 and 1 (4 examples): NFR 1/4, PFR 1/4
    nfr, pfr = M.flip_rates(PREDICTIONS, TARGETS, TEST_TASK, PLAIN)
    assert close(nfr, (0.5 + 0.25) / 2)
    assert close(pfr, (0.0 + 0.25) / 2)
    assert close(M.negative_flip_rate(PREDICTIONS, TARGETS, TEST_TASK, PLAIN), 0.375)
    assert close(M.positive_flip_rate(PREDICTIONS, TARGETS, TEST_TASK, PLAIN), 0.125)


def test_flip_rates_recurring_schedule_counts_tasks_from_first_training():
    # steps train 0, 1, 0: pair (1,2) covers tasks 0 and 1
    steps = [[0], [1], [0]]
    nfr, pfr = M.flip_rates(PREDICTIONS, TARGETS, TEST_TASK, steps)
    assert close(nfr, 0.375) and close(pfr, 0.125)


def test_final_accuracy_matches_sklearn_on_predictions():
    acc = np.array([[accuracy_score(TARGETS[TEST_TASK == j], pred[TEST_TASK == j]) for j in range(3)]
                    for pred in PREDICTIONS])
    np.testing.assert_allclose(acc, [[1, 0, 0], [0.5, 1, 0], [1, 0.5, 1]], rtol=0, atol=TOL)
    expected = np.mean([accuracy_score(TARGETS[TEST_TASK == j], PREDICTIONS[-1][TEST_TASK == j])
                        for j in range(3)])
    assert close(M.final_average_accuracy(acc), expected)
    # equal-sized test experiences: the mean of task accuracies is the pooled accuracy
    assert close(M.final_average_accuracy(acc), accuracy_score(TARGETS, PREDICTIONS[-1]))


# -- compute_metrics and the registry -------------------------------------------------------


def _record(**overrides) -> RunRecord:
    fields = dict(strategy="naive", seed=0, acc={"class": ACC, "task": ACC_RECUR[:3]},
                  step_tasks=PLAIN)
    fields.update(overrides)
    return RunRecord(**fields)


def test_compute_metrics_key_set_minimal():
    out = M.compute_metrics(_record())
    basic = ("final_average_accuracy", "average_incremental_accuracy", "forgetting",
             "backward_transfer", "plasticity")
    assert set(out) == {f"{name}/{view}" for name in basic for view in ("class", "task")}
    assert close(out["forgetting/class"], 0.325)
    assert close(out["final_average_accuracy/class"], 0.65)


def test_compute_metrics_full_key_set_and_values():
    record = _record(
        acc={"class": ACC, "task": np.full((3, 3), np.nan)},
        initial={"class": INITIAL}, reference={"class": REFERENCE},
        predictions={"class": PREDICTIONS}, targets=TARGETS, test_task=TEST_TASK)
    out = M.compute_metrics(record)
    assert list(out) == [f"{name}/class" for name in M.METRIC_NAMES]   # all-NaN task view skipped
    assert close(out["forward_transfer/class"], -0.02 / 3)
    assert close(out["forward_transfer_gem/class"], 0.05)
    assert close(out["negative_flip_rate/class"], 0.375)
    assert close(out["positive_flip_rate/class"], 0.125)
    assert all(isinstance(v, float) for v in out.values())


def test_compute_metrics_views_argument_and_missing_view():
    out = M.compute_metrics(_record(acc={"task": ACC}), views=("class", "task"))
    assert {key.split("/")[1] for key in out} == {"task"}
    assert M.compute_metrics(_record(), views=("class",)).keys() == \
        {k for k in M.compute_metrics(_record()) if k.endswith("/class")}


def test_every_scalar_metric_is_registered():
    assert set(M.METRIC_NAMES) <= set(METRICS.names())
    for name in M.METRIC_NAMES:
        entry = METRICS.get(name)
        assert callable(entry.obj) and entry.obj is getattr(M, name)
        assert entry.summary
        assert isinstance(entry.meta["higher_is_better"], bool)
        # the declared RunRecord fields are exactly the function's arguments, in order
        params = list(inspect.signature(entry.obj).parameters)
        assert list(entry.meta["needs"]) == params
        assert all(hasattr(_record(), field) for field in entry.meta["needs"])
    assert METRICS.get("forgetting").meta["higher_is_better"] is False
    assert METRICS.get("negative_flip_rate").meta["higher_is_better"] is False
    assert METRICS.get("backward_transfer").meta["higher_is_better"] is True


def test_final_example_accuracy_weighs_examples_not_experiences():
    import numpy as np

    from palimpsest.evaluate import metrics as M
    targets = np.array([0] * 100 + [1] * 300)
    last = np.concatenate([np.r_[np.zeros(90), np.full(10, 5)], np.r_[np.ones(150), np.full(150, 5)]]).astype(int)
    acc = np.array([[0.9, 0.5]])
    assert M.final_average_accuracy(acc) == 0.70
    assert M.final_example_accuracy([last], targets) == 0.60    # the worked example of docs/METRICS.md
    assert np.isnan(M.final_example_accuracy([np.full(400, -1)], targets))
