"""One associative-memory core with the four Miras choices as pluggable parts, and the layer around it.

"It's All Connected: A Journey Through Test-Time Memorization, Attentional Bias, Retention, and Online
Optimization" (Behrouz, Razaviyayn, Zhong and Mirrokni, 2025) describes a sequence layer as a memory M_W
(the weights W are the state) trained *while the model runs* by an inner optimiser on each token's
key-value pair, from four choices:

    architecture   matrix  M_W(x) = W x
                   mlp     M_W(x) = x + W_L σ(... σ(W_1 x))           (depth L >= 2, σ = SiLU, residual)
    bias           l2      ℓ = ½‖M(k) − v‖²                  ∂ℓ/∂M(k) = e = M(k) − v
    (attentional   lp      ℓ = (1/p) Σ |M(k) − v|^p          ∂ℓ/∂M(k) = sign(e) |e|^(p−1)
     objective)    huber   element-wise Huber, threshold δ_t ∂ℓ/∂M(k) = clamp(e, −δ_t, δ_t)
                   dot     ℓ = −⟨M(k), v⟩                    ∂ℓ/∂M(k) = −v          (Hebbian)
    retention      none    A_t = A_{t−1} + S_t,            W_t = A_t
                   decay   A_t = α_t A_{t−1} + S_t,        W_t = A_t              (forget gate / weight decay)
                   lq      A_t = α_t A_{t−1} + S_t,        W_t = A_t / ‖A_t‖_q^(q−2)   (Moneta)
                   kl      A_t = α_t A_{t−1} + S_t,        W_t = c · softmax(A_t)      (Memora: KL onto
                                                            the simplex scaled by c; A are logits)
    rule           gd        S_t = −θ_t ∇ℓ(W; k_t, v_t)
                   momentum  S_t = η_t S_{t−1} − θ_t ∇ℓ(W; k_t, v_t)   (Titans' "surprise")

with data-dependent gates computed from each token: learning rate θ_t, retention α_t, momentum η_t and
Huber threshold δ_t. A read is y_t = M_{W}(q_t), before the token's own write (`retrieve_first`) or after
it (`store_first`, the default, as in DeltaNet and linear attention).

Where the gradient is taken. When ∇ℓ is linear in W (a matrix memory with the ℓ2 or dot-product bias and
retention none or decay: linear attention, DeltaNet, gated DeltaNet) it is taken at W_{t−1} for every
token and the chunked path is exact for any chunk size: within a chunk the prediction errors solve one
unit-lower-triangular system (the UT/WY form of DeltaNet, generalised here to decay and momentum with
scalar gates). Otherwise (an MLP memory, the ℓp / Huber biases, ℓq / KL retention) no exact parallel form
exists, and, as in Titans §3.2 and Miras, the gradients of every token of a chunk are taken at the
memory's state at the chunk's start (mini-batch gradient descent, the chunk being the inner mini-batch):
for these memories `chunk_size` is part of the model (chunk_size 1 = a fully online memory).

Two paths compute the same function (tests/memory/test_associative.py checks them equal on every
preset): `recurrent`, a per-token reference loop, and `chunked`, which processes `chunk_size` tokens at
once: coefficient matrices from the gates (cumulative products in log space), one batched forward and
backward of the memory per chunk, and reads through per-token weights written as a linear-attention sum.
ℓq retention is a scalar per token and matrix (W_t = A_t / ‖A_t‖_q^(q−2)), so its reads stay that sum
divided by the scalar, and only the norms need every A_t; KL retention (a row softmax) needs every A_t.
Those A_t are materialised inside one autograd Function per chunk and layer (`_ChunkWeights`, its
backward written by hand), each from the state before its sub-block of about sqrt(chunk) tokens
(`SubBlocks`), so that autograd keeps no per-token weights and the work is ~C·sqrt(C) instead of C²
per chunk. Both paths compute the exact per-token recurrence for every retention (Miras' own
chunk-parallel training of Moneta and Memora was not compared).

Departures, stated: ℓ2 is ½‖e‖² (Titans writes ‖e‖², a factor 2 in θ); the Huber bias is element-wise
(Miras switches on the norm of the whole error, which makes the gradient jump at ‖e‖ = δ); gated
DeltaNet's gradient is taken at W_{t−1}, not at α_t W_{t−1} as in Yang, Kautz and Hatamizadeh (2025);
the MLP has no biases; `mlp_norm` (on in the titans preset) reads x + LN(MLP(x)) as titans-pytorch's
ResidualNorm and TTT do, with a LayerNorm without the learned gain titans-pytorch trains at test time.
The LayerNorm's backward is written by hand in `gradient_factors`, so every token's gradient stays a
rank-1 outer product per layer and both paths stay exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ..core.config import Settings, validate
from ..core.errors import ConfigError

ARCHITECTURES = ("matrix", "mlp")
BIASES = ("l2", "lp", "huber", "dot")
RETENTIONS = ("none", "decay", "lq", "kl")
RULES = ("gd", "momentum")
ORDERS = ("store_first", "retrieve_first")
PATHS = ("chunked", "recurrent")


class MemoryConfig(Settings):
    """Settings of one associative-memory layer (the core's four choices and the layer around it)."""

    # -- the core: Miras' four choices ------------------------------------------------------------
    architecture: Literal["matrix", "mlp"] = "matrix"
    depth: int = Field(2, ge=2, description="mlp: number of weight matrices (>= 2)")
    expansion: float = Field(2.0, gt=0, description="mlp: hidden width = expansion x head_dim")
    activation: Literal["silu", "gelu"] = Field("silu", description="mlp: the nonlinearity σ")
    residual: bool = Field(True, description="mlp: M(x) = x + MLP(x); False: M(x) = MLP(x)")
    mlp_norm: bool = Field(False, description="mlp: normalise the MLP's output, M(x) = x + LN(MLP(x)) (LayerNorm "
                           "without gain, as titans-pytorch's ResidualNorm and TTT): the read no longer grows "
                           "with the weights, so the inner gradient shrinks as they grow")
    exact_updates: bool = Field(True, description="take the gradient at W_{t-1} for every token when it is "
                                "linear in W (see the module docstring); False: at the chunk's start, as for "
                                "every other memory")
    bias: Literal["l2", "lp", "huber", "dot"] = "l2"
    p: float = Field(3.0, ge=2, description="lp bias: the exponent p (>= 2 keeps the gradient smooth)")
    huber_delta: float = Field(1.0, gt=0, description="huber bias: the largest threshold; δ_t = huber_delta x σ(.)")
    retention: Literal["none", "decay", "lq", "kl"] = "none"
    q: float = Field(4.0, ge=2, description="lq retention: W = A / ‖A‖_q^(q-2)")
    kl_scale: float = Field(1.0, gt=0, description="kl retention: each row of W sums to this c")
    kl_init_std: float | None = Field(None, gt=0, description="kl retention: standard deviation of the initial "
                                      "logits A (default 1/sqrt(fan-in), as every memory; larger starts the rows "
                                      "peaked instead of near-uniform)")
    rule: Literal["gd", "momentum"] = "gd"
    lr: float = Field(1.0, gt=0, description="inner learning rate θ (its maximum when lr_gate)")
    lr_gate: bool = Field(True, description="θ_t = lr x σ(w·x_t + b) per token and head; False: θ = lr")
    retention_init: float = Field(0.99, gt=0, lt=1, description="initial α_t of a retention gate")
    momentum_init: float = Field(0.9, gt=0, lt=1, description="initial η_t of the momentum gate")
    # -- the layer ----------------------------------------------------------------------------------
    heads: int = Field(2, ge=1)
    head_dim: int | None = Field(None, ge=1, description="default: dim // heads")
    conv_size: int = Field(2, ge=0, description="causal depthwise convolution over q, k, v (a token shift; "
                           "0 = none, 2 = each token also sees the previous one)")
    shift_keys: bool = Field(True, description="start the convolution as a token shift of the keys (k_t from "
                             "x_{t-1}; queries and values from x_t); False: start as the identity")
    chunk_size: int = Field(16, ge=1)
    order: Literal["store_first", "retrieve_first"] = "store_first"
    path: Literal["chunked", "recurrent"] = "chunked"
    qk_norm: bool = Field(True, description="L2-normalise queries and keys per head")
    output_norm: bool = Field(True, description="RMS-normalise each head's read before the output projection")

    @property
    def exact(self) -> bool:
        """True when ∇ℓ is linear in W: the gradient is taken at W_{t-1} for every token and the
        chunked path is exact for any chunk size (see the module docstring)."""
        return (self.exact_updates and self.architecture == "matrix" and self.bias in ("l2", "dot")
                and self.retention in ("none", "decay"))


class NonFiniteInput(ConfigError):
    """A memory layer was handed NaN or infinite values (a diverged model below it, or bad data)."""


# -- the memory function and its gradient -------------------------------------------------------


def _silu_grad(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _gelu_grad(z: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


ACTIVATIONS = {"silu": (F.silu, _silu_grad), "gelu": (F.gelu, _gelu_grad)}


def _apply(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x (..., n, in) through w (..., out, in) shared over n, or w (..., n, out, in) one per row."""
    if w.dim() == x.dim() + 1:
        return (w @ x.unsqueeze(-1)).squeeze(-1)
    return x @ w.transpose(-1, -2)


def _layer_norm(o: torch.Tensor) -> torch.Tensor:
    return (o - o.mean(-1, keepdim=True)) * torch.rsqrt(o.var(-1, unbiased=False, keepdim=True) + LN_EPS)


def _norm_backward(g: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """∂ℓ/∂o from ∂ℓ/∂LN(o) = g (LayerNorm without gain over the last dimension)."""
    inv = torch.rsqrt(o.var(-1, unbiased=False, keepdim=True) + LN_EPS)
    n = (o - o.mean(-1, keepdim=True)) * inv
    return inv * (g - g.mean(-1, keepdim=True) - n * (g * n).mean(-1, keepdim=True))


LN_EPS = 1e-5


def mlp_output(x: torch.Tensor, h: torch.Tensor, cfg: MemoryConfig) -> torch.Tensor:
    """The memory's read from the MLP's last layer h: x + LN(h), x + h, LN(h) or h."""
    if cfg.mlp_norm:
        h = _layer_norm(h)
    return x + h if cfg.residual else h


def memory_forward(weights: list[torch.Tensor], x: torch.Tensor, cfg: MemoryConfig):
    """M_W(x) and what the backward pass needs: (y, layer inputs, pre-activations; with `mlp_norm`
    the last entry of the pre-activations is the MLP's output before its LayerNorm)."""
    if cfg.architecture == "matrix":
        return _apply(weights[0], x), [x], []
    act = ACTIVATIONS[cfg.activation][0]
    inputs, pre, h = [], [], x
    for i, w in enumerate(weights):
        inputs.append(h)
        z = _apply(w, h)
        if i < len(weights) - 1:
            pre.append(z)
            h = act(z)
        else:
            h = z
    if cfg.mlp_norm:
        pre.append(h)
    return mlp_output(x, h, cfg), inputs, pre


def output_grad(y: torch.Tensor, v: torch.Tensor, cfg: MemoryConfig, delta: torch.Tensor | None) -> torch.Tensor:
    """∂ℓ/∂M(k) of the attentional bias (see the module docstring)."""
    if cfg.bias == "dot":
        return -v
    e = y - v
    if cfg.bias == "l2":
        return e
    if cfg.bias == "lp":
        return torch.sign(e) * e.abs().pow(cfg.p - 1)
    d = delta.unsqueeze(-1)
    return torch.minimum(torch.maximum(e, -d), d)


def gradient_factors(weights: list[torch.Tensor], k: torch.Tensor, v: torch.Tensor, cfg: MemoryConfig,
                     delta: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per token and layer, ∇_{W_l} ℓ = g_l ⊗ x_l (a rank-1 outer product): the list of (g_l, x_l),
    each (..., n, out_l) and (..., n, in_l), computed by hand so that it stays differentiable for the
    outer training loop."""
    y, inputs, pre = memory_forward(weights, k, cfg)
    g = output_grad(y, v, cfg, delta)
    if cfg.architecture == "mlp" and cfg.mlp_norm:
        g = _norm_backward(g, pre[-1])
    factors: list = [None] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        factors[i] = (g, inputs[i])
        if i > 0:
            w = weights[i]
            back = g.unsqueeze(-2) @ w if w.dim() == g.dim() + 1 else g @ w
            g = (back.squeeze(-2) if w.dim() == g.dim() + 1 else back) * ACTIVATIONS[cfg.activation][1](pre[i - 1])
    return factors


def lq_divisor(power_sum: torch.Tensor, q: float) -> torch.Tensor:
    """‖A‖_q^(q−2) from Σ|A_ij|^q (bounded away from 0): ℓq retention's W = A / ‖A‖_q^(q−2), shared by
    `project` and the chunked read, which gets the power sums without materialising W."""
    return power_sum.clamp_min(1e-12).pow(1 / q).pow(q - 2).clamp_min(1e-6)


def project(a: torch.Tensor, cfg: MemoryConfig) -> torch.Tensor:
    """W = P(A): the retention's projection of the accumulator (identity for none / decay)."""
    if cfg.retention == "lq":
        return a / lq_divisor(a.abs().pow(cfg.q).sum((-2, -1), keepdim=True), cfg.q)
    if cfg.retention == "kl":
        return cfg.kl_scale * torch.softmax(a, dim=-1)
    return a


# -- the state ----------------------------------------------------------------------------------------


@dataclass
class MemoryState:
    """What a memory layer carries from one call to the next: the accumulators A of each weight
    matrix (B, heads, out, in), the momentum S (same shapes, or None) and the last `conv_size − 1`
    inputs (B, n, dim) of its token shift. Detach it between segments to truncate backpropagation;
    save and load it with safetensors."""

    weights: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor] | None = None
    context: torch.Tensor | None = None
    previous: torch.Tensor | None = None     # the last input row (B, 1, dim), for layers that route on it

    def detach(self) -> MemoryState:
        return MemoryState({k: v.detach() for k, v in self.weights.items()},
                           None if self.momentum is None else {k: v.detach() for k, v in self.momentum.items()},
                           None if self.context is None else self.context.detach(),
                           None if self.previous is None else self.previous.detach())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"weights.{k}": v for k, v in self.weights.items()}
        out.update({f"momentum.{k}": v for k, v in (self.momentum or {}).items()})
        if self.context is not None:
            out["context"] = self.context
        if self.previous is not None:
            out["previous"] = self.previous
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MemoryState:
        weights = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("weights.")}
        momentum = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("momentum.")}
        return cls(weights, momentum or None, tensors.get("context"), tensors.get("previous"))

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.tensors().items()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MemoryState:
        from safetensors.torch import load_file
        return cls.from_tensors(load_file(str(path)))


# -- coefficients of a chunk --------------------------------------------------------------------------


def _products(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For gates g (..., C): D[t, r] = Π_{j=r+1..t} g_j (r <= t, else 0) and a[t] = Π_{j<=t} g_j."""
    c = g.shape[-1]
    cs = torch.log(g).cumsum(-1)
    mask = torch.ones(c, c, dtype=torch.bool, device=g.device).tril()
    diff = (cs.unsqueeze(-1) - cs.unsqueeze(-2)).masked_fill(~mask, float("-inf"))
    return diff.exp(), cs.exp()


def chunk_coefficients(alpha: torch.Tensor, eta: torch.Tensor | None):
    """Scalar coefficients of a chunk (gates (..., C)): A_t = a_t A_0 + b_t S_0 + Σ_{s<=t} c[t, s] u_s
    and S_t = m_t S_0 + Σ_{s<=t} M[t, s] u_s, u_s = −θ_s ∇ℓ_s. Returns (a, b, c, m, M); b, m, M are
    None without momentum (then c = D)."""
    d, a = _products(alpha)
    if eta is None:
        return a, None, d, None, None
    big_m, m = _products(eta)
    return a, (d @ m.unsqueeze(-1)).squeeze(-1), d @ big_m, m, big_m


def _previous(a, b, c):
    """The coefficients of A_{t−1} (what a read before the write, or an exact gradient, sees)."""
    a_prev = torch.cat([torch.ones_like(a[..., :1]), a[..., :-1]], -1)
    b_prev = None if b is None else torch.cat([torch.zeros_like(b[..., :1]), b[..., :-1]], -1)
    c_prev = torch.cat([torch.zeros_like(c[..., :1, :]), c[..., :-1, :]], -2)
    return a_prev, b_prev, c_prev


def _read_through(x, a0, s0, a, b, coef, g, inp):
    """Σ-form of x_t through the per-token matrix a_t A0 + b_t S0 + Σ_s coef[t, s] g_s ⊗ inp_s."""
    z = a.unsqueeze(-1) * _apply(a0, x)
    if s0 is not None:
        z = z + b.unsqueeze(-1) * _apply(s0, x)
    return z + (coef * (x @ inp.transpose(-1, -2))) @ g


class _ChunkWeights(torch.autograd.Function):
    """The per-token accumulators of one chunk, A_t = Σ_k base[t, k] B_k + Σ_s coef[t, s] g_s x_s^T
    (B_k the chunk's starting A, and S with momentum), materialised here and reduced at once, so that
    autograd keeps none of the (chunk, out, in) intermediates:

        lq   returns Σ_ij |A_t[i, j]|^q                        (out (..., C); W_t = A_t / ‖A_t‖_q^(q−2)
                                                                is a scalar times A_t, read linearly)
        kl   returns c · softmax(A_t) h_t, softmax over rows    (out (..., C, o))

    The backward is written by hand (tests/memory/test_associative.py checks it against autograd in
    float64): with G_t = ∂L/∂A_t, ∂L/∂B = baseᵀ G, ∂L/∂base = G Bᵀ, ∂L/∂coef[t, s] = ⟨G_t, g_s x_sᵀ⟩,
    and with H_s = Σ_t coef[t, s] G_t, ∂L/∂g_s = H_s x_s, ∂L/∂x_s = H_sᵀ g_s (two (C, K + C) x
    (K + C, out·in) products, as the forward's one). Shapes: bases (N, K, o, i), base (N, C, K), coef (N, C, C),
    g (N, C, o), x (N, C, i), h (N, C, i) or None."""

    @staticmethod
    def _rows(bases, g, x) -> torch.Tensor:
        """[B_1 .. B_k, g_1 x_1ᵀ .. g_c x_cᵀ] flattened, (n, k + c, o · i)."""
        n, k, o, i = bases.shape
        rows = g.new_empty(n, k + g.shape[1], o, i)
        rows[:, :k] = bases
        torch.mul(g.unsqueeze(-1), x.unsqueeze(-2), out=rows[:, k:])
        return rows.view(n, -1, o * i)

    @staticmethod
    def forward(ctx, bases, base, coef, g, x, h, kind, power):
        # one product: [base | coef] (n, c, k + c) times the rows. Only the (c, o, i) tensor the backward
        # needs is kept (the accumulators for ℓq, the softmax for KL); the rows are rebuilt there
        # (keeping fewer large tensors alive between forward and backward saves page faults too)
        n, _, o, i = bases.shape
        c = g.shape[1]
        coefs = torch.cat([base, coef], -1)
        acc = coefs @ _ChunkWeights._rows(bases, g, x)
        ctx.kind, ctx.power = kind, power
        if kind == "lq":
            ctx.save_for_backward(bases, coefs, g, x, acc)
            if power == 4:
                square = acc * acc
                return torch.linalg.vecdot(square, square)
            return acc.abs().pow(power).sum(-1)
        probs = torch.softmax(acc.view(n, c, o, i), -1)
        read = (probs @ h.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(bases, coefs, g, x, probs, h, read)
        return power * read

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        bases, coefs, g, x = saved[:4]
        n, k, o, i = bases.shape
        c = g.shape[1]
        grad_h = None
        if ctx.kind == "lq":
            q, acc = ctx.power, saved[4]
            grad_acc = (acc * acc).mul_(acc) if q == 4 else acc * acc.abs().pow(q - 2)
            grad_acc.mul_((q * grad).unsqueeze(-1))
        else:
            probs, h, read = saved[4:]
            grad = ctx.power * grad
            grad_h = (grad.unsqueeze(-2) @ probs).squeeze(-2)
            grad_acc = probs * (h.unsqueeze(-2) - read.unsqueeze(-1))
            grad_acc.mul_(grad.unsqueeze(-1))
            grad_acc = grad_acc.view(n, c, o * i)
        grad_coefs = grad_acc @ _ChunkWeights._rows(bases, g, x).transpose(-1, -2)
        grad_bases = (coefs[..., :k].transpose(-1, -2).contiguous() @ grad_acc).view(n, k, o, i)
        grad_outer = (coefs[..., k:].transpose(-1, -2) @ grad_acc).view(n, c, o, i)
        grad_g = (grad_outer @ x.unsqueeze(-1)).squeeze(-1)
        grad_x = (g.unsqueeze(-2) @ grad_outer).squeeze(-2)
        return grad_bases, grad_coefs[..., :k], grad_coefs[..., k:], grad_g, grad_x, grad_h, None, None


def chunk_weights_read(kind: str, power: float, bases, base, coef, g, x, h=None) -> torch.Tensor:
    """`_ChunkWeights` on tensors with any leading dimensions (..., C, ...): flattened to one batch
    dimension and back."""
    lead = g.shape[:-2]
    flat = [t.reshape(-1, *t.shape[len(lead):]).contiguous() for t in (bases, base, coef, g, x)]
    hf = None if h is None else h.reshape(-1, *h.shape[len(lead):]).contiguous()
    out = _ChunkWeights.apply(*flat, hf, kind, power)
    return out.reshape(*lead, *out.shape[1:])


def block_size(chunk: int) -> int:
    """The sub-block length for per-token weights: the largest divisor of the chunk <= sqrt(chunk)
    (64 -> 8), which makes the work of the two levels about equal (see `SubBlocks`)."""
    return max(d for d in range(1, math.isqrt(chunk) + 1) if chunk % d == 0)


class SubBlocks:
    """Chunks cut into sub-blocks of `size` tokens, for the retentions that need every token's
    accumulator A_t (ℓq, KL). Materialising A_t from the chunk's start costs C x (C + 1) x out x in
    per chunk; from the state E_j before its own sub-block, C x (size + 1) x out x in, plus
    (C / size) x C x out x in for the states E_j themselves (64 tokens: 17 instead of 65).

    Built once for all chunks from the gates (..., n, C) and the chunks' coefficients
    (chunk_coefficients): per chunk i, `edges[i]` are the rows that give E_j (and S_j with momentum)
    from the chunk's start and its writes, `read[i]` the coefficients of A_t (store_first) or A_{t−1}
    (retrieve_first) from E_j within each sub-block."""

    def __init__(self, alpha, eta, coefficients, order: str, size: int) -> None:
        ac, bc, cc, mc, bigm = coefficients
        lead, c = alpha.shape[:-1], alpha.shape[-1]
        self.count, self.size = c // size, size
        ends = torch.arange(size - 1, c - 1, size, device=alpha.device)        # the token before each sub-block
        ones, zeros = alpha.new_ones(*lead, 1), alpha.new_zeros(*lead, 1)
        first = alpha.new_zeros(*lead, 1, c)
        # E_0 is the chunk's start (a = 1 for A, b = 1 for S); E_j the state after token ends[j − 1]
        edges = [(torch.cat([ones, ac[..., ends]], -1), None if bc is None else torch.cat([zeros, bc[..., ends]], -1),
                  torch.cat([first, cc[..., ends, :]], -2))]
        if mc is not None:
            edges.append((alpha.new_zeros(*lead, self.count), torch.cat([ones, mc[..., ends]], -1),
                          torch.cat([first, bigm[..., ends, :]], -2)))
        split = (*lead, self.count, size)
        local = chunk_coefficients(alpha.reshape(split), None if eta is None else eta.reshape(split))
        read = local[:3] if order == "store_first" else _previous(*local[:3])
        dim, n = len(lead) - 1, lead[-1]
        self.edges = list(zip(*[list(zip(*(_chunks(x, dim, n) for x in edge))) for edge in edges]))
        self.read = list(zip(*(_chunks(x, dim, n) for x in read)))

    def states(self, i: int, a0, s0, g, inp) -> torch.Tensor:
        """The states before each sub-block of chunk i, (..., count, K, out, in): E_j, and S_j with
        momentum."""
        out = []
        for a, b, coef in self.edges[i]:
            writes = (coef.unsqueeze(-1) * g.unsqueeze(-3)).transpose(-1, -2) @ inp.unsqueeze(-3)
            e = a[..., None, None] * a0.unsqueeze(-3) + writes
            if b is not None:
                e = e + b[..., None, None] * s0.unsqueeze(-3)
            out.append(e)
        return torch.stack(out, -3)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-2], self.count, self.size, x.shape[-1])


def _chunks(x: torch.Tensor | None, dim: int, n: int) -> list:
    """x's chunks along `dim` as a list (one `unbind`, whose backward is one stack; indexing chunk by
    chunk would build a full-size zero gradient for every chunk)."""
    return [None] * n if x is None else list(x.unbind(dim))


def _read_chunk(h, a0, s0, a, b, coef, g, inp, cfg: MemoryConfig, blocks: SubBlocks | None = None,
                chunk: int = 0) -> torch.Tensor:
    """h_t (..., C, in) through the per-token weights P(a_t A0 + b_t S0 + Σ_s coef[t, s] g_s ⊗ inp_s) of
    one chunk, for every retention P: a linear-attention sum for none / decay; for ℓq the same sum
    divided by ‖A_t‖_q^(q−2) (P(A) is a scalar times A), only the norms needing each A_t; for KL each
    A_t is materialised inside `_ChunkWeights`, from the state before its sub-block (`blocks`, for the
    chunk of that index)."""
    if cfg.retention in ("none", "decay"):
        return _read_through(h, a0, s0, a, b, coef, g, inp)
    la, lb, lc = blocks.read[chunk]
    base = la.unsqueeze(-1) if lb is None else torch.stack([la, lb], -1)
    args = (blocks.states(chunk, a0, s0, g, inp), base, lc, blocks.split(g), blocks.split(inp))
    if cfg.retention == "kl":
        z = chunk_weights_read("kl", cfg.kl_scale, *args, blocks.split(h))
        return z.reshape(*z.shape[:-3], -1, z.shape[-1])
    scale = lq_divisor(chunk_weights_read("lq", cfg.q, *args).flatten(-2), cfg.q)
    return _read_through(h, a0, s0, a, b, coef, g, inp) / scale.unsqueeze(-1)

# -- the core -----------------------------------------------------------------------------------------


class AssociativeMemory(nn.Module):
    """The memory core on per-head queries, keys, values and gates: `read(q, k, v, gates, state)`.
    Shapes: q, k, v (B, H, T, d); gates θ, α, η, δ (B, H, T) (α, η, δ may be None). Its parameters
    are the memory's initial weights (per head), learned by the outer loop as in Titans."""

    def __init__(self, cfg: MemoryConfig, heads: int, head_dim: int) -> None:
        super().__init__()
        self.cfg, self.heads, self.head_dim = cfg, heads, head_dim
        self.block: int | None = None       # sub-block length for ℓq / KL retention (None: block_size)
        d = head_dim
        if cfg.architecture == "matrix":
            shapes = [(d, d)]
        else:
            h = max(1, round(cfg.expansion * d))
            shapes = [(h, d)] + [(h, h)] * (cfg.depth - 2) + [(d, h)]
        self.names = [f"W{i + 1}" for i in range(len(shapes))]
        self.initial = nn.ParameterList()
        for out, inp in shapes:
            if cfg.architecture == "matrix" and cfg.retention != "kl":
                w = torch.zeros(heads, out, inp)          # an empty memory (linear attention, DeltaNet)
            elif cfg.retention == "kl" and cfg.kl_init_std is not None:
                w = torch.randn(heads, out, inp) * cfg.kl_init_std
            else:
                w = torch.randn(heads, out, inp) / math.sqrt(inp)
            self.initial.append(nn.Parameter(w))

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape[1:]) for n, p in zip(self.names, self.initial)}

    def initial_state(self, batch: int) -> MemoryState:
        weights = {n: p.unsqueeze(0).expand(batch, *p.shape) for n, p in zip(self.names, self.initial)}
        momentum = None
        if self.cfg.rule == "momentum":
            momentum = {n: torch.zeros_like(w) for n, w in weights.items()}
        return MemoryState(weights, momentum)

    def forward(self, q, k, v, theta, alpha=None, eta=None, delta=None, state: MemoryState | None = None,
                path: str | None = None, chunk_size: int | None = None, order: str | None = None):
        cfg = self.cfg
        path, chunk, order = path or cfg.path, chunk_size or cfg.chunk_size, order or cfg.order
        if state is None:
            state = self.initial_state(q.shape[0])
        ones = torch.ones_like(theta)
        alpha = ones if alpha is None else alpha
        eta = eta if cfg.rule == "momentum" else None
        if cfg.rule == "momentum" and eta is None:
            eta = torch.zeros_like(theta)
        a = [state.weights[n] for n in self.names]
        s = [state.momentum[n] for n in self.names] if eta is not None else None
        if path == "recurrent":
            y, a, s = self._recurrent(q, k, v, theta, alpha, eta, delta, a, s, chunk, order)
        elif cfg.exact:
            y, a, s = self._chunked_exact(q, k, v, theta, alpha, eta, a, s, chunk, order)
        else:
            y, a, s = self._chunked(q, k, v, theta, alpha, eta, delta, a, s, chunk, order)
        new = MemoryState(dict(zip(self.names, a)), None if s is None else dict(zip(self.names, s)))
        return y, new

    # -- the reference: one token at a time ------------------------------------------------------------
    def _recurrent(self, q, k, v, theta, alpha, eta, delta, a, s, chunk, order):
        cfg = self.cfg
        grad_chunk = 1 if cfg.exact else chunk
        outputs = []
        w0 = None
        for t in range(q.shape[2]):
            if t % grad_chunk == 0:
                w0 = [project(x, cfg) for x in a]       # where this chunk's gradients are taken
            qt, kt, vt = q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]
            if order == "retrieve_first":
                outputs.append(memory_forward([project(x, cfg) for x in a], qt, cfg)[0])
            dt = None if delta is None else delta[:, :, t:t + 1]
            factors = gradient_factors(w0, kt, vt, cfg, dt)
            th = theta[:, :, t, None, None]
            u = [-th * (g.transpose(-1, -2) @ x) for g, x in factors]
            if s is not None:
                et = eta[:, :, t, None, None]
                s = [et * si + ui for si, ui in zip(s, u)]
                u = s
            al = alpha[:, :, t, None, None]
            a = [al * ai + ui for ai, ui in zip(a, u)]
            if order == "store_first":
                outputs.append(memory_forward([project(x, cfg) for x in a], qt, cfg)[0])
        return torch.cat(outputs, 2), a, s

    # -- chunked, exact (gradient linear in W) ---------------------------------------------------------
    def _chunked_exact(self, q, k, v, theta, alpha, eta, a, s, chunk, order):
        cfg = self.cfg
        b_, h_, t_, d_ = q.shape
        n = t_ // chunk

        def split(x):
            return x.reshape(b_, h_, n, chunk, *x.shape[3:])

        qc, kc, vc, th, al = split(q), split(k), split(v), split(theta), split(alpha)
        ac, bc, cc, mc, bigm = chunk_coefficients(al, None if eta is None else split(eta))
        a_prev, b_prev, c_prev = _previous(ac, bc, cc)
        if cfg.bias == "dot":
            deltas = -th.unsqueeze(-1) * (-vc)          # u_s = −θ_s (−v_s) k_s^T
            ua = ub = uv = None
        else:
            # errors e_t = A_{t−1} k_t − v_t solve (I + L) E = R, L[t, s] = c_prev[t, s] θ_s (k_s·k_t)
            lower = c_prev * th.unsqueeze(-2) * (kc @ kc.transpose(-1, -2))
            eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
            system = eye + lower
            rhs = [a_prev.unsqueeze(-1) * kc, vc] + ([b_prev.unsqueeze(-1) * kc] if bc is not None else [])
            solved = torch.linalg.solve_triangular(system, torch.cat(rhs, -1), upper=False, unitriangular=True)
            ua, uv = solved[..., :d_], solved[..., d_:2 * d_]
            ub = solved[..., 2 * d_:] if bc is not None else None
            deltas = None
        read_a, read_b, read_c = (ac, bc, cc) if order == "store_first" else (a_prev, b_prev, c_prev)
        qk = qc @ kc.transpose(-1, -2)
        a0 = a[0]
        s0 = s[0] if s is not None else None
        outputs = []
        for i in range(n):
            if deltas is None:
                e = _apply(a0, ua[:, :, i]) - uv[:, :, i]
                if ub is not None:
                    e = e + _apply(s0, ub[:, :, i])
                g = -th[:, :, i].unsqueeze(-1) * e       # −θ_s ∇: the written value direction
            else:
                g = deltas[:, :, i]
            ra, rc = read_a[:, :, i], read_c[:, :, i]
            y = ra.unsqueeze(-1) * _apply(a0, qc[:, :, i]) + (rc * qk[:, :, i]) @ g
            if s0 is not None:
                y = y + read_b[:, :, i].unsqueeze(-1) * _apply(s0, qc[:, :, i])
            outputs.append(y)
            # the state after the chunk
            upd = (cc[:, :, i, -1].unsqueeze(-1) * g).transpose(-1, -2) @ kc[:, :, i]
            new_a = ac[:, :, i, -1, None, None] * a0 + upd
            if s0 is not None:
                new_a = new_a + bc[:, :, i, -1, None, None] * s0
                s0 = mc[:, :, i, -1, None, None] * s0 + (bigm[:, :, i, -1].unsqueeze(-1) * g).transpose(-1, -2) @ kc[:, :, i]
            a0 = new_a
        return torch.cat(outputs, 2), [a0], None if s0 is None else [s0]

    # -- chunked, mini-batch gradients at the chunk's start --------------------------------------------
    def _chunked(self, q, k, v, theta, alpha, eta, delta, a, s, chunk, order):
        cfg = self.cfg
        b_, h_, t_, d_ = q.shape
        n = t_ // chunk

        def split(x):
            return None if x is None else x.reshape(b_, h_, n, chunk, *x.shape[3:])

        qc, kc, vc, th, al, dl, el = (split(x) for x in (q, k, v, theta, alpha, delta, eta))
        coefficients = chunk_coefficients(al, el)
        ac, bc, cc, mc, bigm = coefficients
        read = (ac, bc, cc) if order == "store_first" else _previous(ac, bc, cc)
        blocks = None
        if cfg.retention in ("lq", "kl"):
            blocks = SubBlocks(al, el, coefficients, order, self.block or block_size(chunk))
        # the state after a chunk: the coefficients' last rows (matrices as (..., C, 1) columns)
        last = [None if x is None else x[..., -1] for x in (ac, bc, mc)]
        last += [None if x is None else x[..., -1, :].unsqueeze(-1) for x in (cc, bigm)]
        per_chunk = zip(*(_chunks(x, 2, n) for x in (qc, kc, vc, th, dl, *read, *last)))
        outputs = []
        for i, (qi, ki, vi, thi, dli, ra, rb, rc, end_a, end_b, end_m, end_c, end_bigm) in enumerate(per_chunk):
            w0 = [project(x, cfg) for x in a]
            factors = gradient_factors(w0, ki, vi, cfg, dli)
            neg = -thi.unsqueeze(-1)
            gs = [(neg * g, x) for g, x in factors]          # u_s = (−θ_s g_s) ⊗ x_s
            h = qi
            for j, (g, x) in enumerate(gs):
                z = _read_chunk(h, a[j], None if s is None else s[j], ra, rb, rc, g, x, cfg, blocks, i)
                h = ACTIVATIONS[cfg.activation][0](z) if j < len(gs) - 1 else z
            y = mlp_output(qi, h, cfg) if cfg.architecture == "mlp" else h
            outputs.append(y)
            new_a = [end_a[..., None, None] * aj + (end_c * g).transpose(-1, -2) @ x for aj, (g, x) in zip(a, gs)]
            if s is not None:
                new_a = [na + end_b[..., None, None] * sj for na, sj in zip(new_a, s)]
                s = [end_m[..., None, None] * sj + (end_bigm * g).transpose(-1, -2) @ x for sj, (g, x) in zip(s, gs)]
            a = new_a
        return torch.cat(outputs, 2), a, s


# -- the layer ----------------------------------------------------------------------------------------


def shift_init(conv: nn.Conv1d, first_key: int, n_keys: int, shift_keys: bool) -> None:
    """Start a causal depthwise convolution as the identity, except that the channels
    [first_key, first_key + n_keys) (the keys) read the previous token: a token shift, so that a key
    written at t is the token before the value at t (what associative recall asks). Learned afterwards."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, -1] = 1.0
        if shift_keys:
            conv.weight[first_key:first_key + n_keys, 0, -1] = 0.0
            conv.weight[first_key:first_key + n_keys, 0, -2] = 1.0


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class MemoryLayer(nn.Module):
    """A sequence layer around the associative core, for any sequence of vectors (not only tokens):

        y, state = layer(x, state=None)          x (B, T, dim) -> y (B, T, dim)

    Queries, keys and values are per-head projections of x (after an optional causal token shift);
    the gates are per head and token. `state` is a `MemoryState` (detachable, saveable); passing the
    state a call returned continues the sequence exactly where it stopped (with the chunked path, each
    call's length must be a multiple of `chunk_size`)."""

    def __init__(self, dim: int, **settings) -> None:
        super().__init__()
        cfg = validate(MemoryConfig, settings, "memory layer")
        if dim < 1:
            raise ConfigError("a memory layer needs a positive width", expected="dim >= 1", got=dim)
        head_dim = cfg.head_dim or dim // cfg.heads
        if head_dim < 1:
            raise ConfigError("memory layer: more heads than dimensions", expected=f"heads <= dim ({dim})",
                              got=cfg.heads, fix="lower heads or set head_dim")
        self.cfg, self.dim, self.heads, self.head_dim = cfg, dim, cfg.heads, head_dim
        inner = cfg.heads * head_dim
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        if cfg.conv_size > 1:
            self.conv = nn.Conv1d(3 * inner, 3 * inner, cfg.conv_size, groups=3 * inner, bias=False)
            shift_init(self.conv, inner, inner, cfg.shift_keys)
        self.gate_names = self._gate_names(cfg)
        self.to_gates = nn.Linear(dim, cfg.heads * len(self.gate_names)) if self.gate_names else None
        if self.to_gates is not None:
            with torch.no_grad():
                self.to_gates.weight.mul_(0.1)
                init = {"theta": 0.0, "alpha": _logit(cfg.retention_init), "eta": _logit(cfg.momentum_init),
                        "delta": 0.0}
                self.to_gates.bias.copy_(torch.tensor([init[g] for g in self.gate_names]).repeat_interleave(cfg.heads))
        self.core = AssociativeMemory(cfg, cfg.heads, head_dim)
        self.norm_weight = nn.Parameter(torch.ones(cfg.heads, head_dim)) if cfg.output_norm else None
        self.out = nn.Linear(inner, dim, bias=False)

    @staticmethod
    def _gate_names(cfg: MemoryConfig) -> list[str]:
        names = ["theta"] if cfg.lr_gate else []
        if cfg.retention != "none":
            names.append("alpha")
        if cfg.rule == "momentum":
            names.append("eta")
        if cfg.bias == "huber":
            names.append("delta")
        return names

    # -- checks ---------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, state: MemoryState | None, path: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError("memory layer input has the wrong shape", expected=f"a tensor (batch, time, {self.dim})",
                              got=got, fix="pass a batch of sequences of vectors of the layer's width")
        if not x.is_floating_point():
            raise ConfigError("memory layer input must be floating point", expected="float32 or float64",
                              got=str(x.dtype), fix="embed token ids first (nn.Embedding), or call x.float()")
        if not torch.isfinite(x).all():
            raise NonFiniteInput("memory layer input holds NaN or infinite values", expected="finite numbers",
                              got=f"{int((~torch.isfinite(x)).sum())} non-finite of {x.numel()}",
                              fix="check what produced the input (a diverged layer below, a division by zero)")
        if path == "chunked" and x.shape[1] % self.cfg.chunk_size:
            raise ConfigError("the chunk size does not divide the sequence length",
                              expected=f"a length that is a multiple of chunk_size={self.cfg.chunk_size}",
                              got=f"length {x.shape[1]}",
                              fix="pad the sequence, pick a chunk_size that divides it, or use path='recurrent'")
        if state is None:
            return
        if not isinstance(state, MemoryState):
            raise ConfigError("memory layer state has the wrong type", expected="a MemoryState (what the layer returned)",
                              got=type(state).__name__, fix="pass the state returned by the previous call, or None")
        batch = x.shape[0]
        want = {n: (batch, self.core.heads, *shape) for n, shape in self.core.shapes.items()}
        parts = [("weights", state.weights)] + ([("momentum", state.momentum)] if self.cfg.rule == "momentum" else [])
        for label, tensors in parts:
            if tensors is None or set(tensors) != set(want):
                raise ConfigError(f"memory layer state has the wrong {label}", expected=f"tensors {sorted(want)}",
                                  got=None if tensors is None else sorted(tensors),
                                  fix="pass the state this layer returned (a state of another preset does not fit)")
            for n, t in tensors.items():
                if tuple(t.shape) != want[n]:
                    raise ConfigError(f"memory layer state {label}.{n} has the wrong shape", expected=str(want[n]),
                                      got=tuple(t.shape), fix="use the state of a layer with the same settings and batch size")
                if t.dtype != x.dtype:
                    raise ConfigError(f"memory layer state {label}.{n} has the wrong dtype", expected=str(x.dtype),
                                      got=str(t.dtype), fix="convert the state or the input so that both match")

    # -- forward --------------------------------------------------------------------------------------
    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, t, _ = x.shape
        out: dict[str, torch.Tensor] = {}
        n = self.gate_heads
        if self.to_gates is not None:
            raw = torch.sigmoid(self.to_gates(x)).view(b, t, len(self.gate_names), n).permute(2, 0, 3, 1)
            out = dict(zip(self.gate_names, raw))
        if "theta" in out:
            out["theta"] = cfg.lr * out["theta"]
        else:
            out["theta"] = x.new_full((b, n, t), cfg.lr)
        if "delta" in out:
            out["delta"] = cfg.huber_delta * out["delta"]
        return out

    @property
    def gate_heads(self) -> int:
        """How many memory heads the gates are computed for (a mixture has one set per memory)."""
        return self.heads

    def token_shift(self, qkv: torch.Tensor, context: torch.Tensor | None):
        """The causal convolution over projected q, k, v, continuing from `context` (the last
        conv_size − 1 projected rows of the previous call); returns (qkv, the new context)."""
        keep = self.cfg.conv_size - 1
        if keep < 1:
            return qkv, None
        if context is None:
            context = qkv.new_zeros(qkv.shape[0], keep, qkv.shape[-1])
        full = torch.cat([context, qkv], 1)
        return self.conv(full.transpose(1, 2)).transpose(1, 2), full[:, -keep:]

    def project_qkv(self, x: torch.Tensor, context: torch.Tensor | None):
        """Queries, keys and values (B, H, T, d) after the token shift, and the new context."""
        cfg = self.cfg
        qkv, new_context = self.token_shift(self.to_qkv(x), context)
        b, t, _ = x.shape
        q, k, v = qkv.view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cfg.qk_norm:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return q, k, v, new_context

    def read_out(self, y: torch.Tensor) -> torch.Tensor:
        if self.norm_weight is not None:
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight.unsqueeze(1)
        b, h, t, d = y.shape
        return self.out(y.permute(0, 2, 1, 3).reshape(b, t, h * d))

    def forward(self, x: torch.Tensor, state: MemoryState | None = None, path: str | None = None,
                order: str | None = None) -> tuple[torch.Tensor, MemoryState]:
        path = path or self.cfg.path
        self.check_input(x, state, path)
        q, k, v, context = self.project_qkv(x, None if state is None else state.context)
        g = self.gates(x)
        y, new = self.core(q, k, v, g["theta"], g.get("alpha"), g.get("eta"), g.get("delta"), state,
                           path=path, order=order)
        new.context = context
        return self.read_out(y), new


__all__ = ["ARCHITECTURES", "AssociativeMemory", "BIASES", "MemoryConfig", "MemoryLayer", "MemoryState",
           "NonFiniteInput", "ORDERS",
           "PATHS", "RETENTIONS", "RULES", "chunk_coefficients", "gradient_factors", "memory_forward", "output_grad",
           "project"]
