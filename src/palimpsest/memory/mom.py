"""Mixture-of-Memories: "MoM: Linear Sequence Modeling with Mixture-of-Memories" (Du, Sun, Lan et al., 2025).

K independent memories of the associative core (memory/associative.py) plus an always-on shared memory.
A router scores each token against the K memories; the token is written only into its top-k memories
(its keys and values are projected per memory) and the read is the router-weighted sum of those
memories' reads plus the shared memory's:

    p_t = softmax(W_r x_t)                     top-k memories I_t, weights w_{t,i} = p_{t,i} / Σ_{j∈I_t} p_{t,j}
    memory i:  written at t only if i ∈ I_t   (θ_t = 0 and α_t = 1 otherwise: the memory is left as it was)
    y_t = Σ_{i∈I_t} w_{t,i} M_i(q_t) + M_shared(q_t)

With top-1 routing the renormalised weight is always 1, so the router learns only through the
load-balancing loss; use top-k >= 2 (the paper routes to several memories) for the task loss to reach it.

A load-balancing loss (Switch Transformer's, Fedus et al. 2022) keeps the router from collapsing:
aux = weight · K · Σ_i f_i P_i, with f_i the share of assignments to memory i and P_i its mean router
probability; the model adds it to the task loss (`aux_loss`).

It is a `MemoryLayer` whose core has (K + shared) x heads heads, so with K = 1, top-k 1 and no shared
memory it computes exactly what a single memory with the same weights computes (tested).

`route: shifted` (not in the paper) routes each write by the previous token, the one the token shift
makes its key of, and each read by the current token, so that in associative recall a pair is written
where its key will later be looked up; the paper routes both by the current token.
On MQAR at 16 pairs with small memories (recipes/memory_mqar_mom.yaml, 3 seeds) the shifted routing is
what makes the mixture beat one memory (98.4 vs 46.4 %); routed by the current token it does not (34.4 %).

Departures: memories with momentum are refused (a skipped token would still add the momentum to the
weights); the paper mixes the memories' states before reading, which equals mixing the reads for the
matrix memories it uses, and mixing the reads is what is done here for every architecture.
"""
from __future__ import annotations

import torch
from typing import Literal

from pydantic import Field
from torch import nn

from ..core.config import Settings, validate
from ..core.errors import ConfigError
from ..core.registry import MEMORY_LAYERS
from .associative import AssociativeMemory, MemoryConfig, MemoryLayer, MemoryState, shift_init
from .presets import PRESETS


class MoMConfig(Settings):
    memories: int = Field(4, ge=1, description="K, the routed memories")
    top_k: int = Field(1, ge=1)
    shared: bool = Field(True, description="an always-on shared memory written by every token")
    balance_weight: float = Field(0.01, ge=0, description="weight of the load-balancing loss")
    base: str = Field("gated_deltanet", description="the preset each memory follows")
    route: Literal["token", "shifted"] = Field("token", description="token: the paper's routing, writes and "
                                               "reads by the current token; shifted: writes by the previous "
                                               "token (the one the token shift makes the key of), reads by the "
                                               "current one")


