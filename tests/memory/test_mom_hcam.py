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


def test_hcam_top_k_training_gives_an_unpicked_chunk_no_gradient():
    """Why top-k training stalls (docs/MEMORY.md): the chunks a query does not pick get no gradient at
    all (keys, summary or values); reading every chunk in training (train_top_k) gives them one."""
    torch.manual_seed(4)
    for train_top_k, reached in ((None, 1), (4, 4)):
        layer = HCAM(8, heads=1, chunk_len=4, top_k=1, conv_size=0, train_top_k=train_top_k)
        x = torch.randn(1, 20, 8, requires_grad=True)
        y, _ = layer(x)
        y[0, 19].sum().backward()                     # a query in chunk 4 reads chunks 0..3
        touched = [bool(x.grad[0, 4 * j:4 * j + 4].abs().sum() > 0) for j in range(4)]
        assert sum(touched) == reached


def test_hcam_anneals_from_train_top_k_to_top_k_and_resumes_the_schedule():
    layer = HCAM(16, heads=2, chunk_len=4, top_k=1, train_top_k=4, anneal_steps=3)
    x = torch.randn(2, 16, 16)
    read = []
    for _ in range(5):
        read.append(layer.chunks_read())
        layer(x)
    assert read == [4, 3, 2, 1, 1]
    with torch.no_grad():
        layer(x)                                      # not a training pass: the schedule does not move
    assert int(layer.trained_steps) == 5
    again = HCAM(16, heads=2, chunk_len=4, top_k=1, train_top_k=4, anneal_steps=3)
    assert again.chunks_read() == 4
    again.load_state_dict(layer.state_dict())         # a resumed run continues where it stopped
    assert again.chunks_read() == 1 and layer.eval().chunks_read() == 1
    with pytest.raises(ConfigError, match="train_top_k"):
        HCAM(16, anneal_steps=10)


def test_hcam_chunk_keys_pick_one_set_of_chunks_for_every_head():
    torch.manual_seed(5)
    layer = HCAM(8, heads=2, chunk_len=4, top_k=1, conv_size=0, chunk_keys=True)
    with torch.no_grad():                             # layout [q, chunk q, k, chunk k, v]
        layer.qkv.weight.zero_()
        layer.qkv.weight[8:16] = torch.eye(8)         # chunk query = x
        layer.qkv.weight[24:32] = torch.eye(8)        # chunk key = x
        layer.qkv.weight[32:40] = torch.eye(8)        # value = x
        layer.out.weight.copy_(torch.eye(8))
    x = torch.zeros(1, 12, 8)
    x[0, 0:4, 0] = 5.0
    x[0, 4:8, 1] = 5.0
    x[0, 11, 1] = 5.0                                 # the chunk query points at chunk 1
    y, _ = layer(x)
    # q = k = 0 inside the chunk: uniform attention, so every head returns chunk 1's mean value
    assert torch.allclose(y[0, 11], x[0, 4:8].mean(0), atol=1e-6)
    whole, _ = layer(x)
    a, state = layer(x[:, :6])
    b, _ = layer(x[:, 6:], state)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-6)


@pytest.mark.slow
def test_hcam_trained_with_top_1_learns_a_small_passkey_only_after_annealing():
    """Passkey over 16 chunks of 4 tokens (8 passkeys, chance 1/8), one HCAM block reading its top-1
    chunk: trained with top-1 from the start it stays near chance; reading every chunk at first and
    annealing to top-1 by half-way, it finds the passkey (evaluated with top-1 in both)."""
    import torch.nn.functional as F

    from palimpsest.core.seeding import generator
    from palimpsest.data.recall import recall_task
    from palimpsest.models.sequence import RecallLM
    from palimpsest.run.kinds.memory import evaluate_recall

    task = recall_task("passkey", vocab_size=32, n_chunks=16, chunk_len=4, n_values=8)

    def accuracy(settings):
        torch.manual_seed(0)
        model = RecallLM(32, 32, mixer="", layers=[("hcam", {"chunk_len": 4, "top_k": 1, **settings})],
                         mlp_ratio=2, max_len=task.seq_len)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)
        for step in range(100):
            batch = task.sample(32, generator(0, "train", step))
            mask = batch["labels"] != -100
            loss = F.cross_entropy(model(batch["input_ids"], select=mask), batch["labels"][mask])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return evaluate_recall(model, [task.sample(256, generator(0, "eval"))])

    assert accuracy({}) < 0.3
    assert accuracy({"train_top_k": 16, "anneal_steps": 50}) > 0.9
