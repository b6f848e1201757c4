"""Titans' MAC, MAG and MAL mixers (memory/titans.py): shapes, causality, state continuation, gradients
to the persistent tokens and the gate, MAG's gate formula, and the errors of bad settings."""
import pytest
import torch

import palimpsest.memory  # noqa: F401  (registers the mixers)
from palimpsest.core.errors import ConfigError, PalimpsestError
from palimpsest.memory.presets import create_memory
from palimpsest.memory.titans import read_memory
from palimpsest.models.sequence import CausalAttention, RecallLM

HYBRIDS = ["titans_mac", "titans_mag", "titans_mal"]


def build(name, dim=16, **settings):
    torch.manual_seed(0)
    return create_memory(name, dim, **settings).double()


def inputs(t=64, dim=16, seed=1):
    return torch.randn(2, t, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", HYBRIDS)
def test_shape_and_causality(name):
    layer, x = build(name), inputs()
    y, _ = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    later = x.clone()
    later[:, 40:] += 1.0
    y2, _ = layer(later)
    assert torch.equal(y2[:, :40], y[:, :40])         # nothing reads a later position
    assert (y2[:, 40:] - y[:, 40:]).abs().max() > 1e-3


@pytest.mark.parametrize("name,split", [("titans_mag", 16), ("titans_mag", 32), ("titans_mal", 16),
                                        ("titans_mal", 48), ("titans_mac", 32)])
def test_two_calls_with_the_state_equal_one_call(name, split):
    """MAG and MAL at any split that is a multiple of the memory's chunk (16 also crosses the sliding
    window's blocked and masked paths); MAC at a segment boundary."""
    layer, x = build(name), inputs()
    whole, _ = layer(x)
    first, state = layer(x[:, :split])
    second, _ = layer(x[:, split:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-10)


def test_mac_segments_start_where_a_call_starts():
    """MAC's segments are cut per call: a split inside a segment is refused, and splitting at a
    multiple of one segment length changes nothing only at segment boundaries."""
    layer, x = build("titans_mac", segment_len=32), inputs()
    with pytest.raises(ConfigError) as err:
        layer(x[:, :16])
    assert err.value.expected and err.value.got and err.value.fix
    whole, _ = layer(x)
    first, state = layer(x[:, :32])
    second, _ = layer(x[:, 32:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-10)


def test_mac_retrieves_what_earlier_segments_wrote():
    """The retrieved tokens h_t = M*_{t-1}(q_t) change with the memory's state: the same segment read
    after a different past gives a different output (the long-term memory reaches the attention)."""
    layer = build("titans_mac")
    x = inputs(48)
    past_a, past_b = inputs(32, seed=2), inputs(32, seed=3)
    _, state_a = layer(past_a)
    _, state_b = layer(past_b)
    ya, _ = layer(x[:, :16], state_a)
    yb, _ = layer(x[:, :16], state_b)
    assert (ya - yb).abs().max() > 1e-3
    q = layer.memory.project_qkv(x[:, :16], None)[0]
    assert (read_memory(layer.memory, state_a["memory"], q) - read_memory(layer.memory, None, q)).abs().max() > 1e-3


@pytest.mark.parametrize("name", HYBRIDS)
def test_gradients_reach_the_persistent_tokens_the_memory_and_the_gate(name):
    layer, x = build(name), inputs()
    y, _ = layer(x)
    y.pow(2).mean().backward()
    wanted = {"attention.persistent": layer.attention.persistent, "memory.core.initial.0": layer.memory.core.initial[0],
              "memory.to_gates.weight": layer.memory.to_gates.weight}
    if name != "titans_mal":
        gate = layer.gate
        wanted.update({"norm_memory.weight": gate.norm_memory.weight, "norm_attention.weight": gate.norm_attention.weight,
                       "to_gate.weight": gate.to_gate.weight, "to_gate.bias": gate.to_gate.bias})
    for label, p in wanted.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, label


def test_mag_gate_combines_the_normalised_branches():
    """mix: o = W_o(g ⊙ ŷ + (1 − g) ⊙ m̂), g = σ(W_g x + b); product: o = W_o(ŷ ⊙ σ(m̂)), with ŷ, m̂ the
    RMSNorm-ed branches on the same input. Opening the gate fully (b → +∞) leaves the attention branch
    alone, closing it (b → −∞) the memory branch; with the product gate and the memory's read-out
    zeroed the gate is one half everywhere."""
    layer, x = build("titans_mag"), inputs()
    o, _ = layer(x)
    gate = layer.gate
    y, m = gate.norm_attention(layer.attention(x)[0]), gate.norm_memory(layer.memory(x)[0])
    g = torch.sigmoid(gate.to_gate(x))
    assert torch.allclose(o, gate.out(g * y + (1 - g) * m), atol=1e-12)
    for bias, branch in [(60.0, y), (-60.0, m)]:
        with torch.no_grad():
            gate.to_gate.bias.fill_(bias)
        assert torch.allclose(layer(x)[0], gate.out(branch), atol=1e-12)
    product = build("titans_mag", gate="product")
    o, _ = product(x)
    gate = product.gate
    y, m = gate.norm_attention(product.attention(x)[0]), gate.norm_memory(product.memory(x)[0])
    assert torch.allclose(o, gate.out(y * torch.sigmoid(m)), atol=1e-12)
    with torch.no_grad():
        product.memory.out.weight.zero_()
    closed, _ = product(x)
    assert torch.allclose(closed, 0.5 * gate.out(y), atol=1e-12)
    assert (closed - o).abs().max() > 1e-3


def test_mac_output_gate_reads_the_updated_memory():
    """MAC's o_t = y_t ⊗ M*_t(y_t): with the gate closed on the attention side (b → −∞) the output is
    the memory's read after the segment's writes, W_o(RMSNorm(M*_t(S_t + Attn(S̃_t)))), computed here
    step by step from the layer's parts."""
    layer, x = build("titans_mac", segment_len=16), inputs(32)
    with torch.no_grad():
        layer.gate.to_gate.bias.fill_(-60.0)
    o, _ = layer(x)
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    state, context, expected = None, None, []
    for segment in (x[:, :16], x[:, 16:]):
        q, _, _, context = layer.memory.project_qkv(segment, context)
        attended = layer.attention.with_prefix(segment, read_memory(layer.memory, state, q), causal)
        read, state = layer.memory(segment + attended, state)
        expected.append(layer.gate.out(layer.gate.norm_memory(read)))
    assert torch.allclose(o, torch.cat(expected, 1), atol=1e-12)


def test_persistent_tokens_are_seen_beyond_the_window():
    """With persistent tokens, a query far past the window still reads them (they never slide out), and
    the blocked sliding-window path equals the masked one."""
    torch.manual_seed(0)
    attn = CausalAttention(16, 2, window=4, persistent=3).double()
    x = inputs(32)
    blocked, _ = attn(x)                                   # t % window == 0: the blocked path
    first, state = attn(x[:, :3])                          # masked path, then continued
    rest, _ = attn(x[:, 3:], state)
    assert torch.allclose(torch.cat([first, rest], 1), blocked, atol=1e-10)
    with torch.no_grad():
        attn.persistent.mul_(10)
    assert (attn(x)[0][:, -1] - blocked[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("name,settings,part", [
    ("titans_mac", {"heads": 3}, "heads"),
    ("titans_mag", {"persistent": -1}, "persistent"),
    ("titans_mal", {"window": 0}, "window"),
    ("titans_mac", {"segment_len": 16, "memory": {"chunk_size": 5}}, "chunk size"),
    ("titans_mac", {"segment_len": 0}, "segment"),
    ("titans_mag", {"memory": 3}, "memory settings"),
    ("titans_mag", {"gate": "sum"}, "gate"),
    ("titans_mac", {"gate": "sum"}, "gate"),
])
def test_bad_settings_give_a_clear_error(name, settings, part):
    with pytest.raises(ConfigError) as err:
        create_memory(name, 16, **settings)
    assert part in err.value.what and err.value.expected and err.value.got is not None and err.value.fix


def test_bad_memory_settings_and_unknown_keys_are_clear():
    with pytest.raises(PalimpsestError) as err:       # the titans preset's own validation
        create_memory("titans_mal", 16, memory={"chunk_size": 0})
    assert "chunk_size" in str(err.value)
    with pytest.raises(ConfigError) as err:
        RecallLM(32, 16, 1, "titans_mag", {"windw": 8})
    assert "windw" in str(err.value)


def test_the_hybrids_train_in_a_recall_model():
    """One optimiser step of a 1-block model lowers nothing to NaN and moves the persistent tokens."""
    torch.manual_seed(0)
    for name in HYBRIDS:
        model = RecallLM(32, 16, 1, name, {"memory": {"chunk_size": 8}} if name != "titans_mac" else {"segment_len": 8})
        before = model.blocks[0].mixer.attention.persistent.detach().clone()
        ids = torch.randint(32, (2, 32))
        loss = model(ids).logsumexp(-1).mean()
        loss.backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert not torch.equal(model.blocks[0].mixer.attention.persistent, before), name
