"""Mixture-of-Memories and HCAM: behaviour on the associative core."""
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.memory import create_memory
from palimpsest.memory.hcam import HCAM
from palimpsest.memory.mom import MixtureOfMemories


def test_a_mixture_of_one_memory_equals_that_memory_exactly():
    torch.manual_seed(0)
    single = create_memory("gated_deltanet", 16, heads=2, chunk_size=4)
    mom = MixtureOfMemories(16, memories=1, top_k=1, shared=False, base="gated_deltanet", heads=2, chunk_size=4)
    missing, unexpected = mom.load_state_dict(single.state_dict(), strict=False)
    assert missing == ["router.weight"] and not unexpected
    x = torch.randn(2, 12, 16)
    (a, sa), (b, sb) = single(x), mom(x)
    assert torch.equal(a, b) and torch.equal(sa.weights["W1"], sb.weights["W1"])


def test_only_the_routed_memories_are_written_and_the_paths_agree():
    torch.manual_seed(1)
    mom = create_memory("mom", 16, memories=4, top_k=1, shared=True, heads=1, chunk_size=4)
    with torch.no_grad():                      # every token prefers memory 2
        mom.router.weight.zero_()
        mom.router.weight[2] = 0.0
        mom.router.weight[2, 0] = 50.0
    x = torch.randn(2, 8, 16)
    x[..., 0] = 1.0
    y, state = mom(x)
    w = state.weights["W1"]                    # (B, (4 + shared) x heads, d, d), memories start empty
    written = [bool(w[:, i].abs().sum() > 0) for i in range(5)]
    assert written == [False, False, True, False, True]      # memory 2 and the shared one
    y2, _ = mom(x, path="recurrent")
    assert torch.allclose(y, y2, atol=1e-5)
    # the load-balancing loss: all tokens on one memory costs K x its share x its probability
    assert float(mom.aux_loss.detach()) == pytest.approx(0.01 * 4 * 1.0, rel=1e-3)


def test_mixture_settings_are_checked():
    with pytest.raises(ConfigError, match="top_k"):
        create_memory("mom", 16, memories=2, top_k=3)
    with pytest.raises(ConfigError, match="without momentum"):
        create_memory("mom", 16, base="titans")


def test_hcam_attends_inside_the_chunk_its_summary_selects():
    torch.manual_seed(2)
    layer = HCAM(8, heads=1, chunk_len=4, top_k=1, conv_size=0)
    with torch.no_grad():
        layer.qkv.weight.copy_(torch.eye(8).repeat(3, 1))       # q = k = v = x
        layer.out.weight.copy_(torch.eye(8))
    x = torch.zeros(1, 12, 8)
    x[0, 0:4, 0] = 5.0                                           # chunk 0 points along e0
    x[0, 4:8, 1] = 5.0                                           # chunk 1 along e1
    x[0, 4, 2] = 1.0                                             # one position of chunk 1 stands out
    x[0, 11, 1] = 5.0                                            # a query in chunk 2 looking for e1
    y, _ = layer(x)
    assert torch.allclose(y[0, :4], torch.zeros(4, 8))          # the first chunk has no past
    inside = torch.softmax(x[0, 4:8] @ x[0, 11] / 8 ** 0.5, 0) @ x[0, 4:8]
    assert torch.allclose(y[0, 11], inside, atol=1e-5)           # chunk 1 only (top-1)
    select = torch.zeros(1, 12, dtype=torch.bool)
    select[0, 11] = True
    ys, _ = layer(x, select=select)
    assert torch.allclose(ys[0, 11], y[0, 11]) and not ys[0, :11].any()


def test_hcam_state_continues_a_stream():
    torch.manual_seed(3)
    layer = HCAM(16, heads=2, chunk_len=4, top_k=2)
    x = torch.randn(2, 16, 16)
    whole, _ = layer(x)
    a, state = layer(x[:, :6])
    b, _ = layer(x[:, 6:], state)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-6)
