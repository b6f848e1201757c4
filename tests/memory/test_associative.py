"""The associative-memory core: the per-token and chunked paths agree for every preset, the state
carries a sequence across calls and saves, the update rules do what their papers say, and bad input
gets a clear error."""
import pytest
import torch

from palimpsest.core.errors import ConfigError, UnknownNameError
from palimpsest.memory import MemoryState, create_memory, preset_names
from palimpsest.memory.associative import (
    AssociativeMemory,
    MemoryConfig,
    chunk_weights_read,
    gradient_factors,
    memory_forward,
    project,
)
from palimpsest.memory.presets import PRESETS as PRESETS_SETTINGS

PRESETS = preset_names()


def test_every_preset_is_registered():
    assert set(PRESETS) == {"linear_attention", "deltanet", "gated_deltanet", "titans", "moneta", "yaad", "memora"}


@pytest.mark.parametrize("order", ["store_first", "retrieve_first"])
@pytest.mark.parametrize("name", PRESETS)
def test_chunked_and_per_token_paths_agree(name, order):
    """Outputs and final states equal to 1e-10 in float64 (random inputs, 3 chunks of 4, two heads)."""
    torch.manual_seed(0)
    layer = create_memory(name, 16, heads=2, chunk_size=4).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    y1, s1 = layer(x, path="chunked", order=order)
    y2, s2 = layer(x, path="recurrent", order=order)
    assert torch.allclose(y1, y2, atol=1e-10, rtol=0)
    for key in s1.weights:
        assert torch.allclose(s1.weights[key], s2.weights[key], atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["gated_deltanet", "titans", "moneta", "memora"])
def test_the_paths_have_the_same_gradients(name):
    torch.manual_seed(1)
    layer = create_memory(name, 16, heads=2, chunk_size=4).double()
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    grads = []
    for path in ("chunked", "recurrent"):
        layer.zero_grad()
        y, _ = layer(x, path=path)
        (y ** 2).sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("kind", ["lq", "kl"])
@pytest.mark.parametrize("bases", [1, 2])
def test_the_hand_written_backward_of_per_token_weights_is_autograd_s(kind, bases):
    """_ChunkWeights (a chunk's per-token accumulators A_t = Σ_k base[t, k] B_k + Σ_s coef[t, s] g_s x_sᵀ,
    reduced to ℓq power sums or KL reads inside one Function) against the same function written with
    autograd in float64: outputs and every input's gradient to 1e-10, with one base (gd) and two
    (momentum), for q = 4 (its own branch) and q = 3; and torch.autograd.gradcheck."""
    torch.manual_seed(4)
    n, c, o, i = 2, 3, 4, 5
    tensors = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
               for shape in ((n, bases, o, i), (n, c, bases), (n, c, c), (n, c, o), (n, c, i), (n, c, i))]
    if kind == "lq":
        tensors = tensors[:5]

    def autograd_reference(power, bases_, base, coef, g, x, h=None):
        acc = torch.einsum("nck,nkoi->ncoi", base, bases_) + torch.einsum("nct,nto,nti->ncoi", coef, g, x)
        if kind == "lq":
            return acc.abs().pow(power).sum((-2, -1))
        return power * (torch.softmax(acc, -1) @ h.unsqueeze(-1)).squeeze(-1)

    for power in ((4.0, 3.0) if kind == "lq" else (2.0,)):
        def fn(*ts, power=power):
            return chunk_weights_read(kind, power, *ts[:5], ts[5] if kind == "kl" else None)
        out, want = fn(*tensors), autograd_reference(power, *tensors)
        assert torch.allclose(out, want, rtol=1e-12, atol=1e-10)
        weights = torch.randn_like(out)
        got_grads = torch.autograd.grad((out * weights).sum(), tensors)
        want_grads = torch.autograd.grad((want * weights).sum(), tensors)
        for got, expect in zip(got_grads, want_grads):
            assert torch.allclose(got, expect, rtol=1e-10, atol=1e-10)
        assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("name", ["moneta", "memora"])
