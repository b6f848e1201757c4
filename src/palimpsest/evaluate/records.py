"""What a finished (or partial) run leaves behind, in the form the metric functions read."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunRecord:
    """Stored results of one strategy x seed run.

    acc[view]: (S, T) accuracy matrix, row s = after training step s, column j = test experience j;
      view is "class" (class-IL, no task id) or "task" (task-IL, logits masked to the task's classes).
    step_tasks[s]: the task ids whose data step s trained on ([s] in a plain stream; all tasks for
      joint training; with recurrence a task can appear at several steps).
    initial[view]: (T,) accuracy of the model before any training (for GEM's forward transfer).
    reference[view]: (T,) accuracy on task j of a model trained from scratch on task j alone.
    predictions[view]: list over steps of (N,) predicted labels on the concatenated test set;
      targets (N,) and test_task (N,) describe that test set.
    """

    strategy: str
    seed: int
    acc: dict[str, np.ndarray]
    step_tasks: list[list[int]]
    initial: dict[str, np.ndarray] | None = None
    reference: dict[str, np.ndarray] | None = None
    predictions: dict[str, list[np.ndarray]] | None = None
    targets: np.ndarray | None = None
    test_task: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
