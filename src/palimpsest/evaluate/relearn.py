"""Relearning audit: how fast does a few-shot fine-tune bring forgotten knowledge back?

An unlearned model that only suppressed its outputs ("shallow forgetting") recovers the forgotten
data after a handful of gradient steps on a few forgotten examples; a model that truly never
learned it (the retrained model) needs many more. From "Unforgettable Generalization in Language
Models" (Zhang et al., 2024) and the relearning audit of latent adversarial training (Sheshadri
et al., "Latent Adversarial Training Improves Robustness to Persistent Harmful Behaviors in
LLMs", 2024). Always compare with the retrained model's curve (`compare_relearning`).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.seeding import derive_seed
from ..data.batch import Batch
from ..train.config import TrainingConfig
from ..train.loop import LossHooks, run_loop

RECIPE = TrainingConfig()  # the loop's plain defaults: fp32, no accumulation, clipping or schedule


@dataclass
class RelearnCurve:
    """accuracy[s] = accuracy on the evaluation set after s fine-tuning steps (s = 0 is before
    any step); control_accuracy[s] the same on the control set (empty without one); loss[s] =
    training loss of step s's batch (before its update); chosen / chosen_retain = indices into
    the forget / retain set that were fine-tuned on."""

    accuracy: np.ndarray
    control_accuracy: np.ndarray
    loss: np.ndarray
    chosen: np.ndarray
    chosen_retain: np.ndarray
    lr: float
    steps: int

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    if not len(y):
        return float("nan")
    correct = 0
    for start in range(0, len(y), batch_size):
        correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    return correct / len(y)


def relearn(model: torch.nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, n_examples: int = 10,
            steps: int = 30, lr: float = 0.03, eval_x: torch.Tensor | None = None,
            eval_y: torch.Tensor | None = None, *, retain_x: torch.Tensor | None = None,
            retain_y: torch.Tensor | None = None, n_retain: int = 0, control_x: torch.Tensor | None = None,
            control_y: torch.Tensor | None = None, momentum: float = 0.0, train_mode: bool = False,
            seed: int = 0, eval_batch_size: int = 2048, device: torch.device | str | None = None) -> RelearnCurve:
    """Fine-tune a COPY of `model` on `n_examples` forget examples (drawn with `seed`) and record
    the accuracy on (eval_x, eval_y) before and after each step. `model` is not modified.

    Each step is one full-batch SGD update (learning rate `lr`, `momentum`) with cross-entropy on
    the chosen forget examples plus `n_retain` retain examples (retain_x, retain_y), if given.
    The evaluation set defaults to the forget examples that were NOT chosen; for class
    forgetting the test examples of the forgotten class are a good choice.

    Class forgetting: fine-tuning on examples of one class alone lets ANY model "recover" it by
    predicting that class everywhere (its other-class accuracy collapses within a few steps).
    Mix in retain examples (n_retain = n_examples) and pass the other classes' test examples as
    (control_x, control_y): their accuracy is recorded as control_accuracy, so a degenerate
    recovery is visible.

    train_mode=False (default) fine-tunes in eval mode, so BatchNorm statistics are not
    re-estimated from a 10-example batch and dropout is off: the audit measures what the weights
    still encode.

    Defaults (lr 0.03, no momentum) come from a sanity check with the small CNN on Fashion-MNIST:
    momentum 0.9 overshoots and collapses the control accuracy. Cost: `steps` updates on
    n_examples + n_retain examples, plus steps + 1 forward passes over the evaluation and control
    sets; keep those to about a thousand examples each on a CPU.
    """
    forget_y = torch.as_tensor(forget_y, dtype=torch.long)
    if not 1 <= n_examples <= len(forget_y):
        raise ConfigError("n_examples must be between 1 and the size of the forget set",
                          expected=f"1..{len(forget_y)}", got=n_examples)
    if steps < 0 or lr <= 0:
        raise ConfigError("relearning needs steps >= 0 and lr > 0", expected="e.g. steps=30, lr=0.03",
                          got=f"steps={steps}, lr={lr}")
    rng = np.random.default_rng(derive_seed("relearn", seed))
    chosen = np.sort(rng.choice(len(forget_y), size=n_examples, replace=False))
    chosen_retain = np.zeros(0, dtype=np.int64)
    if n_retain:
        if retain_x is None or retain_y is None or not 0 < n_retain <= len(retain_y):
            raise ConfigError("n_retain needs retain_x / retain_y with at least n_retain examples",
                              expected="retain_x, retain_y and 0 <= n_retain <= len(retain_y)",
                              got=f"n_retain={n_retain}, retain set of {0 if retain_y is None else len(retain_y)}")
        chosen_retain = np.sort(rng.choice(len(retain_y), size=n_retain, replace=False))
    if (control_x is None) != (control_y is None):
        raise ConfigError("control_x and control_y go together", expected="both or neither",
                          got=f"control_x={'set' if control_x is not None else None}, "
                              f"control_y={'set' if control_y is not None else None}")
    if eval_x is None:
        rest = np.setdiff1d(np.arange(len(forget_y)), chosen)
        if not len(rest):
            raise ConfigError("no forget examples left to evaluate relearning on",
                              expected="eval_x / eval_y, or a forget set larger than n_examples",
                              got=f"{len(forget_y)} forget examples, n_examples={n_examples}")
        eval_x, eval_y = forget_x[torch.from_numpy(rest)], forget_y[torch.from_numpy(rest)]
    elif eval_y is None:
        raise ConfigError("eval_x was given without eval_y", expected="both or neither", got="eval_y=None")
    eval_y = torch.as_tensor(eval_y, dtype=torch.long)
    if device is None:
        device = next(model.parameters()).device
    student = copy.deepcopy(model).to(device)
    student.train(train_mode)
    x, y = forget_x[torch.from_numpy(chosen)], forget_y[torch.from_numpy(chosen)]
    if n_retain:
        pick = torch.from_numpy(chosen_retain)
        x = torch.cat([x, retain_x[pick]])
        y = torch.cat([y, torch.as_tensor(retain_y, dtype=torch.long)[pick]])
    x, y = x.to(device), y.to(device)
    eval_x, eval_y = eval_x.to(device), eval_y.to(device)
    if control_x is not None:
        control_x, control_y = control_x.to(device), torch.as_tensor(control_y, dtype=torch.long).to(device)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    accuracy, control, losses = [], [], []
    batch = Batch(inputs=x, targets=y)

    def evaluate() -> None:
        was = student.training
        student.eval()
        accuracy.append(_accuracy(student, eval_x, eval_y, eval_batch_size))
        if control_x is not None:
            control.append(_accuracy(student, control_x, control_y, eval_batch_size))
        student.train(was)

    def loss(b, values):
        values["loss"] = F.cross_entropy(student(b["inputs"]), b["targets"])
        return values["loss"]

    def after_step(b, values):
        losses.append(float(values["loss"].detach()))
        evaluate()

    evaluate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("relearn_dropout", seed))
        run_loop(LossHooks(loss, after_step=after_step), opt, (batch for _ in range(steps)), RECIPE, device)
    return RelearnCurve(np.asarray(accuracy), np.asarray(control), np.asarray(losses), chosen, chosen_retain,
                        float(lr), int(steps))


def _curve(curve) -> np.ndarray:
    return np.asarray(curve.accuracy if isinstance(curve, RelearnCurve) else curve, dtype=float)


def steps_to_recover(curve, threshold: float) -> int | None:
    """The first step s with accuracy[s] >= threshold (0 = already there before fine-tuning);
    None when the curve never reaches it. `curve` is a RelearnCurve or its accuracy array."""
    acc = _curve(curve)
    hits = np.flatnonzero(acc >= threshold)
    return int(hits[0]) if len(hits) else None


def compare_relearning(curve, reference_curve, threshold: float) -> dict[str, float | int | None]:
    """An unlearned model's relearning curve against the retrained model's (same examples, steps
    and learning rate).

    steps / reference_steps: steps_to_recover of each (None = never); mean_accuracy_gap:
    mean_s (acc[s] − reference_acc[s]) over the common steps, positive when the unlearned model
    relearns faster (shallow forgetting); final_accuracy_gap: the same at the last common step."""
    acc, ref = _curve(curve), _curve(reference_curve)
    n = min(len(acc), len(ref))
    if n == 0:
        raise ConfigError("empty relearning curve", expected="at least the step-0 accuracy", got="[]")
    diff = acc[:n] - ref[:n]
    return {"steps": steps_to_recover(acc, threshold), "reference_steps": steps_to_recover(ref, threshold),
            "mean_accuracy_gap": float(np.mean(diff)), "final_accuracy_gap": float(diff[-1])}


__all__ = ["RelearnCurve", "compare_relearning", "relearn", "steps_to_recover"]
