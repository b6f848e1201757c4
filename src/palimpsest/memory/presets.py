"""Named presets of the associative core (memory/associative.py), registered in `MEMORY_LAYERS`:

    create_memory("titans", dim=64, heads=2)      ->  MemoryLayer;  y, state = layer(x, state)

| preset | architecture | attentional bias | retention | rule | paper |
|---|---|---|---|---|---|
| linear_attention | matrix | dot product | none | gd, θ = 1 | Katharopoulos et al. 2020 |
| deltanet | matrix | ℓ2 | none | gd, θ_t = β_t | Schlag et al. 2021; Yang et al. 2024 |
| gated_deltanet | matrix | ℓ2 | decay α_t | gd | Yang, Kautz, Hatamizadeh 2025 |
| titans | MLP (2 layers), x + LN(MLP(x)) | ℓ2 | decay α_t | momentum η_t | Behrouz, Zhong, Mirrokni 2024 (LMM) |
| moneta | MLP (2 layers) | ℓp, p = 3 | ℓq, q = 4 | gd | Behrouz et al. 2025 (Miras) |
| yaad | MLP (2 layers) | Huber, δ_t | decay α_t | gd | Behrouz et al. 2025 (Miras) |
| memora | MLP (2 layers) | ℓ2 | KL (softmax, c = 4) | gd | Behrouz et al. 2025 (Miras) |

MLP memories take smaller inner steps (θ <= 0.1 for Titans, 0.3 for the Miras presets): the squared
norm of their hidden features is ~ the hidden width, and at θ = 1 the inner gradient descent
diverges within one sequence (matrix memories read L2-normalised keys, so θ <= 1 is stable).

Each factory's docstring gives the update equations (A accumulator, W = P(A) the memory's weights,
u_t = −θ_t ∇ℓ(W; k_t, v_t)); docs/MEMORY.md has the same table.
"""
from __future__ import annotations

from ..core.registry import MEMORY_LAYERS
from .associative import MemoryLayer

PRESETS: dict[str, dict] = {
    "linear_attention": {"architecture": "matrix", "bias": "dot", "retention": "none", "rule": "gd",
                         "lr": 1.0, "lr_gate": False},
    "deltanet": {"architecture": "matrix", "bias": "l2", "retention": "none", "rule": "gd", "lr": 1.0},
    "gated_deltanet": {"architecture": "matrix", "bias": "l2", "retention": "decay", "rule": "gd", "lr": 1.0},
    "titans": {"architecture": "mlp", "bias": "l2", "retention": "decay", "rule": "momentum", "lr": 0.1,
               "momentum_init": 0.5, "mlp_norm": True},
    "moneta": {"architecture": "mlp", "bias": "lp", "p": 3.0, "retention": "lq", "q": 4.0, "rule": "gd", "lr": 0.3},
    "yaad": {"architecture": "mlp", "bias": "huber", "retention": "decay", "rule": "gd", "lr": 0.3},
    "memora": {"architecture": "mlp", "bias": "l2", "retention": "kl", "rule": "gd", "lr": 0.3, "kl_scale": 4.0,
               "kl_init_std": 3.0},
}

PAPERS = {
    "linear_attention": "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention (Katharopoulos "
                        "et al., 2020)",
    "deltanet": "Linear Transformers Are Secretly Fast Weight Programmers (Schlag et al., 2021); Parallelizing Linear "
                "Transformers with the Delta Rule over Sequence Length (Yang et al., 2024)",
    "gated_deltanet": "Gated Delta Networks: Improving Mamba2 with Delta Rule (Yang, Kautz and Hatamizadeh, 2025)",
    "titans": "Titans: Learning to Memorize at Test Time (Behrouz, Zhong and Mirrokni, 2024): the long-term memory "
              "module (LMM)",
    "moneta": "It's All Connected: A Journey Through Test-Time Memorization, Attentional Bias, Retention, and Online "
              "Optimization (Behrouz et al., 2025): Moneta",
    "yaad": "It's All Connected (Behrouz et al., 2025): Yaad",
    "memora": "It's All Connected (Behrouz et al., 2025): Memora",
}


def _register(name: str, summary: str):
    preset = PRESETS[name]

    def decorator(fn):
        MEMORY_LAYERS.register(name, summary=summary, preset=True, paper=PAPERS[name],
                               **{k: preset[k] for k in ("architecture", "bias", "retention", "rule")})(fn)
        return fn
    return decorator


def _layer(name: str, dim: int, settings: dict) -> MemoryLayer:
    return MemoryLayer(dim, **{**PRESETS[name], **settings})


@_register("linear_attention", "linear attention: W_t = W_{t-1} + v_t k_t^T, y_t = W_t q_t")
def linear_attention(dim: int, **settings) -> MemoryLayer:
    """Linear attention (Katharopoulos et al. 2020) as a memory: matrix, dot-product bias ℓ = −⟨Wk, v⟩,
    no retention, one gradient step of size 1:

        W_t = W_{t−1} + v_t k_t^T            y_t = W_t q_t

    (queries and keys L2-normalised; no feature map and no denominator)."""
    return _layer("linear_attention", dim, settings)


