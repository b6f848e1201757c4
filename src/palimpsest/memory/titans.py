"""Titans' three ways of combining the neural long-term memory with attention, as token mixers.

"Titans: Learning to Memorize at Test Time" (Behrouz, Zhong and Mirrokni, 2024), §4. Each is built on
the `titans` memory layer (memory/presets.py: the LMM, an MLP trained at test time with momentum and a
forget gate) and on models/sequence.py's CausalAttention with persistent tokens (p_1 ... p_Np: learned,
input-independent tokens every query sees, §3.3). All follow the mixer API `y, state = mixer(x, state)`.

    titans_mac   memory as context (§4.1). The sequence is cut into segments S^(t) of `segment_len`:
                     h_t = M*_{t-1}(q_t),  q_t = S^(t) W_Q          (a read of the memory, no write)
                     S̃^(t) = [p_1 ... p_Np] ‖ h_t ‖ S^(t)
                     y_t = Attn(S̃^(t))                              (causal, within the segment)
                     M_t = M_{t-1}(S^(t) + y_t)                      (the memory writes the attention's
                                                                      residual stream, §4.4; `residual: false`
                                                                      writes y_t alone)
                     o_t = y_t ⊗ M*_t(S^(t) + y_t)                    (⊗: the gate of MAG below, `gate`)
    titans_mag   memory as a gate (§4.2): two branches on the same input, no segments
                     y = SW-Attn*([p_1 ... p_Np] ‖ x),   m = M(x),   ŷ = RMSNorm_y(y),  m̂ = RMSNorm_m(m)
                     o = y ⊗ M(x):  W_o(g ⊙ ŷ + (1 − g) ⊙ m̂),  g = σ(W_g x + b)    (`gate: mix`, default)
                                    W_o(ŷ ⊙ σ(m̂))                                  (`gate: product`)
                 The paper leaves ⊗ open ("can be any non-linear gating. In our experiments, we normalize
                 the outputs y and M(x̃) using learnable vector-valued weights, followed by a non-linearity
                 σ(.)"); the RMSNorms carry the vector-valued weights. `product` is the literal reading;
                 on MQAR it reached 15 ± 15 % in 600 steps (2 seeds) (the memory's content reaches the output
                 only through a multiplicative gate on the attention branch; docs/FEATURES.md), so the
                 default is `mix`, a learned input-dependent mixture of the two normalised outputs
                 (Hymba's normalised heads, which the paper cites for MAG, with a sigmoid gate).
    titans_mal   memory as a layer (§4.3): the memory, then sliding-window attention on its output
                     y = M(x),   o = SW-Attn*([p_1 ... p_Np] ‖ y)
                 with the residual connections of §4.4 inside the mixer: o = y + SW-Attn*(LN(x + y))

Departures, stated:
- MAC's write and gate. The paper writes y_t = Attn(S̃^(t)); §4.4 puts a residual connection around
  every block, and here the memory writes the residual stream S^(t) + y_t (`residual: true`, the default;
  at the start an attention output is an average over the segment, so keys written from y_t alone all
  look alike). ⊗ is the same gate as MAG's (the paper uses one symbol for both). The memory writes once
  per segment (chunk_size = segment_len by default), so a short segment is also a small inner mini-batch:
  on MQAR a first MAC with segments of 8 (writing y_t alone, ⊗ = y ⊙ σ(·)) stayed at chance in 600 steps,
  the recipe's with segments of 16 reaches 100 % (docs/FEATURES.md).
- MAC's attention mask. A causal mask over [p ‖ h_t ‖ S^(t)] (the paper's Figure 3a) lets segment
  position i read h_j for j > i, a memory read made with the query of a *later* token; here position i
  reads h_j only for j <= i, so the layer stays causal and continues a stream. The memory's read
  M*_t(y_t) for the output gate is causal too: position i reads the memory after the writes of positions
  <= i (the titans layer's store-then-retrieve order; with the chunked path the gradients of a chunk are
  taken at its start, §3.2). The retrieval h_t reads the memory as it was before the segment.
- MAC's retrieval uses the memory layer's own query projection and causal depthwise convolution (§4.4's
  1D convolution after the q, k, v projections, here a token shift at initialisation: memory/associative.py),
  run on the segment's inputs with a convolution context of its own (the last inputs of the previous
  segment); the write runs the same projections on y_t. The retrieved heads pass through the memory
  layer's output normalisation and projection, so h_t lives in the model's width.
- Persistent tokens enter the attention only (MAG, MAL: always visible, they never slide out of the
  window); they are not written into the memory, whose learned initial weights already give it an
  input-independent starting point. Their keys and values come from the attention's projection.
- MAL's residuals: the mixer returns y + SW-Attn(LN(x + y)), the two residual sub-layers of "memory
  layer, then attention layer" in one mixer (the block around it adds x and runs its MLP).

State and continuation. MAG and MAL carry {"memory": MemoryState, "attention": KV cache}; a sequence fed
in two calls gives the outputs of one call (each call's length a multiple of the memory's chunk_size).
MAC carries {"memory": MemoryState, "query_context": the retrieval's convolution context}; segments start
where a call starts, so two calls equal one only when the first call's length is a multiple of
segment_len, and every call's length must be a multiple of segment_len (a clear error otherwise): a
stream cannot be fed one token at a time.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.registry import MEMORY_LAYERS
from ..models.sequence import CausalAttention
from .associative import MemoryLayer, MemoryState, memory_forward, project
from .presets import create_memory

GATES = ("mix", "product")
PAPER = "Titans: Learning to Memorize at Test Time (Behrouz, Zhong and Mirrokni, 2024)"


def _titans(dim: int, memory: dict | None) -> MemoryLayer:
    if memory is not None and not isinstance(memory, dict):
        raise ConfigError("the Titans memory settings must be a mapping", expected="a dict of titans settings, "
                          "e.g. {chunk_size: 16, lr: 0.1}", got=type(memory).__name__,
                          fix="write memory: {chunk_size: 16} (or leave it out for the preset's defaults)")
    return create_memory("titans", dim, **(memory or {}))


def read_memory(layer: MemoryLayer, state: MemoryState | None, q: torch.Tensor) -> torch.Tensor:
    """M*(q): read the memory at `state` (None: its learned initial weights) with per-head queries q
    (B, H, T, d), without writing; returns the layer's output (B, T, dim) (normalised, projected)."""
    weights = (state or layer.core.initial_state(q.shape[0])).weights
    w = [project(weights[name], layer.cfg) for name in layer.core.names]
    return layer.read_out(memory_forward(w, q, layer.cfg)[0])


