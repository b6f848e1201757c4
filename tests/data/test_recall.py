"""Recall tasks: the Zoology layout, fresh samples from a seeded generator, answers that follow the
rules of each task."""
import pytest
import torch

from palimpsest.core.errors import SpecError, UnknownNameError
from palimpsest.data.recall import IGNORE, recall_task


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_mqar_follows_the_zoology_layout():
    task = recall_task("mqar", vocab_size=64, seq_len=32, n_pairs=4)
    b = task.sample(50, gen(0))
    x, y = b["input_ids"], b["labels"]
    assert x.shape == y.shape == (50, 32)
    keys, values = x[:, 0:8:2], x[:, 1:8:2]
    assert ((keys >= 1) & (keys < 32)).all() and ((values >= 32) & (values < 64)).all()
    for i in range(50):
        pairs = dict(zip(keys[i].tolist(), values[i].tolist()))
        asked = (y[i] != IGNORE).nonzero().flatten()
        assert len(asked) == 4 and (asked >= 8).all() and (asked % 2 == 0).all()
        for p in asked.tolist():
            assert pairs[int(x[i, p])] == int(y[i, p])      # the answer sits at the query's own position
    assert task.chance == 1 / 32


def test_samples_are_fresh_and_reproducible():
    task = recall_task("mqar")
    a, b, c = task.sample(8, gen(1)), task.sample(8, gen(1)), task.sample(8, gen(2))
    assert torch.equal(a["input_ids"], b["input_ids"]) and not torch.equal(a["input_ids"], c["input_ids"])
    g = gen(3)
    assert not torch.equal(task.sample(8, g)["input_ids"], task.sample(8, g)["input_ids"])


def test_forgetting_mqar_asks_for_the_latest_value():
    task = recall_task("forgetting_mqar", vocab_size=64, seq_len=40, n_pairs=4, n_updates=2, random_fill=False)
    b = task.sample(30, gen(0))
    x, y = b["input_ids"], b["labels"]
    updated = 0
    for i in range(30):
        latest = {}
        for p in range(0, 12, 2):                  # 4 pairs then 2 updates
            latest[int(x[i, p])] = int(x[i, p + 1])
        first = {int(x[i, p]): int(x[i, p + 1]) for p in range(0, 8, 2)}
        asked = (y[i] != IGNORE).nonzero().flatten().tolist()
        assert len(asked) == 4
        for p in asked:
            assert int(y[i, p]) == latest[int(x[i, p])]
        updated += sum(first[k] != latest[k] for k in first)
    assert updated == 60                          # two keys per sequence got a different value


def test_forgetting_mqar_rounds_reassign_keys_many_times():
    task = recall_task("forgetting_mqar", vocab_size=64, seq_len=64, n_pairs=4, n_updates=4, n_rounds=6,
                       random_fill=False)
    b = task.sample(20, gen(0))
    x, y = b["input_ids"], b["labels"]
    for i in range(20):
        history: dict[int, list[int]] = {}
        for p in range(0, 56, 2):                  # 4 pairs then 6 rounds of 4 updates
            history.setdefault(int(x[i, p]), []).append(int(x[i, p + 1]))
        assert len(history) == 4 and all(len(h) == 7 for h in history.values())
        assert all(a != b for h in history.values() for a, b in zip(h, h[1:]))
        for p in (y[i] != IGNORE).nonzero().flatten().tolist():
            assert int(y[i, p]) == history[int(x[i, p])][-1]
    with pytest.raises(SpecError, match="seq_len"):
        recall_task("forgetting_mqar", seq_len=64, n_pairs=4, n_updates=4, n_rounds=7)


def test_passkey_and_selective_copy():
    task = recall_task("passkey", vocab_size=64, n_chunks=8, chunk_len=4, n_values=10)
    b = task.sample(20, gen(0))
    x, y = b["input_ids"], b["labels"]
    assert x.shape == (20, 32) and (x[:, -1] == 2).all() and (y[:, :-1] == IGNORE).all()
    for i in range(20):
        marker = (x[i] == 1).nonzero().flatten()
        assert len(marker) == 1 and marker[0] < 7 * 4 - 1 and int(x[i, marker[0] + 1]) == int(y[i, -1])
    copy = recall_task("selective_copy", vocab_size=12, region=16, n_tokens=4)
    b = copy.sample(5, gen(0))
    for i in range(5):
        data = b["input_ids"][i, :16][b["input_ids"][i, :16] != 0]
        assert data.tolist() == b["labels"][i, -4:].tolist()


def test_bad_task_settings_are_clear():
    with pytest.raises(UnknownNameError, match="did you mean 'mqar'"):
        recall_task("mqr")
    with pytest.raises(SpecError, match="n_pairs"):
        recall_task("mqar", seq_len=16, n_pairs=8)
    with pytest.raises(SpecError, match="n_updates"):
        recall_task("forgetting_mqar", n_pairs=2, n_updates=3)