@_register("deltanet", "DeltaNet: W_t = W_{t-1} - β_t (W_{t-1} k_t - v_t) k_t^T")
def deltanet(dim: int, **settings) -> MemoryLayer:
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024): matrix, ℓ2 bias, no retention, the delta rule
    with a data-dependent step β_t = σ(w·x_t + b):

        W_t = W_{t−1} − β_t (W_{t−1} k_t − v_t) k_t^T = W_{t−1}(I − β_t k_t k_t^T) + β_t v_t k_t^T"""
    return _layer("deltanet", dim, settings)


@_register("gated_deltanet", "gated DeltaNet: W_t = α_t W_{t-1} - β_t (W_{t-1} k_t - v_t) k_t^T")
def gated_deltanet(dim: int, **settings) -> MemoryLayer:
    """Gated DeltaNet (Yang, Kautz and Hatamizadeh 2025): DeltaNet with a forget gate α_t ∈ (0, 1):

        W_t = α_t W_{t−1} − β_t (W_{t−1} k_t − v_t) k_t^T

    Departure: the paper takes the gradient at α_t W_{t−1} (W_t = α_t W_{t−1}(I − β_t k_t k_t^T) + β_t v_t
    k_t^T); Miras' general form, used here, takes it at W_{t−1}."""
    return _layer("gated_deltanet", dim, settings)


@_register("titans", "Titans' long-term memory: MLP, l2, momentum (surprise), forget gate")
def titans(dim: int, **settings) -> MemoryLayer:
    """The neural long-term memory of Titans (Behrouz, Zhong and Mirrokni 2024): a 2-layer MLP
    M(x) = x + W_2 σ(W_1 x) trained at test time on ℓ = ½‖M(k_t) − v_t‖², with momentum ("surprise")
    and a forget gate:

        S_t = η_t S_{t−1} − θ_t ∇ℓ(M; k_t, v_t)          (past and momentary surprise)
        M_t = α_t M_{t−1} + S_t                           (α_t = 1 − the paper's forget gate)
        y_t = M_t(q_t)

    Gradients within a chunk are taken at the chunk's first state (the paper's mini-batch gradient
    descent, §3.2), so chunk_size is part of the model.

    Departure (from the paper, after titans-pytorch): the read is M(x) = x + LN(W_2 σ(W_1 x)) (`mlp_norm`,
    LayerNorm without gain; titans-pytorch's ResidualNorm, from TTT). Without it the memory diverged on
    MQAR (seed 1 at lr 0.003, seeds 0-1 at lr 0.01): 16 gradients taken at a chunk's start plus momentum
    overshoot, the weights grow, the hidden features grow with them and the next steps overshoot more,
    to 1e26 within one 64-token sequence. The LayerNorm makes the read invariant to the MLP's scale, so
    the inner gradient shrinks as the weights grow (tests/memory/test_associative.py). titans-pytorch's
    other guards are not needed here: its learning rate is bounded by a sigmoid (as θ_t = lr·σ(.) here),
    its per-sample gradient soft-clamp (`max_grad_norm`) is off by default."""
    return _layer("titans", dim, settings)


@_register("moneta", "Moneta: MLP, lp bias (p=3), lq retention (q=4)")
def moneta(dim: int, **settings) -> MemoryLayer:
    """Moneta (Miras, Behrouz et al. 2025): ℓp attentional bias and ℓq retention on a 2-layer MLP:

        A_t = α_t A_{t−1} − θ_t ∇ℓ_p(W_{t−1}; k_t, v_t),   ∂ℓ_p/∂M(k) = sign(e) |e|^(p−1), p = 3
        W_t = A_t / ‖A_t‖_q^(q−2),                          q = 4"""
    return _layer("moneta", dim, settings)


@_register("yaad", "Yaad: MLP, Huber bias with data-dependent threshold, forget gate")
def yaad(dim: int, **settings) -> MemoryLayer:
    """Yaad (Miras, Behrouz et al. 2025): Huber attentional bias (robust to outlier values) with a
    data-dependent threshold δ_t, and a forget gate, on a 2-layer MLP:

        W_t = α_t W_{t−1} − θ_t ∇ℓ_H(W_{t−1}; k_t, v_t),   ∂ℓ_H/∂M(k) = clamp(M(k) − v, −δ_t, δ_t)

    Departure: the Huber switch is element-wise; the paper switches on ‖M(k) − v‖."""
    return _layer("yaad", dim, settings)


@_register("memora", "Memora: MLP, l2 bias, KL retention onto a scaled simplex (softmax)")
def memora(dim: int, **settings) -> MemoryLayer:
    """Memora (Miras, Behrouz et al. 2025): ℓ2 bias and KL-divergence retention, which keeps every row
    of each weight matrix on the simplex scaled by c (an exponentiated-gradient step):

        W_t = c · softmax(α_t log(W_{t−1}/c) − θ_t ∇ℓ_2(W_{t−1}; k_t, v_t))

    computed in the logit domain: A_t = α_t A_{t−1} − θ_t ∇ℓ_2, W_t = c · softmax(A_t) (softmax is
    shift-invariant, so the two agree).

    c = 4 and initial logits of standard deviation 3 (`kl_scale`, `kl_init_std`; the paper gives
    neither). With c = 1 and logits initialised like any memory's weights (std 1/sqrt(fan-in)) every row
    starts near-uniform: each hidden unit reads the same average of the key (their spread over units was
    0.005 against 0.72 for the unconstrained MLP), the softmax's Jacobian scales every gradient by ~1/n,
    and a memory written alone recalled 4 pairs at chance (23 %); with c = 4 and peaked rows, 91 %
    (tests/memory/test_associative.py)."""
    return _layer("memora", dim, settings)


def create_memory(name: str, dim: int, **settings):
    """A registered memory layer by name (a preset, `mom`, `hcam`, `attention`, ...)."""
    return MEMORY_LAYERS.create(name, dim, **settings)


def preset_names() -> list[str]:
    return [e.name for e in MEMORY_LAYERS.entries() if e.meta.get("preset")]


__all__ = ["PAPERS", "PRESETS", "create_memory", "preset_names"]
