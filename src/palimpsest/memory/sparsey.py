"""Sparsey: superposed sparse distributed codes stored in a single trial, no gradient training.
"Superposed Episodic and Semantic Memory via Sparse Distributed Representation" (Rinkus and Leveille);
the model and its Code Selection Algorithm (CSA) as in Rinkus, "A cortical sparse distributed coding model
linking mini- and macrocolumn-scale functionality" (2010) and "Sparsey: event recognition via deep
hierarchical sparse distributed codes" (2014).

A macrocolumn ("mac") is Q competitive modules (CMs) of K binary cells; its code is one active cell per
CM (Q of Q·K cells). Every cell of a mac sees the same receptive field (RF) of binary input units
through binary weights, all 0 at first. A level is a set of macs with their own RFs over the level's
input; a hierarchy stacks levels: the level-1 macs tile the image, the level-2 mac reads the level-1
codes (one input unit per level-1 cell).

The CSA, for the binary input x_RF inside a mac's RF (one pass, the same for storage and recall):
    u_j = Σ_i x_i W_ij                               each cell's input sum
    V_j = min(1, u_j / max(|x_RF|, π⁻))              normalised to [0, 1] (the local support)
    G   = mean over the Q CMs of max_j V_j           the mac's global familiarity
    η   = 1 + χ · ĝ^γ,  ĝ = ((G − G⁻) / (1 − G⁻))_+  the sigmoid's height: grows with familiarity
    μ_j = 1 + (η − 1) · σ(λ (V_j − c))               sigmoid transform of V (c: inflection, λ: steepness)
    p_j = μ_j / Σ_{k in CM} μ_k                      one winner drawn per CM from p
A familiar input (G = 1) gives a tall sigmoid, so the cells with V = 1 (its stored code) win almost
surely; a novel input (G ≤ G⁻) gives η = 1, a flat μ and a uniform draw: a new, near-random code; in
between, codes overlap the codes of the stored inputs the more, the more similar the inputs (similar
inputs, similar codes: the paper's semantic memory that comes with the episodic one; on digits this
holds only for near-duplicates, see benchmarks/README.md). A mac whose RF holds fewer than π⁻ active
units stays silent (code −1 in every CM). Arguments: G⁻ `g_floor`, χ `height`, γ `power`, λ
`steepness`, c `inflection`, π⁻ `min_active`.

Storage (single trial, Hebbian): W_ij = 1 for every active input i in the RF and every winner j.
Retrieval: the most probable code, the max-V cell of each CM (the CSA's draw in its G → 1 limit);
G tells stored (familiar) inputs from new ones.

Critical periods (2014): a mac whose share of set weights reaches `freeze_at` stops learning; the
level-1 macs of a hierarchy close theirs early, become a fixed vocabulary of patch codes, and the
level-2 mac above then sees the same input for the same image at storage and at recall.

Departures: no horizontal or top-down signals and no time (purely spatial inputs, as in the 2010
model); only the sigmoid's height depends on G (its steepness and inflection are fixed per level);
retrieval takes the argmax instead of a draw, ties going to the cell with the fewest set weights; a
frozen mac gives its retrieval code at storage too; a mac is silent below π⁻ active inputs but has no
upper limit.
"""
from __future__ import annotations

import torch

from ..core.errors import ConfigError


