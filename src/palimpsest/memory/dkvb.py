"""Discrete Key-Value Bottleneck: "Discrete Key-Value Bottleneck" (Träuble, Goyal, Rahaman, Mozer,
Kawaguchi, Bengio and Schölkopf, ICML 2023).

A frozen encoder's features z are projected into C heads by fixed random projections; head c snaps to
its nearest key in codebook c (keys frozen after an unsupervised initialisation) and fetches that key's
value; a non-parametric decoder pools the fetched values into class scores:

    z_c = P_c z                          (fixed random projection, one per codebook)
    i_c = argmin_j ‖z_c − key_{c,j}‖     (the nearest key; keys frozen)
    logits = scale · mean_c value_{c, i_c}

Only the values learn, and an input moves only the values it fetched: learning a new class rewrites the
values of the keys its inputs select and leaves the rest alone, which is what limits forgetting.

Keys are initialised by k-means (Lloyd iterations) on unlabelled features; the paper initialises them on
unlabelled data before training (e.g. features of another data set) with an EMA vector-quantisation
update. `scale` (default: the number of codebooks, i.e. the sum of the fetched values) is a fixed
softmax temperature on the paper's average pooling, so plain SGD moves the logits at a useful rate.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError


class DiscreteKeyValueBottleneck(nn.Module):
    """`codebooks` x `keys` key-value pairs over `in_dim` features; values of size `value_dim`."""

    def __init__(self, in_dim: int, value_dim: int, codebooks: int = 64, keys: int = 128, key_dim: int = 8,
                 scale: float | None = None, seed: int = 0) -> None:
        super().__init__()
        if min(in_dim, value_dim, codebooks, keys, key_dim) < 1:
            raise ConfigError("a key-value bottleneck needs positive sizes",
                              expected="in_dim, value_dim, codebooks, keys, key_dim >= 1",
                              got=dict(in_dim=in_dim, value_dim=value_dim, codebooks=codebooks, keys=keys, key_dim=key_dim))
        gen = torch.Generator().manual_seed(seed)
        self.codebooks, self.n_keys, self.key_dim = codebooks, keys, key_dim
        self.scale = float(codebooks if scale is None else scale)
        self.register_buffer("projection", torch.randn(codebooks, in_dim, key_dim, generator=gen) / in_dim ** 0.5)
        self.register_buffer("keys", torch.randn(codebooks, keys, key_dim, generator=gen))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.values = nn.Parameter(torch.zeros(codebooks, keys, value_dim))

    def heads(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, key_dim): the features seen by each codebook."""
        return torch.einsum("bi,cik->bck", z.flatten(1), self.projection)

    def fetch(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C): the index of the nearest key in each codebook."""
        h = self.heads(z)                                                       # (B, C, k)
        d = (h.unsqueeze(2) - self.keys.unsqueeze(0)).pow(2).sum(-1)            # (B, C, K)
        return d.argmin(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = self.fetch(z)
        fetched = self.values[torch.arange(self.codebooks, device=idx.device).unsqueeze(0), idx]   # (B, C, V)
        return self.scale * fetched.mean(1)

    @torch.no_grad()
    def init_keys(self, z: torch.Tensor, iterations: int = 10, seed: int = 0) -> None:
        """k-means (Lloyd) in every codebook at once on unlabelled features z (N, in_dim); keys start at
        distinct random points."""
        h = self.heads(z).transpose(0, 1)                                       # (C, N, k)
        n = h.shape[1]
        gen = torch.Generator().manual_seed(seed)
        if n >= self.n_keys:
            start = torch.stack([torch.randperm(n, generator=gen)[:self.n_keys] for _ in range(self.codebooks)])
        else:
            start = torch.randint(n, (self.codebooks, self.n_keys), generator=gen)
        keys = torch.gather(h, 1, start.unsqueeze(-1).expand(-1, -1, self.key_dim)).clone()
        for _ in range(iterations):
            assign = torch.cdist(h, keys).argmin(-1)                            # (C, N)
            sums = torch.zeros_like(keys).scatter_add_(1, assign.unsqueeze(-1).expand(-1, -1, self.key_dim), h)
            counts = torch.zeros(self.codebooks, self.n_keys, dtype=h.dtype).scatter_add_(
                1, assign, torch.ones_like(assign, dtype=h.dtype))
            used = counts > 0
            keys = torch.where(used.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), keys)
        self.keys.copy_(keys)
        self.initialised.fill_(True)


__all__ = ["DiscreteKeyValueBottleneck"]