def test_every_sub_block_size_computes_the_same_reads(name, block):
    """The per-token weights of ℓq / KL retention are built from the state before each sub-block;
    any sub-block length gives the per-token path's outputs (float64, 1e-10), with momentum too."""
    torch.manual_seed(5)
    for rule in ("gd", "momentum"):
        layer = create_memory(name, 16, heads=2, chunk_size=4, rule=rule).double()
        layer.core.block = block
        x = torch.randn(2, 8, 16, dtype=torch.float64)
        for order in ("store_first", "retrieve_first"):
            want = layer(x, path="recurrent", order=order)[0]
            assert torch.allclose(layer(x, path="chunked", order=order)[0], want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("retention", ["lq", "kl"])
def test_per_token_weights_for_any_chunk_and_architecture(retention):
    """ℓq / KL retention on a matrix memory and on the MLP, with chunks of 1, 3 (prime: sub-blocks of
    one token) and 9 (three sub-blocks of 3): the chunked path equals the per-token path (float64, 1e-10)."""
    torch.manual_seed(6)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    for architecture in ("matrix", "mlp"):
        for chunk in (1, 3, 9):
            layer = create_memory("memora" if retention == "kl" else "moneta", 16, heads=2, chunk_size=chunk,
                                  architecture=architecture).double()
            want = layer(x, path="recurrent")[0]
            assert torch.allclose(layer(x, path="chunked")[0], want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["deltanet", "titans", "memora"])
def test_a_state_carries_the_sequence_across_calls_and_saves(name, tmp_path):
    torch.manual_seed(2)
    layer = create_memory(name, 16, heads=2, chunk_size=4)
    x = torch.randn(2, 16, 16)
    whole, _ = layer(x)
    first, state = layer(x[:, :8])
    path = state.detach().save(tmp_path / "state.safetensors")
    again = MemoryState.load(path)
    second, _ = layer(x[:, 8:], state=again)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    assert all(not t.requires_grad for t in state.detach().tensors().values())


def test_the_delta_rule_stores_and_overwrites_associations():
    """DeltaNet with step 1 on orthonormal keys recalls every value exactly, and a key written again
    returns its new value; linear attention (Hebbian) returns the sum of the old and the new."""
    cfg = MemoryConfig(architecture="matrix", bias="l2")
    hebb = MemoryConfig(architecture="matrix", bias="dot")
    keys = torch.eye(4).view(1, 1, 4, 4)
    values = torch.randn(1, 1, 4, 4)
    new = torch.randn(1, 1, 1, 4)
    k = torch.cat([keys, keys[:, :, :1]], 2)
    v = torch.cat([values, new], 2)
    theta = torch.ones(1, 1, 5)
    for config, expect_new in ((cfg, new[0, 0, 0]), (hebb, values[0, 0, 0] + new[0, 0, 0])):
        core = AssociativeMemory(config, 1, 4)
        _, state = core(k, k, v, theta, path="recurrent", chunk_size=5)
        w = state.weights["W1"][0, 0]
        assert torch.allclose(w @ keys[0, 0, 0], expect_new, atol=1e-5)
        for i in range(1, 4):
            assert torch.allclose(w @ keys[0, 0, i], values[0, 0, i], atol=1e-5)


def test_a_retention_gate_fades_old_memories_and_momentum_carries_surprise():
    keys = torch.eye(4).view(1, 1, 4, 4)
    v = torch.randn(1, 1, 4, 4)
    theta = torch.ones(1, 1, 4)
    core = AssociativeMemory(MemoryConfig(architecture="matrix", bias="l2", retention="decay"), 1, 4)
    _, kept = core(keys, keys, v, theta, alpha=torch.ones(1, 1, 4), path="recurrent")
    _, faded = core(keys, keys, v, theta, alpha=torch.full((1, 1, 4), 0.5), path="recurrent")
    first = v[0, 0, 0]
    assert torch.allclose(kept.weights["W1"][0, 0] @ keys[0, 0, 0], first, atol=1e-5)
    assert torch.allclose(faded.weights["W1"][0, 0] @ keys[0, 0, 0], first * 0.5 ** 3, atol=1e-5)
    # with momentum the first write keeps acting: after four tokens its surprise has been added 4 times
    # (decayed by η each time) although the key was written once
    mom = AssociativeMemory(MemoryConfig(architecture="matrix", bias="dot", rule="momentum"), 1, 4)
    _, state = mom(keys, keys, v, theta, eta=torch.full((1, 1, 4), 0.5), path="recurrent")
    assert torch.allclose(state.weights["W1"][0, 0] @ keys[0, 0, 0], first * (1 + 0.5 + 0.25 + 0.125), atol=1e-5)


def test_retention_projections():
    a = torch.randn(2, 3, 5, 4)
    kl = project(a, MemoryConfig(retention="kl", kl_scale=2.0))
    assert torch.allclose(kl.sum(-1), torch.full((2, 3, 5), 2.0)) and (kl > 0).all()
    lq = project(a, MemoryConfig(retention="lq", q=4.0))
    norm = a.abs().pow(4).sum((-2, -1), keepdim=True).pow(0.25)
    assert torch.allclose(lq, a / norm ** 2)
    assert torch.equal(project(a, MemoryConfig(retention="decay")), a)


@pytest.mark.parametrize("mlp_norm", [False, True])
def test_the_hand_written_inner_gradient_is_autograd_s(mlp_norm):
    """gradient_factors (rank-1 factors per token and layer) equals autograd of ½‖M(k) − v‖², with and
    without the LayerNorm on the MLP's output."""
    torch.manual_seed(3)
    cfg = MemoryConfig(architecture="mlp", mlp_norm=mlp_norm)
    ws = [torch.randn(2, 3, 12, 6, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 3, 6, 12, dtype=torch.float64, requires_grad=True)]
    k, v = torch.randn(2, 2, 3, 5, 6, dtype=torch.float64).unbind(0)
    loss = 0.5 * ((memory_forward(ws, k, cfg)[0] - v) ** 2).sum()
    for (g, x), want in zip(gradient_factors(ws, k, v, cfg, None), torch.autograd.grad(loss, ws)):
        assert torch.allclose(g.transpose(-1, -2) @ x, want, atol=1e-10)


def _titans_writes(mlp_norm: bool):
    torch.manual_seed(0)
    cfg = MemoryConfig(**{**PRESETS_SETTINGS["titans"], "mlp_norm": mlp_norm, "chunk_size": 16})
    core = AssociativeMemory(cfg, 1, 32)
    k = torch.nn.functional.normalize(torch.randn(8, 1, 256, 32), dim=-1)
    gate = torch.ones(8, 1, 256)
    return core(k, k, 3 * torch.randn(8, 1, 256, 32), 0.1 * gate, 0.99 * gate, 0.9 * gate, path="chunked")


def test_the_titans_memory_stays_bounded_where_the_plain_mlp_blows_up():
    """256 writes of values of scale 3 at θ = 0.1, η = 0.9, chunks of 16: the plain MLP memory's
    weights overflow (the MQAR divergence of seed 1); with the output LayerNorm (the preset's
    default) they stay below 100."""
    y, _ = _titans_writes(mlp_norm=False)
    assert not torch.isfinite(y).all()
    y, state = _titans_writes(mlp_norm=True)
    assert torch.isfinite(y).all() and max(w.abs().max() for w in state.weights.values()) < 100


def test_memora_stores_associations_in_isolation():
    """4 random pairs written 4 times into a Memora memory alone (no outer training): the read of each
    key is closest to its own value for most keys (chance 25 %). With c = 1 and near-uniform initial
    rows (kl_init_std None) every hidden unit reads the same average of the key and recall is at chance."""
    def recall(**settings):
        torch.manual_seed(0)
        cfg = MemoryConfig(**{**PRESETS_SETTINGS["memora"], "expansion": 1, "chunk_size": 8, **settings})
        core = AssociativeMemory(cfg, 1, 32).double()
        k = torch.nn.functional.normalize(torch.randn(64, 1, 4, 32, dtype=torch.float64), dim=-1)
        v = torch.randn(64, 1, 4, 32, dtype=torch.float64)
        keys, values = k.repeat(1, 1, 4, 1), v.repeat(1, 1, 4, 1)
        gate = torch.ones(keys.shape[:3], dtype=torch.float64)
        _, state = core(keys, keys, values, 0.3 * gate, 0.99 * gate, path="chunked")
        read = memory_forward([project(state.weights[n], cfg) for n in core.names], k, cfg)[0]
        sim = torch.nn.functional.cosine_similarity(read.unsqueeze(3), v.unsqueeze(2), dim=-1)
        return (sim.argmax(-1) == torch.arange(4)).double().mean().item()
    assert recall() > 0.8
    assert recall(kl_scale=1.0, kl_init_std=None) < 0.4


def test_memory_layers_work_on_any_sequence_of_vectors():
    layer = create_memory("titans", 8, heads=1, chunk_size=2)
    y, state = layer(torch.randn(3, 6, 8))
    assert y.shape == (3, 6, 8) and state.weights["W1"].shape[:2] == (3, 1)


# -- bad input ---------------------------------------------------------------------------------------


def test_an_unknown_preset_lists_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'titans'"):
        create_memory("titan", 16)


def test_bad_settings_are_refused():
    with pytest.raises(Exception, match="retention"):
        create_memory("deltanet", 16, retention="sometimes")
    with pytest.raises(Exception, match="not_a_setting"):
        create_memory("deltanet", 16, not_a_setting=1)


def test_bad_inputs_and_states_get_clear_errors():
    layer = create_memory("deltanet", 16, heads=2, chunk_size=4)
    x = torch.randn(2, 8, 16)
    _, state = layer(x)
    with pytest.raises(ConfigError, match="chunk size does not divide"):
        layer(torch.randn(2, 6, 16))
    layer(torch.randn(2, 6, 16), path="recurrent")      # the per-token path takes any length
    with pytest.raises(ConfigError, match="NaN or infinite"):
        layer(torch.full((2, 8, 16), float("nan")))
    with pytest.raises(ConfigError, match="wrong shape"):
        layer(torch.randn(2, 8, 15))
    with pytest.raises(ConfigError, match="floating point"):
        layer(torch.zeros(2, 8, 16, dtype=torch.long))
    with pytest.raises(ConfigError, match="wrong shape"):
        layer(torch.randn(3, 8, 16), state=state)                          # another batch size
    with pytest.raises(ConfigError, match="wrong dtype"):
        layer(x, state=MemoryState({k: v.double() for k, v in state.weights.items()}))
    with pytest.raises(ConfigError, match="wrong weights"):
        layer(x, state=create_memory("titans", 16, heads=2, chunk_size=4)(x)[1])
    with pytest.raises(ConfigError, match="wrong type"):
        layer(x, state={"W1": state.weights["W1"]})