class SparseyLevel:
    """`fields` (M, F): the input units each of the level's M macs sees (equal-size RFs);
    every mac has `modules` CMs of `cells` cells. Codes are (n, M, modules) cell indices, −1 for a
    silent mac."""

    def __init__(self, inputs: int, fields: torch.Tensor, modules: int = 16, cells: int = 16, *,
                 g_floor: float = 0.5, height: float = 1e4, power: float = 6.0, steepness: float = 30.0,
                 inflection: float = 0.6, min_active: int = 1, freeze_at: float | None = None,
                 seed: int = 0) -> None:
        fields = torch.as_tensor(fields, dtype=torch.long)
        if min(inputs, modules, cells, min_active) < 1 or fields.dim() != 2 or fields.numel() == 0:
            raise ConfigError("a Sparsey level needs positive sizes and a (macs, field) index table",
                              expected="inputs, modules, cells, min_active >= 1; fields of shape (M, F)",
                              got=dict(inputs=inputs, modules=modules, cells=cells, min_active=min_active,
                                       fields=tuple(fields.shape)))
        if int(fields.min()) < 0 or int(fields.max()) >= inputs:
            raise ConfigError("a Sparsey receptive field points outside the input", expected=f"indices in [0, {inputs})",
                              got=f"[{int(fields.min())}, {int(fields.max())}]")
        if not 0 <= g_floor < 1:
            raise ConfigError("Sparsey's familiarity floor G⁻ must be in [0, 1)", expected="0 <= g_floor < 1",
                              got=g_floor)
        if height < 0 or steepness <= 0:
            raise ConfigError("Sparsey's sigmoid needs height >= 0 and steepness > 0", expected="χ >= 0, λ > 0",
                              got=dict(height=height, steepness=steepness))
        self.inputs, self.fields, self.modules, self.cells = inputs, fields, modules, cells
        self.g_floor, self.height, self.power = g_floor, height, power
        self.steepness, self.inflection, self.min_active = steepness, inflection, min_active
        if freeze_at is not None and not 0 < freeze_at <= 1:
            raise ConfigError("Sparsey's critical period ends at a share of set weights in (0, 1]",
                              expected="0 < freeze_at <= 1 or None (never freeze)", got=freeze_at)
        self.freeze_at = freeze_at
        self.weights = torch.zeros(len(fields), fields.shape[1], modules * cells, dtype=torch.bool)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def macs(self) -> int:
        return len(self.fields)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.inputs:
            raise ConfigError("Sparsey inputs have the wrong shape", expected=f"(n, {self.inputs}) binary patterns",
                              got=tuple(x.shape))
        if not ((x == 0) | (x == 1)).all():
            raise ConfigError("Sparsey inputs must be binary", expected="0/1 values (threshold real inputs first)",
                              got=f"values in [{float(x.min())}, {float(x.max())}]", fix="use binarize(x)")
        return x.bool()

    def support(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V (n, M, modules, cells), each cell's normalised input, and which macs are active (n, M)."""
        rf = self._check(x)[:, self.fields]                                    # (n, M, F)
        counts = torch.einsum("nmf,mfc->nmc", rf.float(), self.weights.float())
        size = rf.sum(-1, keepdim=True).float()
        v = (counts / size.clamp_min(self.min_active)).clamp_max(1.0)
        return v.view(len(x), self.macs, self.modules, self.cells), size.squeeze(-1) >= self.min_active

    def familiarity(self, x: torch.Tensor) -> torch.Tensor:
        """G in [0, 1] per input and mac (n, M); NaN for a silent mac."""
        v, active = self.support(x)
        g = v.amax(-1).mean(-1)
        return g.masked_fill(~active, float("nan"))

    def probabilities(self, v: torch.Tensor) -> torch.Tensor:
        """The CSA's win probabilities (.., modules, cells) from V, with G computed from V itself."""
        g = v.amax(-1).mean(-1, keepdim=True).unsqueeze(-1)                   # (.., 1, 1)
        g_hat = ((g - self.g_floor) / (1 - self.g_floor)).clamp_min(0)
        eta = 1 + self.height * g_hat ** self.power
        mu = 1 + (eta - 1) * torch.sigmoid(self.steepness * (v - self.inflection))
        return mu / mu.sum(-1, keepdim=True)

    def frozen(self) -> torch.Tensor:
        """Which macs have closed their critical period (M,): their share of set weights reached freeze_at."""
        if self.freeze_at is None:
            return torch.zeros(self.macs, dtype=torch.bool)
        return self.weights.flatten(1).float().mean(1) >= self.freeze_at

    def store(self, x: torch.Tensor) -> torch.Tensor:
        """Store each input in one trial, in order: the CSA draws a code in every active mac and the
        weights from the RF's active units to the winners are set. A frozen mac (critical period over)
        learns nothing and gives its retrieval code. Returns the codes (n, M, modules)."""
        x = self._check(x)
        codes = torch.full((len(x), self.macs, self.modules), -1, dtype=torch.long)
        offsets = torch.arange(self.modules) * self.cells
        for n, row in enumerate(x):
            v, active = self.support(row.unsqueeze(0))
            p = self.probabilities(v[0])                                       # (M, Q, K)
            winners = torch.multinomial(p.flatten(0, 1), 1, generator=self.generator).view(self.macs, self.modules)
            frozen = self.frozen()
            winners[frozen] = self._best(v[0])[frozen]
            rf = row[self.fields]                                              # (M, F)
            for m in active[0].nonzero().flatten().tolist():
                if not frozen[m]:
                    self.weights[m, rf[m].nonzero().flatten().unsqueeze(1), (winners[m] + offsets).unsqueeze(0)] = True
                codes[n, m] = winners[m]
        return codes

    def _best(self, v: torch.Tensor) -> torch.Tensor:
        """The max-V cell of each CM (.., M, modules); ties go to the cell with the fewest set weights
        (the most specific match), then the lowest index."""
        load = self.weights.sum(1).view(self.macs, self.modules, self.cells).float() / self.fields.shape[1]
        return (v - 1e-3 * load).argmax(-1)

    def retrieve(self, x: torch.Tensor) -> torch.Tensor:
        """The code each input reactivates: the max-V cell of each CM (n, M, modules), −1 in silent macs."""
        v, active = self.support(x)
        return self._best(v).masked_fill(~active.unsqueeze(-1), -1)

    def as_input(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (n, M, modules) as the next level's binary input: one unit per cell (n, M·modules·cells)."""
        out = torch.zeros(*codes.shape, self.cells, dtype=torch.uint8)
        on = codes >= 0
        out[on] = torch.nn.functional.one_hot(codes[on], self.cells).to(torch.uint8)
        return out.flatten(1)


class SparseyMac(SparseyLevel):
    """One mac over all `inputs` units; codes (n, modules)."""

    def __init__(self, inputs: int, modules: int = 16, cells: int = 16, **csa) -> None:
        super().__init__(inputs, torch.arange(max(inputs, 1)).unsqueeze(0), modules, cells, **csa)

    def familiarity(self, x: torch.Tensor) -> torch.Tensor:
        return super().familiarity(x)[:, 0].nan_to_num(0.0)

    def store(self, x: torch.Tensor) -> torch.Tensor:
        return super().store(x)[:, 0]

    def retrieve(self, x: torch.Tensor) -> torch.Tensor:
        return super().retrieve(x)[:, 0]


def tiling(height: int, width: int, channels: int, field: int, stride: int) -> torch.Tensor:
    """Receptive fields of `field` x `field` pixels every `stride` pixels over an image flattened as
    (height, width, channels): (M, field·field·channels) input indices."""
    if field > min(height, width) or stride < 1 or (height - field) % stride or (width - field) % stride:
        raise ConfigError("Sparsey's receptive fields do not tile the image",
                          expected="field <= image side and (side - field) divisible by stride",
                          got=dict(image=(height, width), field=field, stride=stride))
    index = torch.arange(height * width * channels).view(height, width, channels)
    return torch.stack([index[r:r + field, c:c + field].flatten()
                        for r in range(0, height - field + 1, stride) for c in range(0, width - field + 1, stride)])


class SparseyHierarchy:
    """Two levels: level-1 macs with `field` x `field` RFs every `stride` pixels over an image of
    `shape` (height, width, channels per pixel, e.g. binarize's intensity bins), and one level-2 mac over
    all level-1 cells. Storage runs the CSA and the single-trial Hebbian update in every mac, level 1
    first; level 2 reads the level-1 codes. The hierarchy's code of an input is the level-2 code."""

    def __init__(self, shape: tuple[int, int, int] = (8, 8, 3), field: int = 4, stride: int = 2,
                 level1: tuple[int, int] = (8, 8), level2: tuple[int, int] = (16, 32), *,
                 csa1: dict | None = None, csa2: dict | None = None, seed: int = 0) -> None:
        fields = tiling(*shape, field, stride)
        self.inputs = shape[0] * shape[1] * shape[2]
        self.level1 = SparseyLevel(self.inputs, fields, *level1, seed=seed, **(csa1 or {}))
        above = len(fields) * level1[0] * level1[1]
        self.level2 = SparseyMac(above, *level2, seed=seed + 1, **(csa2 or {}))

    def store(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store each input in one trial; returns the level-1 (n, M, Q1) and level-2 (n, Q2) codes.
        (Level 1 for all inputs, then level 2: the same as level by level per input, since an input's
        level-2 code depends only on its own level-1 code and the level-2 weights of earlier inputs.)"""
        codes1 = self.level1.store(x)
        return codes1, self.level2.store(self.level1.as_input(codes1))

    def retrieve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes1 = self.level1.retrieve(x)
        return codes1, self.level2.retrieve(self.level1.as_input(codes1))

    def familiarity(self, x: torch.Tensor) -> torch.Tensor:
        """The level-2 mac's G for the retrieved level-1 codes (n,)."""
        return self.level2.familiarity(self.level1.as_input(self.level1.retrieve(x)))


def binarize(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Sparse binary patterns from real inputs: each feature above its row's mean is one-hot coded into
    `levels` intensity bins (quantiles of those features over the batch); features at or below the mean
    (the background) are silent. (n, features x levels), feature-major (the bins of a pixel are adjacent)."""
    flat = x.flatten(1).float()
    on = flat > flat.mean(1, keepdim=True)
    edges = torch.quantile(flat[on], torch.linspace(0, 1, levels + 1)[1:-1])
    level = torch.bucketize(flat, edges)
    out = torch.zeros(flat.shape[0], flat.shape[1], levels, dtype=torch.uint8)
    out.scatter_(2, level.unsqueeze(-1), 1)
    return (out * on.unsqueeze(-1)).flatten(1)


def code_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Share of CMs whose (active) winners agree, for every pair: (len(a), len(b)); codes (n, Q) or
    (n, M, Q) with −1 for silent macs."""
    a, b = a.flatten(1), b.flatten(1)
    same = (a.unsqueeze(1) == b.unsqueeze(0)) & (a.unsqueeze(1) >= 0)
    return same.float().sum(-1) / a.shape[1]


__all__ = ["SparseyHierarchy", "SparseyLevel", "SparseyMac", "binarize", "code_overlap", "tiling"]
