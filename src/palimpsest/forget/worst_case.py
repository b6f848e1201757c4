"""Worst-case forget sets: Fan et al., "Challenging Forgets: Unveiling the Worst-Case Forget Sets in
Machine Unlearning" (ECCV 2024; reference code OPTML-Group/Unlearn-WorstCase, data-wise).

The forget set a benchmark draws at random is rarely the one that is hard to unlearn. The paper
finds the hardest one by bi-level optimisation: the upper level chooses data-selection weights w
over a pool of training examples (a forget set of size k), the lower level unlearns that weighted
set. Like the paper we relax w to [0, 1] with sum k, take projected gradient steps on it
(bisection projection, as the reference code's `utils.bisection`), and keep the k largest weights.

    lower level  θ(w) = θ0 − η Σ_t ∇θ L_low(θ_t; w)        (`inner_steps` unrolled full-batch steps)
                 L_low = −a (1/k) Σ_i w_i ℓ_i + b (1/(n−k)) Σ_i (1 − w_i) ℓ_i
                 `lower`: gradient_ascent (a=1, b=0), finetune (a=0, b=1), neggrad_plus (a=b=1)
    upper level, `objective`:
      retrain_gap (default)  min_w (1/k) Σ_i w_i (q_i − p_i(θ(w)))
                             p_i = the unlearned model's probability of the true label, q_i = the
                             probability models that did NOT train on example i give it
                             (`evaluate.mia.out_of_training_confidence`: the mean over the per-example attack's
                             reference models that left i out; what retraining without the set
                             would give). The set the unlearning leaves farthest above retraining:
                             memorised, atypical examples that retraining gets wrong and that the
                             lower level fails to remove.
      forget_loss (the paper's)  min_w (1/k) Σ_i w_i ℓ_i(θ(w))   (the forget loss after unlearning)

Why retrain_gap: measured on the memorising Fashion-MNIST MLP (FEATURES, Unlearning II), the
paper's objective picks typical images (trousers, footwear) that every model classifies correctly,
the retrained one included: low loss after unlearning there is generalisation, not memory, so those
sets are not harder to unlearn than random ones when the target is the retrained model. The paper
evaluates against retraining too (its gap to Retrain), but its objective only sees the unlearned
model; ours puts the retrained model's expected value into the objective.

The hypergradient dL/dw is exact through the unrolled steps (torch autograd, second order through
`torch.func.functional_call`). The selected set is then the forget request (`kind: indices`) of an
unlearning experiment next to a random set of the same size (benchmarks/bench_worst_case.py).

Departures: (1) the retrain_gap objective (above) instead of the forget loss alone; q is estimated
from reference models trained once on random halves (the audit's), not from retraining per set.
(2) The paper's lower level is the unlearning method under test run for epochs with sign-SGD and a
first-order hypergradient (the reference code takes each example's loss after unlearning as
∂/∂w_i); ours is a few unrolled full-batch steps on one model with the exact hypergradient, one
worst case for every method (whether it transfers to other methods is what the benchmark measures).
(3) No ‖w‖² regulariser: projected steps normalised by the largest hypergradient entry (`outer_lr`
is the largest change of one weight per step).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..core.errors import ConfigError

OBJECTIVES = ("retrain_gap", "forget_loss")
LOWER_LEVELS = {"gradient_ascent": (1.0, 0.0), "finetune": (0.0, 1.0), "neggrad_plus": (1.0, 1.0)}


def _project(w: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean projection onto {0 <= w <= 1, sum w = k} (bisection on the shift)."""
    lo, hi = float(w.min()) - 1.0, float(w.max())
    for _ in range(60):
        mid = (lo + hi) / 2
        if float((w - mid).clamp(0, 1).sum()) > k:
            lo = mid
        else:
            hi = mid
    return (w - hi).clamp(0, 1)



def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} for the worst-case selection", expected=" or ".join(choices),
                          got=value, fix=f"pass {name}={sorted(choices)[0]!r}")


def _functional(model: nn.Module):
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def logits(p, x):
        return torch.nan_to_num(functional_call(model, (p, buffers), (x,)), neginf=-1e4)
    return logits


def _lower_step(logits, p: dict, x, y, w, size: int, lower: str, lr: float, create_graph: bool) -> dict:
    """One full-batch step of the lower level on the w-weighted pool."""
    a, b = LOWER_LEVELS[lower]
    losses = F.cross_entropy(logits(p, x), y, reduction="none")
    inner = -a * (w * losses).sum() / size
    if b:
        inner = inner + b * ((1 - w) * losses).sum() / max(len(y) - size, 1)
    grads = torch.autograd.grad(inner, list(p.values()), create_graph=create_graph)
    return {n: v - lr * g for (n, v), g in zip(p.items(), grads)}


