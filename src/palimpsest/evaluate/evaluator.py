"""One evaluation pass over every test experience gives class-IL and task-IL predictions.

Class-IL: argmax over the classes the model may predict, without the task id.
Task-IL: argmax over the test experience's own classes (Mammoth's logit masking); a multi-head
model that cannot run without task ids is given them and has no class-IL prediction (-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.scenarios import Stream


@dataclass
class Evaluation:
    """Predictions of one model on the concatenated test experiences of a stream."""

    class_pred: np.ndarray   # (N,) int, -1 where undefined
    task_pred: np.ndarray    # (N,) int
    targets: np.ndarray      # (N,) int
    test_task: np.ndarray    # (N,) which test experience each example belongs to
    seconds: float = 0.0

    def accuracy(self, view: str = "class") -> np.ndarray:
        """Accuracy per test experience (length T), NaN where undefined."""
        pred = self.class_pred if view == "class" else self.task_pred
        n_tasks = int(self.test_task.max()) + 1 if len(self.test_task) else 0
        out = np.full(n_tasks, np.nan)
        for t in range(n_tasks):
            rows = self.test_task == t
            if rows.any() and (pred[rows] >= 0).all():
                out[t] = float((pred[rows] == self.targets[rows]).mean())
        return out


@torch.no_grad()
def evaluate_stream(model: torch.nn.Module, stream: Stream, batch_size: int = 2048,
                    device: torch.device | str = "cpu") -> Evaluation:
    import time
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    needs_ids = getattr(model, "needs_task_ids", False)
    class_preds, task_preds, targets, test_task = [], [], [], []
    for exp in stream.test:
        classes = torch.tensor(exp.classes, device=device)
        name = "inputs" if "inputs" in exp.fields else exp.fields[0]
        for i in range(0, len(exp), batch_size):
            x = exp.field(name, slice(i, i + batch_size)).to(device)
            task_ids = torch.full((len(x),), exp.task_id, dtype=torch.long, device=device)
            logits = model(x, task_ids if needs_ids else None)
            if needs_ids:
                class_preds.append(torch.full((len(x),), -1, dtype=torch.long))
            else:
                class_preds.append(logits.argmax(1).cpu())
            # Task-IL: the best of the task's own classes (a tie among masked classes picks the first).
            task_preds.append(classes[logits[:, classes].argmax(1)].cpu())
        targets.append(exp.targets)
        test_task.append(torch.full((len(exp),), exp.task_id, dtype=torch.long))
    model.train(was_training)
    cat = lambda xs: torch.cat(xs).numpy().astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
    return Evaluation(cat(class_preds), cat(task_preds), cat(targets), cat(test_task), time.perf_counter() - start)