class MixtureOfMemories(MemoryLayer):
    """K routed memories plus a shared one (see the module docstring). `y, state = layer(x, state)`."""

    def __init__(self, dim: int, memories: int = 4, top_k: int = 1, shared: bool = True, balance_weight: float = 0.01,
                 base: str = "gated_deltanet", route: str = "token", **settings) -> None:
        mom = validate(MoMConfig, {"memories": memories, "top_k": top_k, "shared": shared,
                                   "balance_weight": balance_weight, "base": base, "route": route},
                       "mixture of memories")
        if mom.base not in PRESETS:
            raise ConfigError(f"unknown base preset {mom.base!r} for a mixture of memories",
                              expected=f"one of {', '.join(sorted(PRESETS))}", got=mom.base)
        if mom.top_k > mom.memories:
            raise ConfigError("mixture of memories: top_k exceeds the number of memories",
                              expected=f"top_k <= memories ({mom.memories})", got=mom.top_k)
        cfg_settings = {**PRESETS[mom.base], **settings}
        cfg = validate(MemoryConfig, cfg_settings, "mixture of memories")
        if cfg.rule == "momentum":
            raise ConfigError("mixture of memories needs memories without momentum",
                              expected="a base preset with rule 'gd'", got=f"{mom.base} with rule {cfg.rule!r}",
                              fix="pick base: gated_deltanet, deltanet, linear_attention, yaad, moneta or memora")
        self.mom = mom
        self.n_mem = mom.memories + int(mom.shared)
        super().__init__(dim, **cfg_settings)
        inner = self.heads * self.head_dim
        m = self.n_mem
        # one projection for [q, k_1..k_M, v_1..v_M] (for M = 1 the layout of MemoryLayer's [q, k, v])
        self.to_qkv = nn.Linear(dim, (1 + 2 * m) * inner, bias=False)
        if cfg.conv_size > 1:
            self.conv = nn.Conv1d((1 + 2 * m) * inner, (1 + 2 * m) * inner, cfg.conv_size,
                                  groups=(1 + 2 * m) * inner, bias=False)
            shift_init(self.conv, inner, m * inner, cfg.shift_keys)
        if self.to_gates is not None:
            old = self.to_gates
            self.to_gates = nn.Linear(dim, len(self.gate_names) * m * self.heads)
            with torch.no_grad():
                self.to_gates.weight.mul_(0.1)
                self.to_gates.bias.copy_(old.bias.view(len(self.gate_names), self.heads).repeat(1, m).reshape(-1))
        self.core = AssociativeMemory(cfg, m * self.heads, self.head_dim)
        self.router = nn.Linear(dim, mom.memories, bias=False)
        self.aux_loss = torch.zeros(())

    def project_qkv(self, x, context):
        cfg, m, h, d = self.cfg, self.n_mem, self.heads, self.head_dim
        qkv, new_context = self.token_shift(self.to_qkv(x), context)
        b, t, _ = x.shape
        q = qkv[..., :h * d].view(b, t, h, d).permute(0, 2, 1, 3)
        k = qkv[..., h * d:(1 + m) * h * d].reshape(b, t, m * h, d).permute(0, 2, 1, 3)
        v = qkv[..., (1 + m) * h * d:].reshape(b, t, m * h, d).permute(0, 2, 1, 3)
        if cfg.qk_norm:
            q, k = nn.functional.normalize(q, dim=-1), nn.functional.normalize(k, dim=-1)
        return q.repeat(1, m, 1, 1), k, v, new_context

    @property
    def gate_heads(self) -> int:
        return self.n_mem * self.heads

    def route(self, x):
        """(weights (B, T, K) zero outside each token's top-k, probabilities (B, T, K))."""
        probs = torch.softmax(self.router(x), -1)
        top, idx = probs.topk(self.mom.top_k, -1)
        weights = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        return weights, probs

    def forward(self, x: torch.Tensor, state: MemoryState | None = None, path: str | None = None,
                order: str | None = None):
        path = path or self.cfg.path
        self.check_input(x, state, path)
        q, k, v, context = self.project_qkv(x, None if state is None else state.context)
        g = self.gates(x)
        weights, probs = self.route(x)
        previous = x[:, -1:]
        if self.mom.route == "shifted":
            before = x.new_zeros(x.shape[0], 1, x.shape[2]) if state is None or state.previous is None else state.previous
            write_weights, _ = self.route(torch.cat([before, x[:, :-1]], 1))
        else:
            write_weights = weights
        h, kk = self.heads, self.mom.memories
        routed = write_weights > 0                                     # (B, T, K)
        write = routed.permute(0, 2, 1).repeat_interleave(h, 1)       # (B, K*H, T)
        if self.mom.shared:
            write = torch.cat([write, torch.ones_like(write[:, :h])], 1)
        write = write.to(x.dtype)
        theta = g["theta"] * write
        alpha = None if "alpha" not in g else g["alpha"] * write + (1 - write)
        y, new = self.core(q, k, v, theta, alpha, None, g.get("delta"), state, path=path, order=order)
        b, _, t, d = y.shape
        mix = weights.permute(0, 2, 1).repeat_interleave(h, 1).unsqueeze(-1)      # (B, K*H, T, 1)
        out = (y[:, :kk * h] * mix).view(b, kk, h, t, d).sum(1)
        if self.mom.shared:
            out = out + y[:, kk * h:]
        new.context = context
        new.previous = previous if self.mom.route == "shifted" else None
        # load balancing (Switch Transformer): K Σ_i f_i P_i, f from the top-k assignments
        share = routed.float().mean((0, 1)) / self.mom.top_k
        self.aux_loss = self.mom.balance_weight * kk * (share * probs.mean((0, 1))).sum()
        return self.read_out(out), new


@MEMORY_LAYERS.register("mom", summary="mixture-of-memories: top-k routing over K memories plus a shared one "
                        "(Du et al. 2025)", paper="MoM: Linear Sequence Modeling with Mixture-of-Memories (2025)")
def mixture_of_memories(dim: int, **settings) -> MixtureOfMemories:
    """Mixture-of-Memories (Du et al. 2025) on the associative core; see memory/mom.py."""
    return MixtureOfMemories(dim, **settings)


__all__ = ["MixtureOfMemories", "MoMConfig"]