def worst_case_forget_set(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, size: int, *,
                          objective: str = "retrain_gap", out_confidence: np.ndarray | None = None,
                          lower: str = "gradient_ascent", pool: np.ndarray | None = None, outer_steps: int = 30,
                          outer_lr: float = 0.2, inner_steps: int = 3, inner_lr: float = 0.05,
                          device="cpu") -> dict:
    """Indices (into `inputs`) of the worst-case forget set of `size` examples, chosen from `pool`
    (default: every example). objective "retrain_gap" needs `out_confidence` (one q_i per example of
    `inputs`, e.g. `evaluate.mia.out_of_training_confidence`). Returns {"indices", "weights" (over the pool),
    "objective" (the upper loss per outer step), "pool"}. Deterministic: full-batch steps from uniform
    weights, so the selection needs no seed (a run's seed enters through its original and reference models)."""
    _check_choice("objective", objective, OBJECTIVES)
    _check_choice("lower level", lower, LOWER_LEVELS)
    pool = np.arange(len(targets)) if pool is None else np.asarray(pool)
    if not 0 < size < len(pool):
        raise ConfigError("the worst-case forget set must be smaller than its pool and non-empty",
                          expected=f"1 <= size < {len(pool)}", got=size, fix="lower size or enlarge the pool")
    if objective == "retrain_gap":
        if out_confidence is None or len(out_confidence) != len(targets):
            raise ConfigError("the retrain_gap objective needs each example's out-of-training confidence",
                              expected=f"out_confidence with {len(targets)} values",
                              got=None if out_confidence is None else len(out_confidence),
                              fix="pass out_of_training_confidence(reference_models, inputs, targets), "
                                  "or objective='forget_loss'")
        q = torch.as_tensor(np.asarray(out_confidence)[pool], dtype=torch.float32, device=device)
    model = model.to(device).eval()
    logits = _functional(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = inputs[torch.as_tensor(pool)].to(device)
    y = targets[torch.as_tensor(pool)].to(device)
    w = torch.full((len(pool),), size / len(pool), device=device)
    history = []
    for _ in range(outer_steps):
        w = w.detach().requires_grad_(True)
        p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        for _ in range(inner_steps):
            p = _lower_step(logits, p, x, y, w, size, lower, inner_lr, create_graph=True)
        if objective == "forget_loss":
            per_example = F.cross_entropy(logits(p, x), y, reduction="none")
        else:
            prob = F.softmax(logits(p, x), dim=1).gather(1, y[:, None]).squeeze(1)
            per_example = q - prob
        upper = (w * per_example).sum() / size
        (grad_w,) = torch.autograd.grad(upper, w)
        history.append(float(upper.detach()))
        # a step of at most outer_lr per weight (the raw hypergradient scales with 1/size)
        w = _project(w.detach() - outer_lr * grad_w / grad_w.abs().max().clamp(min=1e-12), size)
    chosen = torch.topk(w, size).indices.cpu().numpy()
    return {"indices": np.sort(pool[chosen]), "weights": w.cpu().numpy(), "objective": history, "pool": pool}


def after_lower_level(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray, *,
                      lower: str = "gradient_ascent", pool: np.ndarray | None = None, steps: int = 3,
                      lr: float = 0.05) -> dict:
    """The lower level run on one set (`indices` forgotten, the rest of `pool` retained): the set's
    mean loss and its per-example probability of the true label afterwards."""
    _check_choice("lower level", lower, LOWER_LEVELS)
    pool = np.arange(len(targets)) if pool is None else np.asarray(pool)
    if LOWER_LEVELS[lower][1] == 0:   # gradient ascent reads the forget set only
        pool = np.asarray(indices)
    x, y = inputs[torch.as_tensor(pool)], targets[torch.as_tensor(pool)]
    w = torch.as_tensor(np.isin(pool, indices), dtype=torch.float32)
    logits = _functional(model)
    p = {n: v.detach().clone().requires_grad_(True) for n, v in model.named_parameters()}
    for _ in range(steps):
        p = {n: v.detach().requires_grad_(True)
             for n, v in _lower_step(logits, p, x, y, w, len(indices), lower, lr, create_graph=False).items()}
    idx = torch.as_tensor(np.asarray(indices))
    with torch.no_grad():
        out = logits(p, inputs[idx])
        return {"loss": float(F.cross_entropy(out, targets[idx])),
                "correct_prob": F.softmax(out, dim=1).gather(1, targets[idx][:, None]).squeeze(1).numpy()}


def forget_loss_after_ascent(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray,
                             steps: int = 3, lr: float = 0.05) -> float:
    """The paper's upper objective for one set: its mean loss after `steps` gradient-ascent steps on
    it (lower = better remembered after unlearning)."""
    return after_lower_level(model, inputs, targets, indices, steps=steps, lr=lr)["loss"]


__all__ = ["LOWER_LEVELS", "OBJECTIVES", "after_lower_level", "forget_loss_after_ascent",
           "worst_case_forget_set"]
