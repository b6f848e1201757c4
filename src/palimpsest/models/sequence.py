"""Small sequence models for the recall tasks (data/recall.py): token embedding (+ learned positions),
blocks of pre-norm [token mixer + MLP], final norm, a linear read-out over the vocabulary.

The token mixer of each block is a registered memory layer (`MEMORY_LAYERS`, core/registry.py):
`attention` and `sliding_window` (here, the reference architecture), and the test-time memories of
palimpsest.memory (presets of the associative core, `mom`, `hcam`; import palimpsest.memory to register
them). Every mixer follows one API, `y, state = mixer(x, state=None)`.

    RecallLM(vocab_size=256, dim=64, blocks=2, mixer="deltanet", mixer_settings={"chunk_size": 16})
    RecallLM(..., layers=[("sliding_window", {"window": 16}), ("hcam", {"chunk_len": 16})])
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from ..core.registry import MEMORY_LAYERS


class CausalAttention(nn.Module):
    """Multi-head causal softmax attention; with `window` each position sees only the last `window`
    positions (itself included). State: the keys and values seen so far (a KV cache), so that
    `y, state = attn(x, state)` continues a sequence.

    `persistent` > 0 adds that many learned tokens (Titans' persistent memory, Behrouz et al. 2024 §3.3:
    input-independent parameters prepended to the sequence): their keys and values come from the same
    projection as the sequence's, every query sees them (they never leave a window) and they are not
    part of the state (they are parameters)."""

    def __init__(self, dim: int, heads: int = 2, window: int | None = None, persistent: int = 0) -> None:
        super().__init__()
        if not isinstance(heads, int) or heads < 1 or dim % heads:
            raise ConfigError("attention heads must divide the width", expected=f"a divisor of {dim}", got=heads,
                              fix=f"pick heads among {[h for h in range(1, dim + 1) if dim % h == 0][:6]}")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ConfigError("attention window must be a positive integer", expected="an integer >= 1 (or None)",
                              got=window, fix="e.g. window: 16")
        if not isinstance(persistent, int) or persistent < 0:
            raise ConfigError("the number of persistent tokens must be a non-negative integer",
                              expected="an integer >= 0 (0: none)", got=persistent, fix="e.g. persistent: 4")
        self.dim, self.heads, self.window = dim, heads, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.persistent = nn.Parameter(torch.randn(persistent, dim) * 0.02) if persistent else None

    def persistent_kv(self, batch: int):
        """Keys and values (B, H, P, d) of the persistent tokens, or (None, None)."""
        if self.persistent is None:
            return None, None
        p, d, h = self.persistent.shape[0], self.dim, self.heads
        k, v = F.linear(self.persistent, self.qkv.weight[d:]).view(p, 2, h, d // h).permute(1, 2, 0, 3)
        return k.unsqueeze(0).expand(batch, -1, -1, -1), v.unsqueeze(0).expand(batch, -1, -1, -1)

    def _attend(self, q, k, v, allowed):
        """softmax attention of q over [persistent ‖ k] (the persistent tokens seen by every query)."""
        pk, pv = self.persistent_kv(q.shape[0])
        if pk is not None:
            if pk.dim() < k.dim():      # blocked keys (B, H, N, L, d)
                pk = pk.unsqueeze(2).expand(-1, -1, k.shape[2], -1, -1)
                pv = pv.unsqueeze(2).expand(-1, -1, k.shape[2], -1, -1)
            k, v = torch.cat([pk, k], -2), torch.cat([pv, v], -2)
            allowed = torch.cat([allowed.new_ones(*allowed.shape[:-1], pk.shape[-2]), allowed], -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)

    def forward(self, x: torch.Tensor, state: dict | None = None):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if state is None and self.window is not None and t > self.window and t % self.window == 0:
            return self._blocked(q, k, v)
        past = 0
        if state is not None:
            past = state["k"].shape[2]
            k, v = torch.cat([state["k"], k], 2), torch.cat([state["v"], v], 2)
        rows = torch.arange(t, device=x.device).unsqueeze(1) + past
        cols = torch.arange(k.shape[2], device=x.device).unsqueeze(0)
        allowed = cols <= rows
        if self.window is not None:
            allowed = allowed & (cols > rows - self.window)
        y = self._attend(q, k, v, allowed)
        keep = k.shape[2] if self.window is None else min(k.shape[2], self.window - 1)
        new = {"k": k[:, :, k.shape[2] - keep:], "v": v[:, :, v.shape[2] - keep:]}
        return self.out(y.transpose(1, 2).reshape(b, t, d)), new

    def with_prefix(self, x: torch.Tensor, prefix: torch.Tensor, prefix_allowed: torch.Tensor) -> torch.Tensor:
        """Causal attention over x (B, T, dim) that also reads the persistent tokens (every query) and
        `prefix` (B, S, dim) where `prefix_allowed` (T, S) is true: Titans' memory-as-context attention
        over [persistent ‖ retrieved ‖ segment]. No window, no state (one segment)."""
        b, t, d = x.shape
        s, h = prefix.shape[1], self.heads
        q, k, v = self.qkv(torch.cat([prefix, x], 1)).view(b, s + t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        y = self._attend(q[:, :, s:], k, v, torch.cat([prefix_allowed, causal], 1))
        return self.out(y.transpose(1, 2).reshape(b, t, d))


    def _blocked(self, q, k, v):
        """Sliding-window attention in blocks of `window` queries, each over its own block and the one
        before it: O(T·window) instead of O(T²), the same result as the masked full attention."""
        b, h, t, d = q.shape
        w = self.window
        n = t // w
        qb, kb, vb = (x.reshape(b, h, n, w, d) for x in (q, k, v))
        pad = torch.zeros_like(kb[:, :, :1])
        keys = torch.cat([torch.cat([pad, kb[:, :, :-1]], 2), kb], 3)            # (B, H, N, 2w, d)
        values = torch.cat([torch.cat([pad, vb[:, :, :-1]], 2), vb], 3)
        r = torch.arange(w, device=q.device).unsqueeze(1)
        c = torch.arange(2 * w, device=q.device).unsqueeze(0)
        allowed = ((c <= r + w) & (c > r)).expand(n, w, 2 * w).clone()
        allowed[0, :, :w] = False                                                 # nothing before the start
        y = self._attend(qb, keys, values, allowed)
        state = {"k": k[:, :, t - (w - 1):], "v": v[:, :, t - (w - 1):]}
        return self.out(y.reshape(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)), state


@MEMORY_LAYERS.register("attention", summary="causal softmax attention (the reference architecture; a KV cache)")
def attention(dim: int, heads: int = 2) -> CausalAttention:
    """Causal multi-head softmax attention, "Attention Is All You Need" (Vaswani et al. 2017)."""
    return CausalAttention(dim, heads)


@MEMORY_LAYERS.register("sliding_window", summary="causal attention over the last `window` positions")
def sliding_window(dim: int, heads: int = 2, window: int = 16) -> CausalAttention:
    """Causal attention restricted to the last `window` positions (a local, fixed-size memory)."""
    return CausalAttention(dim, heads, window)


class Block(nn.Module):
    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim), mixer
        hidden = int(round(mlp_ratio * dim))
        self.norm2 = nn.LayerNorm(dim) if hidden else None
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) if hidden else None

    def forward(self, x, state=None, select=None):
        if select is not None and getattr(self.mixer, "accepts_select", False):
            y, state = self.mixer(self.norm1(x), state, select=select)
        else:
            y, state = self.mixer(self.norm1(x), state)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, state


def make_mixer(name: str, dim: int, settings: dict) -> nn.Module:
    entry = MEMORY_LAYERS.get(name)
    try:
        return entry.obj(dim, **settings)
    except TypeError as err:
        raise ConfigError(f"bad settings for memory layer {name!r}", expected="the layer's keyword arguments",
                          got=settings, fix=str(err)) from None


class RecallLM(nn.Module):
    """Embedding, `blocks` blocks of [mixer + MLP], a read-out over the vocabulary. `layers` lists
    (mixer name, settings) per block and overrides `blocks` / `mixer`. `forward(input_ids, states)`
    returns logits (B, T, vocab); `aux_loss` holds the mixers' auxiliary losses of the last forward
    (mixture-of-memories load balancing)."""

    token_model = True   # models/adapters.py: per-position cross-entropy on `labels`

    def __init__(self, vocab_size: int, dim: int = 64, blocks: int = 2, mixer: str = "attention",
                 mixer_settings: dict | None = None, layers: list | None = None, mlp_ratio: float = 4.0,
                 max_len: int | None = 2048) -> None:
        super().__init__()
        if vocab_size < 2 or dim < 1:
            raise ConfigError("a sequence model needs a vocabulary and a width", expected="vocab_size >= 2, dim >= 1",
                              got=f"vocab_size={vocab_size}, dim={dim}")
        layers = layers or [(mixer, dict(mixer_settings or {}))] * blocks
        self.vocab_size, self.dim, self.max_len = vocab_size, dim, max_len
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_len, dim) if max_len else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, make_mixer(n, dim, dict(s)), mlp_ratio) for n, s in layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.aux_loss = torch.zeros(())

    def forward(self, input_ids: torch.Tensor, states: list | None = None, offset: int = 0,
                select: torch.Tensor | None = None):
        """Logits (B, T, vocab), or (N, vocab) at the N positions where the boolean mask `select`
        (B, T) is true (the read-out then costs only what is asked)."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ConfigError("a sequence model reads token ids", expected="an integer tensor (batch, time)",
                              got=f"{tuple(input_ids.shape)} {input_ids.dtype}")
        if int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0:
            raise ConfigError("token id outside the vocabulary", expected=f"ids in [0, {self.vocab_size})",
                              got=f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        x = self.embed(input_ids)
        if self.position is not None:
            t = input_ids.shape[1]
            if offset + t > self.max_len:
                raise ConfigError("sequence longer than the model's positions", expected=f"<= {self.max_len} tokens",
                                  got=offset + t, fix="build the model with a larger max_len")
            x = x + self.position(torch.arange(offset, offset + t, device=x.device))
        states = states or [None] * len(self.blocks)
        new_states, aux = [], x.new_zeros(())
        last = len(self.blocks) - 1
        for i, (block, state) in enumerate(zip(self.blocks, states)):
            # the last block's mixer may compute only the positions the read-out is asked for
            x, s = block(x, state, select if i == last else None)
            new_states.append(s)
            extra = getattr(block.mixer, "aux_loss", None)
            if isinstance(extra, torch.Tensor):
                aux = aux + extra
        self.aux_loss = aux
        if select is not None:
            x = x[select]
        return self.head(self.norm(x))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["Block", "CausalAttention", "RecallLM", "attention", "make_mixer", "sliding_window"]
