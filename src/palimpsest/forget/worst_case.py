"""Worst-case forget sets: Fan et al., "Challenging Forgets: Unveiling the Worst-Case Forget Sets in
Machine Unlearning" (ECCV 2024).

The forget set a benchmark draws at random is rarely the one that is hard to unlearn. The paper
finds the hardest one by bi-level optimisation: the upper level chooses data-selection weights w
over a pool of training examples (a forget set of size k), the lower level unlearns that weighted
set; the upper objective is the forget loss AFTER unlearning, minimised (the set the unlearning
leaves best remembered). Like the paper we relax w to [0, 1] with sum k, take projected gradient
steps on it, and keep the k largest weights.

    lower level  θ(w) = θ0 + η Σ_t ∇θ (1/k) Σ_i w_i ℓ_i(θ_t)       (`inner_steps` unrolled ascent steps:
                                                                   gradient ascent, the simplest unlearner)
    upper level  min_w  (1/k) Σ_i w_i ℓ_i(θ(w))                      (the forget loss after unlearning)

The hypergradient dL/dw is exact through the unrolled steps (torch autograd, second order through
`torch.func.functional_call`). The selected set is then the forget request (`kind: indices`) of an
unlearning experiment next to a random set of the same size (benchmarks/bench_worst_case.py).

Departures: the paper's lower level is the unlearning method under test (or a proxy) solved to
convergence with an implicit-gradient approximation; ours is a few unrolled gradient-ascent steps
on one model, the same worst case for every method (a proxy: whether it transfers to the others is
what the benchmark measures); no entropy regulariser: projected gradient descent with steps normalised by the largest
hypergradient entry (`outer_lr` is the largest change of one weight per step).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..core.errors import ConfigError


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


def worst_case_forget_set(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, size: int, *,
                          pool: np.ndarray | None = None, outer_steps: int = 30, outer_lr: float = 0.2,
                          inner_steps: int = 3, inner_lr: float = 0.05, seed: int = 0,
                          device="cpu") -> dict:
    """Indices (into `inputs`) of a forget set of `size` examples that unlearning by gradient ascent
    leaves best remembered, chosen from `pool` (default: every example). Returns {"indices",
    "weights" (over the pool), "objective" (the upper loss per outer step), "pool"}."""
    pool = np.arange(len(targets)) if pool is None else np.asarray(pool)
    if not 0 < size < len(pool):
        raise ConfigError("the worst-case forget set must be smaller than its pool and non-empty",
                          expected=f"1 <= size < {len(pool)}", got=size, fix="lower size or enlarge the pool")
    model = model.to(device).eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    x = inputs[torch.as_tensor(pool)].to(device)
    y = targets[torch.as_tensor(pool)].to(device)
    w = torch.full((len(pool),), size / len(pool), device=device)
    history = []

    def losses(p) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (x,))
        return F.cross_entropy(torch.nan_to_num(logits, neginf=-1e4), y, reduction="none")

    for _ in range(outer_steps):
        w = w.detach().requires_grad_(True)
        p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        for _ in range(inner_steps):   # the lower level: gradient ascent on the weighted forget loss
            inner = (w * losses(p)).sum() / size
            grads = torch.autograd.grad(inner, list(p.values()), create_graph=True)
            p = {n: v + inner_lr * g for (n, v), g in zip(p.items(), grads)}
        upper = (w * losses(p)).sum() / size
        (grad_w,) = torch.autograd.grad(upper, w)
        history.append(float(upper.detach()))
        # a step of at most outer_lr per weight (the raw hypergradient scales with 1/size)
        w = _project(w.detach() - outer_lr * grad_w / grad_w.abs().max().clamp(min=1e-12), size)
    chosen = torch.topk(w, size).indices.cpu().numpy()
    return {"indices": np.sort(pool[chosen]), "weights": w.cpu().numpy(), "objective": history, "pool": pool}


def forget_loss_after_ascent(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray,
                             steps: int = 3, lr: float = 0.05) -> float:
    """The lower level evaluated for one set: its mean loss after `steps` gradient-ascent steps on it
    (what the selection minimises; lower = better remembered after unlearning)."""
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    idx = torch.as_tensor(indices)
    x, y = inputs[idx], targets[idx]

    def loss(p):
        return F.cross_entropy(torch.nan_to_num(functional_call(model, (p, buffers), (x,)), neginf=-1e4), y)

    for _ in range(steps):
        grads = torch.autograd.grad(loss(params), list(params.values()))
        params = {n: (v + lr * g).detach().requires_grad_(True) for (n, v), g in zip(params.items(), grads)}
    with torch.no_grad():
        return float(loss(params))


__all__ = ["forget_loss_after_ascent", "worst_case_forget_set"]