def _check_gate(gate: str, what: str) -> None:
    if gate not in GATES:
        raise ConfigError(f"{what}: unknown gate", expected=" or ".join(GATES), got=gate,
                          fix="gate: mix (a learned input-dependent mixture) or gate: product (ŷ ⊙ σ(m̂))")


class OutputGate(nn.Module):
    """The paper's y ⊗ M(·) (MAC's and MAG's output): both outputs RMSNorm-ed with learned vector weights
    (ŷ, m̂), then `mix`: W_o(g ⊙ ŷ + (1 − g) ⊙ m̂), g = σ(W_g x + b), or `product`: W_o(ŷ ⊙ σ(m̂))."""

    def __init__(self, dim: int, kind: str = "mix") -> None:
        super().__init__()
        self.kind = kind
        self.norm_attention, self.norm_memory = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.to_gate = nn.Linear(dim, dim) if kind == "mix" else None
        if self.to_gate is not None:
            with torch.no_grad():
                self.to_gate.weight.mul_(0.1)
                self.to_gate.bias.zero_()             # g starts near one half: both outputs pass
        self.out = nn.Linear(dim, dim, bias=False)

    def combine(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The gated combination before the output projection, from the input x and the outputs y, m."""
        y, m = self.norm_attention(y), self.norm_memory(m)
        if self.to_gate is None:
            return y * torch.sigmoid(m)
        g = torch.sigmoid(self.to_gate(x))
        return g * y + (1 - g) * m

    def forward(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.out(self.combine(x, y, m))


class MemoryAsContext(nn.Module):
    """Titans MAC (§4.1): per segment, retrieve from the memory with the segment's queries, attend over
    [persistent ‖ retrieved ‖ segment], write the attention output into the memory and gate it with a
    read of the updated memory. See the module docstring for the equations and departures."""

    def __init__(self, dim: int, heads: int = 2, segment_len: int = 16, persistent: int = 4,
                 memory: dict | None = None, residual: bool = True, gate: str = "mix") -> None:
        super().__init__()
        _check_gate(gate, "titans_mac")
        if not isinstance(segment_len, int) or segment_len < 1:
            raise ConfigError("titans_mac: the segment length must be a positive integer", expected="an integer >= 1",
                              got=segment_len, fix="e.g. segment_len: 16")
        self.memory = _titans(dim, {"chunk_size": segment_len, **(memory or {})})   # one write per segment
        chunk = self.memory.cfg.chunk_size
        if self.memory.cfg.path == "chunked" and segment_len % chunk:
            raise ConfigError("titans_mac: the memory's chunk size does not divide the segment length",
                              expected=f"a chunk_size that divides segment_len={segment_len}", got=chunk,
                              fix=f"set memory: {{chunk_size: {segment_len}}} or a divisor of it")
        self.attention = CausalAttention(dim, heads, persistent=persistent)
        self.gate = OutputGate(dim, gate)
        self.dim, self.segment_len, self.residual = dim, segment_len, bool(residual)

    def forward(self, x: torch.Tensor, state: dict | None = None):
        self.memory.check_input(x, None, "recurrent")
        b, t, _ = x.shape
        length = self.segment_len
        if t % length:
            raise ConfigError("titans_mac: the segment length does not divide the sequence length",
                              expected=f"a length that is a multiple of segment_len={length}", got=f"length {t}",
                              fix="pad the sequence, or pick a segment_len that divides every call's length")
        memory_state = None if state is None else state["memory"]
        context = None if state is None else state["query_context"]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        outputs = []
        for start in range(0, t, length):
            segment = x[:, start:start + length]
            q, _, _, context = self.memory.project_qkv(segment, context)
            retrieved = read_memory(self.memory, memory_state, q)                    # h_t = M*_{t-1}(q_t)
            attended = self.attention.with_prefix(segment, retrieved, causal)       # Attn([p ‖ h_t ‖ S_t])
            y = segment + attended if self.residual else attended                   # y_t (with §4.4's residual)
            read, memory_state = self.memory(y, memory_state)                       # M_t = M_{t-1}(y_t)
            outputs.append(self.gate(segment, attended, read))                      # o_t = y_t ⊗ M*_t(y_t)
        return torch.cat(outputs, 1), {"memory": memory_state, "query_context": context}


class MemoryAsGate(nn.Module):
    """Titans MAG (§4.2): sliding-window attention with persistent tokens and the neural memory on the
    same input, combined by a gate over their RMSNorm-ed outputs ŷ, m̂ (`gate`):

        mix       o = W_o(g ⊙ ŷ + (1 − g) ⊙ m̂),  g = σ(W_g x + b)     (default)
        product   o = W_o(ŷ ⊙ σ(m̂))

    See the module docstring."""

    def __init__(self, dim: int, heads: int = 2, window: int = 16, persistent: int = 4,
                 memory: dict | None = None, gate: str = "mix") -> None:
        super().__init__()
        _check_gate(gate, "titans_mag")
        self.attention = CausalAttention(dim, heads, window, persistent)
        self.memory = _titans(dim, memory)
        self.gate = OutputGate(dim, gate)

    def branches(self, x: torch.Tensor, state: dict | None = None):
        """The two branches on the same input: (attention output, memory output, state). The memory
        runs first, so its input checks (shape, dtype, NaN, chunk size) come before any attention work."""
        m, memory_state = self.memory(x, None if state is None else state["memory"])
        y, attention_state = self.attention(x, None if state is None else state["attention"])
        return y, m, {"memory": memory_state, "attention": attention_state}

    def forward(self, x: torch.Tensor, state: dict | None = None):
        y, m, new = self.branches(x, state)
        return self.gate(x, y, m), new


class MemoryAsLayer(nn.Module):
    """Titans MAL (§4.3): the neural memory, then sliding-window attention with persistent tokens on its
    output, o = y + SW-Attn*(LN(x + y)), y = M(x). See the module docstring."""

    def __init__(self, dim: int, heads: int = 2, window: int = 16, persistent: int = 4,
                 memory: dict | None = None) -> None:
        super().__init__()
        self.memory = _titans(dim, memory)
        self.norm = nn.LayerNorm(dim)
        self.attention = CausalAttention(dim, heads, window, persistent)

    def forward(self, x: torch.Tensor, state: dict | None = None):
        y, memory_state = self.memory(x, None if state is None else state["memory"])
        a, attention_state = self.attention(self.norm(x + y), None if state is None else state["attention"])
        return y + a, {"memory": memory_state, "attention": attention_state}


@MEMORY_LAYERS.register("titans_mac", summary="Titans memory as context: per segment, retrieve from the LMM, "
                        "attend over [persistent | retrieved | segment], write, gate", paper=PAPER)
def titans_mac(dim: int, heads: int = 2, segment_len: int = 16, persistent: int = 4,
               memory: dict | None = None, residual: bool = True, gate: str = "mix") -> MemoryAsContext:
    """Titans MAC (Behrouz et al. 2024, §4.1); `memory`: settings of the titans preset; `residual`: the
    memory writes S_t + Attn(S̃_t) (True) or Attn(S̃_t) alone; `gate`: ⊗, mix or product (as MAG's).
    memory/titans.py."""
    return MemoryAsContext(dim, heads, segment_len, persistent, memory, residual, gate)


@MEMORY_LAYERS.register("titans_mag", summary="Titans memory as gate: sliding-window attention with persistent "
                        "tokens and the LMM, combined by a sigmoid gate (mix or product)", paper=PAPER)
def titans_mag(dim: int, heads: int = 2, window: int = 16, persistent: int = 4,
               memory: dict | None = None, gate: str = "mix") -> MemoryAsGate:
    """Titans MAG (Behrouz et al. 2024, §4.2); `memory`: settings of the titans preset; `gate`: mix or
    product. memory/titans.py."""
    return MemoryAsGate(dim, heads, window, persistent, memory, gate)


@MEMORY_LAYERS.register("titans_mal", summary="Titans memory as layer: the LMM, then sliding-window attention "
                        "with persistent tokens", paper=PAPER)
def titans_mal(dim: int, heads: int = 2, window: int = 16, persistent: int = 4,
               memory: dict | None = None) -> MemoryAsLayer:
    """Titans MAL (Behrouz et al. 2024, §4.3); `memory`: settings of the titans preset. memory/titans.py."""
    return MemoryAsLayer(dim, heads, window, persistent, memory)


__all__ = ["MemoryAsContext", "MemoryAsGate", "MemoryAsLayer", "OutputGate", "read_memory", "titans_mac", "titans_mag",
           "titans_mal"]
