"""Continual-learning metrics as pure numpy functions over stored results.

Every function reads what a run stores (the accuracy matrix, the training schedule, raw
predictions) and returns a number; nothing here touches a model, so any metric can be recomputed
from a results database (the design of torchmetrics' functional API and of Continuum).

Notation (docs/METRICS.md writes each formula once, with a worked example):

- ``acc`` is an (S, T) matrix: row s = after training step s, column j = test experience j.
- ``step_tasks[s]`` lists the task ids step s trained on.
- ℓ_j = the first step whose ``step_tasks`` contains j; a task never trained has no ℓ_j.

Undefined values are NaN, never an exception: forgetting of a single-row matrix (joint training),
flip rates of a one-step run, a metric whose only inputs are NaN. Malformed inputs (a schedule
whose length is not S, a task id outside the matrix) do raise ConfigError.

Metric names differ between frameworks (Avalanche's "forgetting" is the negative of GEM's backward
transfer on a plain stream, Chaudhry's is max-over-earlier minus final); each function here is
named after the one quantity it computes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np

from ..core.errors import ConfigError, PalimpsestError, close_matches, did_you_mean
from ..core.registry import METRICS
from .records import RunRecord

StepTasks = Sequence[Sequence[int]]

# -- helpers -----------------------------------------------------------------------------------


def _matrix(acc: np.ndarray) -> np.ndarray:
    out = np.asarray(acc, dtype=float)
    if out.ndim != 2:
        raise ConfigError(
            "accuracy matrix must be two-dimensional",
            expected="(S, T) array: row s = after step s, column j = test experience j",
            got=f"array of shape {out.shape}",
            fix="pass RunRecord.acc[view], or np.atleast_2d(row) for a single step")
    return out


def _nanmean(values: np.ndarray | Sequence[float]) -> float:
    """Mean of the non-NaN entries; NaN (without numpy's RuntimeWarning) when there are none."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _nanmax(values: np.ndarray) -> float:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    return float(arr.max()) if arr.size else float("nan")


def first_trained_step(step_tasks: StepTasks, n_tasks: int, n_steps: int | None = None) -> np.ndarray:
    """ℓ_j for every task j: the first step whose schedule contains j, -1 if j is never trained.

    Raises ConfigError when the schedule does not match the matrix (wrong length, task id outside
    0..T-1), because every metric would silently read the wrong cells otherwise.
    """
    if n_steps is not None and len(step_tasks) != n_steps:
        raise ConfigError(
            "step_tasks does not match the accuracy matrix",
            expected=f"one list of task ids per row of the matrix ({n_steps} rows)",
            got=f"{len(step_tasks)} entries: {list(step_tasks)!r}",
            fix="pass RunRecord.step_tasks of the same run as the matrix")
    first = np.full(n_tasks, -1, dtype=int)
    for step, tasks in enumerate(step_tasks):
        for task in tasks:
            task = int(task)
            if not 0 <= task < n_tasks:
                raise ConfigError(
                    f"step {step} trains task {task}, which has no column in the accuracy matrix",
                    expected=f"task ids in 0..{n_tasks - 1}",
                    got=list(tasks),
                    fix="check that the matrix has one column per test experience")
            if first[task] < 0:
                first[task] = step
    return first


def _reference_vector(values: np.ndarray, n_tasks: int, name: str) -> np.ndarray:
    out = np.asarray(values, dtype=float).ravel()
    if out.shape != (n_tasks,):
        raise ConfigError(
            f"{name} has the wrong length",
            expected=f"one accuracy per test experience ({n_tasks} values)",
            got=f"array of shape {np.shape(values)}",
            fix=f"pass RunRecord.{name}[view] of the same run as the matrix")
    return out


# -- accuracy-matrix metrics -------------------------------------------------------------------


def final_average_accuracy(acc: np.ndarray) -> float:
    """Mean accuracy over all test experiences after the last step.

    A_final = (1/T) Σ_j acc[S-1, j], NaN entries left out; NaN when the last row has none.
    This is the "average accuracy" of GEM (Lopez-Paz & Ranzato, "Gradient Episodic Memory for
    Continual Learning", 2017) and of Mammoth's final report. Every column counts, including tasks
    the run has not trained yet.
    """
    matrix = _matrix(acc)
    if matrix.shape[0] == 0:
        return float("nan")
    return _nanmean(matrix[-1])


def final_example_accuracy(predictions: Sequence[np.ndarray], targets: np.ndarray) -> float:
    """Accuracy over all test examples after the last step (each example weighs the same).

    A_examples = (1/N) Σ_n [pred_{S-1}(x_n) = y_n]. Equal to `final_average_accuracy` when every test
    experience has the same size; with uneven experiences (4 classes, then 2, 2, 2) the larger ones
    weigh more here. NaN without predictions, or when the last step's prediction is undefined (-1,
    a multi-head model's class-IL view).
    """
    if not len(predictions) or targets is None or not len(targets):
        return float("nan")
    last = np.asarray(predictions[-1])
    if (last < 0).any():
        return float("nan")
    return float((last == np.asarray(targets)).mean())


def average_incremental_accuracy(acc: np.ndarray, step_tasks: StepTasks) -> float:
    """Mean over steps of the mean accuracy on the tasks seen so far.

    AIA = (1/S) Σ_s [ mean_{j: ℓ_j <= s} acc[s, j] ], NaN entries and steps with no defined
    value left out. Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning",
    2017 (there computed over all test examples seen so far; equal to this mean of task
    accuracies when test experiences have equal size).
    """
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    seen = first >= 0
    per_step = [_nanmean(matrix[s, seen & (first <= s)]) for s in range(n_steps)]
    return _nanmean(per_step)


def forgetting_per_experience(acc: np.ndarray, step_tasks: StepTasks) -> np.ndarray:
    """Forgetting of each task: best earlier accuracy minus final accuracy, shape (T,).

    f_j = max_{ℓ_j <= s < S-1} acc[s, j] − acc[S-1, j] for tasks with ℓ_j < S-1, NaN otherwise
    (a task trained only at the last step, never trained, or a single-row matrix). NaN entries
    are left out of the max. Chaudhry et al., "Riemannian Walk for Incremental Learning:
    Understanding Forgetting and Intransigence", 2018; the definition used by Mammoth, PyCIL,
    Renate and Continuum.
    """
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    out = np.full(n_tasks, np.nan)
    for j in range(n_tasks):
        if 0 <= first[j] < n_steps - 1:
            out[j] = _nanmax(matrix[first[j]:n_steps - 1, j]) - matrix[-1, j]
    return out


def forgetting(acc: np.ndarray, step_tasks: StepTasks) -> float:
    """Average forgetting (Chaudhry et al., 2018): mean of ``forgetting_per_experience``.

    F = mean_{j: ℓ_j < S-1} [ max_{ℓ_j <= s < S-1} acc[s, j] − acc[S-1, j] ]; NaN if no task
    has a defined value (e.g. joint training's single row). Lower is better. Not Avalanche's
    "forgetting", which is −backward_transfer on a plain stream.
    """
    return _nanmean(forgetting_per_experience(acc, step_tasks))


def backward_transfer(acc: np.ndarray, step_tasks: StepTasks) -> float:
    """Backward transfer: final accuracy minus accuracy right after first learning, averaged.

    BWT = mean_{j: ℓ_j < S-1} ( acc[S-1, j] − acc[ℓ_j, j] ). Lopez-Paz & Ranzato, "Gradient
    Episodic Memory for Continual Learning", 2017. Negative values mean forgetting. Avalanche's
    "forgetting" metric (accuracy right after learning minus final accuracy) equals −BWT on a
    plain stream (every task trained exactly once).
    """
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    tasks = np.flatnonzero((first >= 0) & (first < n_steps - 1))
    return _nanmean(matrix[-1, tasks] - matrix[first[tasks], tasks])


def forward_transfer(acc: np.ndarray, step_tasks: StepTasks, reference: np.ndarray | None) -> float:
    """Forward transfer against a from-scratch reference.

    FWT = mean_{j trained} ( acc[ℓ_j, j] − reference[j] ), where reference[j] is the accuracy
    on task j of a model trained from scratch on task j alone: positive when earlier tasks made
    task j easier to learn. The form used by Ke, Liu & Huang, "Continual Learning of a Mixed
    Sequence of Similar and Dissimilar Tasks", 2020 (Continual World, Wołczyk et al. 2021, uses
    the same single-task reference on training curves). NaN when ``reference`` is None.
    """
    if reference is None:
        return float("nan")
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    ref = _reference_vector(reference, n_tasks, "reference")
    tasks = np.flatnonzero(first >= 0)
    return _nanmean(matrix[first[tasks], tasks] - ref[tasks])


def forward_transfer_gem(acc: np.ndarray, step_tasks: StepTasks, initial: np.ndarray | None) -> float:
    """GEM's forward transfer: accuracy on a task just before learning it, minus chance level.

    FWT_GEM = mean_{j: ℓ_j >= 1} ( acc[ℓ_j − 1, j] − initial[j] ), where initial[j] is the
    accuracy of the randomly initialised model (before any training) on task j. Lopez-Paz &
    Ranzato, "Gradient Episodic Memory for Continual Learning", 2017. NaN when ``initial`` is
    None or no task is first learned after step 0 (joint training).
    """
    if initial is None:
        return float("nan")
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    init = _reference_vector(initial, n_tasks, "initial")
    tasks = np.flatnonzero(first >= 1)
    return _nanmean(matrix[first[tasks] - 1, tasks] - init[tasks])


def plasticity(acc: np.ndarray, step_tasks: StepTasks) -> float:
    """Learning accuracy: mean accuracy on each task right after first learning it.

    LA = mean_{j trained} acc[ℓ_j, j]. Riemer et al., "Learning to Learn without Forgetting by
    Maximizing Transfer and Minimizing Interference", 2019.
    """
    matrix = _matrix(acc)
    n_steps, n_tasks = matrix.shape
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    tasks = np.flatnonzero(first >= 0)
    return _nanmean(matrix[first[tasks], tasks])


# -- prediction-level metrics ------------------------------------------------------------------


def flip_rates_between(pred_a: np.ndarray, pred_b: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Negative and positive flip rates from model a to model b on the same examples.

    NFR = (1/N) Σ_i 1[a_i = y_i and b_i ≠ y_i] (right, then wrong);
    PFR = (1/N) Σ_i 1[a_i ≠ y_i and b_i = y_i] (wrong, then right).
    Yan et al., "Positive-Congruent Training: Towards Regression-Free Model Updates", 2021.
    Examples where either prediction is negative (the evaluator's "undefined", e.g. class-IL
    predictions of a multi-head model) are left out; NaN when no example remains. For unlearning,
    a = the model before, b = after (or a = the retrained oracle, b = the unlearned model).
    """
    a, b, y = (np.asarray(v).ravel() for v in (pred_a, pred_b, targets))
    if not a.shape == b.shape == y.shape:
        raise ConfigError(
            "predictions and targets differ in length",
            expected="pred_a, pred_b and targets with one entry per test example",
            got=f"lengths {a.size}, {b.size}, {y.size}",
            fix="evaluate both models on the same test set")
    defined = (a >= 0) & (b >= 0)
    if not defined.any():
        return float("nan"), float("nan")
    a, b, y = a[defined], b[defined], y[defined]
    right_a, right_b = a == y, b == y
    return float(np.mean(right_a & ~right_b)), float(np.mean(~right_a & right_b))


def flip_rates(predictions: Sequence[np.ndarray], targets: np.ndarray, test_task: np.ndarray,
               step_tasks: StepTasks) -> tuple[float, float]:
    """(negative_flip_rate, positive_flip_rate) averaged over consecutive training steps.

    For each pair (s−1, s), s = 1..S−1, over test examples of tasks with ℓ_j <= s−1:
    NFR_s = fraction right under model s−1 and wrong under model s; PFR_s = wrong then right.
    Returns (mean_s NFR_s, mean_s PFR_s), pairs with no defined value left out; NaN when S < 2.
    Renate's flip rates; Yan et al., "Positive-Congruent Training: Towards Regression-Free
    Model Updates", 2021.
    """
    targets = np.asarray(targets).ravel()
    test_task = np.asarray(test_task).ravel()
    n_steps = len(predictions)
    if n_steps < 2:
        return float("nan"), float("nan")
    if test_task.shape != targets.shape:
        raise ConfigError(
            "test_task and targets differ in length",
            expected="one task id and one target per test example",
            got=f"lengths {test_task.size} and {targets.size}",
            fix="pass RunRecord.targets and RunRecord.test_task of the same run")
    n_tasks = int(max(test_task.max(initial=-1), max((max(t, default=-1) for t in step_tasks),
                                                      default=-1))) + 1
    first = first_trained_step(step_tasks, n_tasks, n_steps)
    negative, positive = [], []
    for s in range(1, n_steps):
        old_tasks = np.flatnonzero((first >= 0) & (first <= s - 1))
        rows = np.isin(test_task, old_tasks)
        nfr, pfr = flip_rates_between(np.asarray(predictions[s - 1]).ravel()[rows],
                                      np.asarray(predictions[s]).ravel()[rows], targets[rows])
        negative.append(nfr)
        positive.append(pfr)
    return _nanmean(negative), _nanmean(positive)


def negative_flip_rate(predictions: Sequence[np.ndarray], targets: np.ndarray, test_task: np.ndarray,
                       step_tasks: StepTasks) -> float:
    """Mean share of old-task test examples that go from right to wrong between steps (NFR)."""
    return flip_rates(predictions, targets, test_task, step_tasks)[0]


def positive_flip_rate(predictions: Sequence[np.ndarray], targets: np.ndarray, test_task: np.ndarray,
                       step_tasks: StepTasks) -> float:
    """Mean share of old-task test examples that go from wrong to right between steps (PFR)."""
    return flip_rates(predictions, targets, test_task, step_tasks)[1]


# -- registry and the one-call summary ---------------------------------------------------------

# (name, function, summary, higher_is_better, the RunRecord fields it reads, in argument order)
_SCALAR_METRICS: tuple[tuple[str, Callable[..., float], str, bool, tuple[str, ...]], ...] = (
    ("final_average_accuracy", final_average_accuracy,
     "mean accuracy over all test experiences after the last step", True, ("acc",)),
    ("final_example_accuracy", final_example_accuracy,
     "accuracy over all test examples after the last step (each example weighs the same)", True,
     ("predictions", "targets")),
    ("average_incremental_accuracy", average_incremental_accuracy,
     "mean over steps of accuracy on the tasks seen so far (iCaRL)", True, ("acc", "step_tasks")),
    ("forgetting", forgetting,
     "mean of best earlier accuracy minus final accuracy (Chaudhry et al. 2018)", False,
     ("acc", "step_tasks")),
    ("backward_transfer", backward_transfer,
     "mean of final accuracy minus accuracy right after learning (GEM BWT)", True, ("acc", "step_tasks")),
    ("plasticity", plasticity,
     "mean accuracy on each task right after learning it (learning accuracy)", True, ("acc", "step_tasks")),
    ("forward_transfer", forward_transfer,
     "accuracy right after learning minus a from-scratch single-task model", True,
     ("acc", "step_tasks", "reference")),
    ("forward_transfer_gem", forward_transfer_gem,
     "accuracy just before learning a task minus the untrained model's (GEM FWT)", True,
     ("acc", "step_tasks", "initial")),
    ("negative_flip_rate", negative_flip_rate,
     "share of old-task examples going right -> wrong between steps", False,
     ("predictions", "targets", "test_task", "step_tasks")),
    ("positive_flip_rate", positive_flip_rate,
     "share of old-task examples going wrong -> right between steps", True,
     ("predictions", "targets", "test_task", "step_tasks")),
)

METRIC_NAMES: tuple[str, ...] = tuple(name for name, *_ in _SCALAR_METRICS)

for _name, _fn, _summary, _higher, _needs in _SCALAR_METRICS:
    METRICS.register(_name, summary=_summary, higher_is_better=_higher, needs=_needs)(_fn)


def compute_metrics(record: RunRecord, views: Sequence[str] = ("class", "task")) -> dict[str, float]:
    """Every scalar metric for every view the record holds, keyed "<metric>/<view>".

    A view is skipped when the record has no matrix for it or its matrix is all NaN (e.g. class-IL
    for a multi-head model). forward_transfer needs record.reference[view], forward_transfer_gem
    record.initial[view], the flip rates record.predictions[view] with targets and test_task;
    each is left out when its input is missing. Keys follow METRIC_NAMES order within a view.
    """
    out: dict[str, float] = {}
    for view in views:
        if view not in record.acc:
            continue
        matrix = _matrix(record.acc[view])
        if matrix.size == 0 or np.isnan(matrix).all():
            continue
        steps = record.step_tasks
        values: dict[str, float] = {
            "final_average_accuracy": final_average_accuracy(matrix),
            "average_incremental_accuracy": average_incremental_accuracy(matrix, steps),
            "forgetting": forgetting(matrix, steps),
            "backward_transfer": backward_transfer(matrix, steps),
            "plasticity": plasticity(matrix, steps),
        }
        if record.reference is not None and view in record.reference:
            values["forward_transfer"] = forward_transfer(matrix, steps, record.reference[view])
        if record.initial is not None and view in record.initial:
            values["forward_transfer_gem"] = forward_transfer_gem(matrix, steps, record.initial[view])
        if (record.predictions is not None and view in record.predictions
                and record.targets is not None and record.test_task is not None):
            values["final_example_accuracy"] = final_example_accuracy(record.predictions[view], record.targets)
            nfr, pfr = flip_rates(record.predictions[view], record.targets, record.test_task, steps)
            values["negative_flip_rate"], values["positive_flip_rate"] = nfr, pfr
        for name in METRIC_NAMES:
            if name in values:
                out[f"{name}/{view}"] = values[name]
        for name, value in registered_metrics(record, view, matrix).items():
            out[f"{name}/{view}"] = value
    return out


METRIC_INPUTS = ("acc", "step_tasks", "targets", "test_task", "predictions", "reference", "initial")


def _inputs(record: RunRecord, view: str, matrix: np.ndarray) -> dict:
    """What a registered metric may read (its `needs`), for one view; missing inputs are left out."""
    per_view = {"predictions": record.predictions, "reference": record.reference, "initial": record.initial}
    out = {"acc": matrix, "step_tasks": record.step_tasks, "targets": record.targets, "test_task": record.test_task}
    out.update({k: v[view] for k, v in per_view.items() if v is not None and view in v})
    return {k: v for k, v in out.items() if v is not None}


def registered_metrics(record: RunRecord, view: str, matrix: np.ndarray) -> dict[str, float]:
    """Metrics registered beyond the built-in ones (a plugin's, docs/guides/metric.md): each is called
    with the RunRecord fields its registration names in `needs`, in that order, and left out when
    one of them is missing. Metrics of other experiment kinds (`kind=...`) are skipped."""
    out: dict[str, float] = {}
    inputs = _inputs(record, view, matrix)
    for entry in METRICS.entries():
        needs = entry.meta.get("needs")
        if entry.name in METRIC_NAMES or entry.meta.get("kind") not in (None, "learn") or not needs:
            continue
        unknown = [n for n in needs if n not in METRIC_INPUTS]
        if unknown:
            close = close_matches(unknown[0], METRIC_INPUTS, n=1)
            raise ConfigError(f"metric {entry.name!r} needs {unknown}, which runs do not store",
                              expected=f"needs among {list(METRIC_INPUTS)}", got=list(needs),
                              fix=did_you_mean(close) if close else "see docs/guides/metric.md")
        if not all(n in inputs for n in needs):
            continue
        try:
            out[entry.name] = float(entry.obj(*(inputs[n] for n in needs)))
        except PalimpsestError:
            raise
        except Exception as err:
            raise PalimpsestError(f"metric {entry.name!r} failed on run {record.strategy} seed {record.seed} "
                                  f"({view} view)", expected="a number computed from the stored results",
                                  got=f"{type(err).__name__}: {err}",
                                  fix=f"fix the function registered as {entry.name!r}") from err
    return out


__all__ = [
    "METRIC_INPUTS", "METRIC_NAMES", "average_incremental_accuracy", "backward_transfer", "compute_metrics",
    "final_average_accuracy", "final_example_accuracy", "first_trained_step", "flip_rates", "flip_rates_between", "forgetting",
    "forgetting_per_experience", "forward_transfer", "forward_transfer_gem", "negative_flip_rate",
    "plasticity", "positive_flip_rate", "registered_metrics",
]
