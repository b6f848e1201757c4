"""Hierarchical Chunk Attention Memory (HCAM): "Towards mental time travel: a hierarchical memory for
reinforcement learning agents" (Lampinen, Chan, Banino and Hill, NeurIPS 2021).

The past is stored in chunks of `chunk_len` steps, each with a summary key (the mean of its keys). A
query first attends over the summaries, keeps the top-k chunks, then attends in detail inside each of
them; the chunk-level weights mix the detailed reads:

    s_j = mean_{i ∈ chunk j} k_i                      r_{t,j} = q_t · s_j / √d,   j < chunk(t)
    J_t = top-k_j r_{t,j},  w_{t,j} = softmax_{j ∈ J_t} r_{t,j}
    y_t = Σ_{j ∈ J_t} w_{t,j} Σ_{i ∈ chunk j} softmax_i(q_t · k_i / √d) v_i

Only complete chunks strictly before a query's own chunk are memory (the current chunk is the job of a
local layer below, e.g. a sliding window); a query in the first chunk reads nothing (zeros). Gradients
reach the summaries only through the weights w of the selected chunks, as in the paper: a softmax over
the selected relevances is shift-invariant, so a wrong pick is pushed down only against the other picks,
and a chunk that was not picked (the right one, early in training) gets no gradient at all.

`y, state = layer(x, state)` with `state` the keys and values of the past positions, so a long stream
can be fed in segments.

DeepMind's released module (deepmind-research, hierarchical_transformer_memory/htm_attention.py) gives
the chunk level its own single-head query and key projections (of the summaries), picks one set of top-k
chunks for all heads, softmaxes the selected logits, and runs ordinary multi-head attention inside them
with sinusoidal positions within the chunk; the stored memory is a stop-gradient copy of the layer's
inputs (an RL agent's past). `chunk_keys: true` follows the first two (chunk q and k from their own
projections, the summary the mean of the chunk keys, one choice shared by every head); by default one
query and key per head serve both levels and each head picks its own chunks.

Departures: summaries are plain means (no layer norm); no positions inside a chunk; the memory keeps its
gradient (one forward pass over the sequence, not an agent's stored past); as before the associative
memories, a token shift (a causal convolution of width 2, keys starting from the previous token) precedes
the projections (`conv_size: 0` removes it). Two training relaxations, both off by default:
`train_top_k` lets training read more chunks than evaluation, so the summaries get gradients from chunks
top-k would not have picked yet; with `anneal_steps` the number read falls linearly from `train_top_k`
to `top_k` over that many training passes (counted in a buffer saved with the model, so a resumed run
continues the schedule), and training then goes on with the paper's top-k.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.registry import MEMORY_LAYERS
from .associative import shift_init


class HCAM(nn.Module):
    def __init__(self, dim: int, heads: int = 2, chunk_len: int = 16, top_k: int = 2, conv_size: int = 2,
                 shift_keys: bool = True, train_top_k: int | None = None, anneal_steps: int = 0,
                 chunk_keys: bool = False) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError("HCAM heads must divide the width", expected=f"a divisor of {dim}", got=heads)
        if chunk_len < 1 or top_k < 1 or (train_top_k is not None and train_top_k < 1):
            raise ConfigError("HCAM needs positive chunk_len and top_k", expected=">= 1",
                              got=f"chunk_len={chunk_len}, top_k={top_k}")
        self.dim, self.heads, self.chunk_len, self.top_k = dim, heads, chunk_len, top_k
        self.train_top_k = train_top_k
        if anneal_steps < 0 or (anneal_steps and train_top_k is None):
            raise ConfigError("HCAM anneal_steps needs train_top_k", expected="anneal_steps >= 0, with train_top_k "
                              "(the number of chunks read at the start)", got=f"anneal_steps={anneal_steps}, "
                              f"train_top_k={train_top_k}", fix="give train_top_k, or anneal_steps: 0")
        self.anneal_steps = anneal_steps
        if anneal_steps:      # training forward passes so far: saved with the model, so a resumed run continues
            self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        # chunk_keys: the chunk level has its own query and key (one head of the full width), as in the
        # released module; the projections are then laid out [q, chunk q, k, chunk k, v]
        self.chunk_keys = chunk_keys
        width = (5 if chunk_keys else 3) * dim
        self.qkv = nn.Linear(dim, width, bias=False)
        self.conv_size = conv_size
        if conv_size > 1:     # the token shift of the associative memories (memory/associative.py)
            self.conv = nn.Conv1d(width, width, conv_size, groups=width, bias=False)
            shift_init(self.conv, 2 * dim if chunk_keys else dim, 2 * dim if chunk_keys else dim, shift_keys)
        self.out = nn.Linear(dim, dim, bias=False)

    accepts_select = True   # models/sequence.py: the last block may ask for some positions only

    def forward(self, x: torch.Tensor, state: dict | None = None, select: torch.Tensor | None = None):
        """`select` (B, T) boolean: compute the read only at these positions (zeros elsewhere); a model
        whose loss reads a few positions (passkey: the last one) then pays only for those."""
        if x.dim() != 3 or x.shape[-1] != self.dim or not x.is_floating_point():
            raise ConfigError("HCAM input has the wrong shape", expected=f"a float tensor (batch, time, {self.dim})",
                              got=f"{tuple(x.shape)} {x.dtype}")
        if not torch.isfinite(x).all():
            raise ConfigError("HCAM input holds NaN or infinite values", expected="finite numbers",
                              got=f"{int((~torch.isfinite(x)).sum())} non-finite values")
        b, t, dim = x.shape
        h, d, length = self.heads, dim // self.heads, self.chunk_len
        qkv = self.qkv(x)
        context = None
        if self.conv_size > 1:
            keep = self.conv_size - 1
            before = state.get("context") if state is not None else None
            full = torch.cat([qkv.new_zeros(b, keep, qkv.shape[-1]) if before is None else before, qkv], 1)
            context = full[:, -keep:]
            qkv = self.conv(full.transpose(1, 2)).transpose(1, 2)
        if self.chunk_keys:
            q, cq, k, ck, v = qkv.split(dim, -1)
            cq, ck = cq.unsqueeze(1), ck.unsqueeze(1)                              # (B, 1, T, dim)
        else:
            q, k, v = qkv.split(dim, -1)
        q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in (q, k, v))         # (B, H, T, d)
        if not self.chunk_keys:
            cq, ck = q, k
        past = 0
        if state is not None:
            past = state["keys"].shape[2]
            if state["keys"].shape[:2] != (b, h) or state["keys"].dtype != x.dtype:
                raise ConfigError("HCAM state does not fit the input", expected=f"keys (batch={b}, heads={h}, ...) "
                                  f"of {x.dtype}", got=f"{tuple(state['keys'].shape)} {state['keys'].dtype}",
                                  fix="pass the state this layer returned for the same batch")
            k, v = torch.cat([state["keys"], k], 2), torch.cat([state["values"], v], 2)
            ck = torch.cat([state["chunk_keys"], ck], 2) if self.chunk_keys else k
        total = k.shape[2]
        n_chunks = total // length
        keys = k[:, :, :n_chunks * length].reshape(b, h, n_chunks, length, d)
        values = v[:, :, :n_chunks * length].reshape(b, h, n_chunks, length, d)
        summaries = ck[:, :, :n_chunks * length].reshape(b, ck.shape[1], n_chunks, length, -1).mean(3)  # (B, H|1, N, ·)
        if select is not None:
            out = torch.zeros_like(q)
            rows, cols = select.nonzero(as_tuple=True)
            if len(rows) and n_chunks:
                read = self._read(q[rows, :, cols].unsqueeze(2), cq[rows, :, cols].unsqueeze(2), keys[rows],
                                  values[rows], summaries[rows], (past + cols).unsqueeze(1), length, d)
                out = out.permute(0, 2, 1, 3).index_put((rows, cols), read.squeeze(2)).permute(0, 2, 1, 3)
        elif n_chunks == 0:
            out = torch.zeros_like(q)
        else:
            positions = torch.arange(past, past + t, device=x.device).expand(b, t)
            out = self._read(q, cq, keys, values, summaries, positions, length, d)
        if self.anneal_steps and self.training and torch.is_grad_enabled():
            self.trained_steps += 1
        new = {"keys": k, "values": v, "context": context}
        if self.chunk_keys:
            new["chunk_keys"] = ck
        return self.out(out.transpose(1, 2).reshape(b, t, dim)), new


    def chunks_read(self) -> int:
        """How many chunks a query reads now: top_k in evaluation; in training train_top_k (when given),
        falling linearly to top_k over the first `anneal_steps` training passes when that is set."""
        if not (self.training and self.train_top_k):
            return self.top_k
        if not self.anneal_steps:
            return self.train_top_k
        done = min(int(self.trained_steps), self.anneal_steps) / self.anneal_steps
        return max(self.top_k, round(self.train_top_k + (self.top_k - self.train_top_k) * done))

    def _read(self, q, cq, keys, values, summaries, positions, length, d):
        """Reads of queries q (B, H, T, d) at absolute positions (B, T) from complete chunks (B, H, N, L, d);
        chunk queries cq (B, H|1, T, ·) pick chunks by their summaries (B, H|1, N, ·)."""
        b, h, t, _ = q.shape
        n_chunks = keys.shape[2]
        scale = 1 / math.sqrt(d)
        # chunk j is memory for the query at absolute position p when j < p // length
        allowed = torch.arange(n_chunks, device=q.device).view(1, 1, n_chunks) < (positions // length).unsqueeze(-1)
        chunk_scale = 1 / math.sqrt(cq.shape[-1])
        relevance = (cq @ summaries.transpose(-1, -2) * chunk_scale).masked_fill(~allowed.unsqueeze(1), -1e4)
        k = self.chunks_read()
        kk = min(k, n_chunks)
        top, idx = relevance.topk(kk, -1)                                                   # (B, H, T, kk)
        weights = F.softmax(top, -1) * (top > -1e3)          # a selected chunk must really be in the past
        idx, weights = idx.expand(b, h, t, kk), weights.expand(b, h, t, kk)   # one choice for every head (chunk_keys)
        index = idx.reshape(b, h, t * kk, 1).expand(-1, -1, -1, length * d)
        ck = keys.reshape(b, h, n_chunks, length * d).gather(2, index).view(b, h, t, kk, length, d)
        cv = values.reshape(b, h, n_chunks, length * d).gather(2, index).view(b, h, t, kk, length, d)
        inner = F.softmax(torch.einsum("bhtd,bhtkld->bhtkl", q, ck) * scale, -1)
        reads = torch.einsum("bhtkl,bhtkld->bhtkd", inner, cv)
        return (weights.unsqueeze(-1) * reads).sum(3)


@MEMORY_LAYERS.register("hcam", summary="hierarchical chunk attention: top-k chunks by summary, then attention "
                        "inside them (Lampinen et al. 2021)",
                        paper="Towards mental time travel: a hierarchical memory for reinforcement learning agents")
def hcam(dim: int, heads: int = 2, chunk_len: int = 16, top_k: int = 2, conv_size: int = 2,
         shift_keys: bool = True, train_top_k: int | None = None, anneal_steps: int = 0,
         chunk_keys: bool = False) -> HCAM:
    """HCAM (Lampinen et al. 2021); see memory/hcam.py."""
    return HCAM(dim, heads, chunk_len, top_k, conv_size, shift_keys, train_top_k, anneal_steps, chunk_keys)


__all__ = ["HCAM", "hcam"]
