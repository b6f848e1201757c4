"""Sparsey: superposed sparse distributed codes stored in a single trial, no gradient training.
"Superposed Episodic and Semantic Memory via Sparse Distributed Representation" (Rinkus and Leveille;
after Rinkus, "A cortical sparse distributed coding model linking mini- and macrocolumn-scale
functionality", 2010).

A macrocolumn ("mac") of Q competitive modules (CMs) of K cells each. A code is one active cell per CM
(Q of Q·K cells). Binary input units connect to every cell through binary weights, all 0 at first.

Code selection (the CSA), for a binary input x:
    V_j = Σ_i x_i W_ij / |x|                  each cell's normalised input, in [0, 1]
    G   = mean over CMs of max_j V_j          familiarity: 1 for a stored input, lower for a new one
    η   = ((G − G_0) / (1 − G_0))_+           how far G is above the familiarity of unrelated inputs
    in each CM, a winner drawn with probability ∝ exp(β · η · V_j)
A familiar input (G ≈ 1) reinstates the cells of its stored code; a novel one (G ≈ 0) gets a random
code (uniform draw), and inputs in between get codes that overlap stored ones in proportion to their
similarity: similar inputs, similar codes (the semantic part of the memory).

Storage (single trial): W_ij = 1 for every active input i and every winning cell j.
Retrieval: the winners are the max-V cells (no noise); G tells stored (familiar) from new inputs.

Departures: the CSA's sigmoid transform of V and its noise schedule are replaced by the softmax above
with the same limits (deterministic for G = 1, uniform for G <= G_0, the familiarity that unrelated
inputs reach through shared features); one mac, no hierarchy, no time.
"""
from __future__ import annotations

import torch

from ..core.errors import ConfigError


class SparseyMac:
    """One mac: `modules` CMs of `cells` cells over `inputs` binary input units."""

    def __init__(self, inputs: int, modules: int = 16, cells: int = 16, beta: float = 50.0, floor: float = 0.6,
                 seed: int = 0) -> None:
        if min(inputs, modules, cells) < 1:
            raise ConfigError("a Sparsey mac needs positive sizes", expected="inputs, modules, cells >= 1",
                              got=dict(inputs=inputs, modules=modules, cells=cells))
        if not 0 <= floor < 1:
            raise ConfigError("Sparsey's familiarity floor must be in [0, 1)", expected="0 <= floor < 1", got=floor)
        self.inputs, self.modules, self.cells, self.beta, self.floor = inputs, modules, cells, beta, floor
        self.weights = torch.zeros(inputs, modules * cells, dtype=torch.bool)
        self.generator = torch.Generator().manual_seed(seed)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.inputs:
            raise ConfigError("Sparsey inputs have the wrong shape", expected=f"(n, {self.inputs}) binary patterns",
                              got=tuple(x.shape))
        if not ((x == 0) | (x == 1)).all():
            raise ConfigError("Sparsey inputs must be binary", expected="0/1 values (threshold real inputs first)",
                              got=f"values in [{float(x.min())}, {float(x.max())}]", fix="use binarize(x)")
        return x.bool()

    def support(self, x: torch.Tensor) -> torch.Tensor:
        """V: (n, modules, cells), each cell's normalised input."""
        x = self._check(x)
        counts = x.float() @ self.weights.float()
        return (counts / x.sum(1, keepdim=True).clamp_min(1)).view(-1, self.modules, self.cells)

    def familiarity(self, x: torch.Tensor) -> torch.Tensor:
        """G in [0, 1] per input."""
        return self.support(x).amax(-1).mean(-1)

    def store(self, x: torch.Tensor) -> torch.Tensor:
        """Store each pattern in one trial, in order; returns their codes (n, modules) of cell indices."""
        codes = []
        for row in x:
            v = self.support(row.unsqueeze(0))[0]                         # (Q, K)
            g = float(v.amax(-1).mean())
            eta = max(g - self.floor, 0.0) / (1 - self.floor)
            logits = self.beta * eta * v
            winners = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator).squeeze(-1)
            cells = winners + torch.arange(self.modules) * self.cells
            active = self._check(row.unsqueeze(0))[0]
            self.weights[active.nonzero().flatten().unsqueeze(1), cells.unsqueeze(0)] = True
            codes.append(winners)
        return torch.stack(codes)

    def retrieve(self, x: torch.Tensor) -> torch.Tensor:
        """The code each input reactivates: the max-input cell of each CM (n, modules)."""
        return self.support(x).argmax(-1)


def binarize(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Sparse binary patterns from real inputs: each feature above its row's mean is one-hot coded into
    `levels` intensity bins (quantiles of those features over the batch); features at or below the mean
    (the background) are silent. (n, features x levels)."""
    flat = x.flatten(1).float()
    on = flat > flat.mean(1, keepdim=True)
    edges = torch.quantile(flat[on], torch.linspace(0, 1, levels + 1)[1:-1])
    level = torch.bucketize(flat, edges)
    out = torch.zeros(flat.shape[0], flat.shape[1], levels, dtype=torch.uint8)
    out.scatter_(2, level.unsqueeze(-1), 1)
    return (out * on.unsqueeze(-1)).flatten(1)


def code_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Share of CMs whose winners agree, for every pair: (len(a), len(b))."""
    return (a.unsqueeze(1) == b.unsqueeze(0)).float().mean(-1)


def capacity_curve(patterns: torch.Tensor, labels: torch.Tensor, novel: torch.Tensor, novel_labels: torch.Tensor,
                   sizes: list[int], modules: int = 16, cells: int = 16, floor: float = 0.6, seed: int = 0) -> list[dict]:
    """Store the first n patterns (one trial each) in a fresh mac for each n in `sizes`, then measure:

        recall          share of stored patterns whose retrieved code equals their stored code exactly
        code overlap    mean share of CMs reinstated
        recognition     balanced accuracy of telling the n stored patterns from (up to n) novel ones by G
                        (threshold = the midpoint of the two groups' median G)
        classification  share of novel patterns whose retrieved code overlaps most with a stored code
                        of the same class (semantic memory from code overlap)
    """
    out = []
    for n in sizes:
        if n > len(patterns):
            raise ConfigError("capacity curve asks for more patterns than given", expected=f"<= {len(patterns)}", got=n)
        mac = SparseyMac(patterns.shape[1], modules, cells, floor=floor, seed=seed)
        stored = mac.store(patterns[:n])
        again = mac.retrieve(patterns[:n])
        g_old, g_new = mac.familiarity(patterns[:n]), mac.familiarity(novel[:n])
        threshold = (g_old.median() + g_new.median()) / 2
        # balanced: the mean of the hit rate on stored images and the correct-rejection rate on new ones
        recognition = float(((g_old > threshold).float().mean() + (g_new <= threshold).float().mean()) / 2)
        probe = mac.retrieve(novel)
        nearest = code_overlap(probe, stored).argmax(1)
        classification = float((labels[:n][nearest] == novel_labels).float().mean())
        out.append({"stored": n, "recall": float((again == stored).all(1).float().mean()),
                    "code_overlap": float((again == stored).float().mean()), "recognition": recognition,
                    "familiarity_stored": float(g_old.mean()), "familiarity_novel": float(g_new.mean()),
                    "classification": classification})
    return out


__all__ = ["SparseyMac", "binarize", "capacity_curve", "code_overlap"]
