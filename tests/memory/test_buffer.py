import numpy as np
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.memory import ReplayBuffer, herding_order


def stream_of(n, n_classes=5, dim=3):
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, dim)
    y = torch.arange(n) % n_classes
    return x, y


def test_reservoir_keeps_every_example_with_equal_probability():
    hits = np.zeros(200)
    for seed in range(300):
        buf = ReplayBuffer(20, "reservoir", seed=seed)
        x, y = stream_of(200)
        for i in range(0, 200, 16):
            buf.add(x[i:i + 16], y[i:i + 16])
        assert len(buf) == 20 and buf.seen == 200
        hits[buf.all()["inputs"][:, 0].long().numpy()] += 1
    rate = hits / 300
    # each example is kept with probability 20/200 = 0.1; early and late halves alike
    assert abs(rate.mean() - 0.1) < 1e-9
    assert abs(rate[:100].mean() - rate[100:].mean()) < 0.02


def test_reservoir_stores_logits_and_samples_without_replacement():
    buf = ReplayBuffer(8, seed=0)
    x, y = stream_of(8)
    buf.add(x, y, logits=torch.randn(8, 5))
    s = buf.sample(5)
    assert s["logits"].shape == (5, 5) and len(set(s["inputs"][:, 0].tolist())) == 5


def test_class_balanced_policy_stays_balanced():
    buf = ReplayBuffer(30, "class_balanced", seed=0)
    for c in range(3):  # classes arrive one after another, as in class-incremental learning
        x = torch.randn(100, 2)
        buf.add(x, torch.full((100,), c))
        counts = buf.class_counts()
        assert max(counts.values()) - min(counts.values()) <= 1
    assert buf.class_counts() == {0: 10, 1: 10, 2: 10}


def test_select_class_balanced_with_herding_keeps_priority_order():
    buf = ReplayBuffer(12, seed=0)
    feats = lambda x: x  # noqa: E731
    x0 = torch.randn(50, 4)
    buf.select_class_balanced(x0, torch.zeros(50, dtype=torch.long), torch.zeros(50, dtype=torch.long),
                              "herding", feats)
    assert buf.class_counts() == {0: 12}
    first = buf.all()["inputs"][:4].clone()
    x1 = torch.randn(50, 4) + 3
    buf.select_class_balanced(x1, torch.ones(50, dtype=torch.long), torch.ones(50, dtype=torch.long), "herding", feats)
    assert buf.class_counts() == {0: 6, 1: 6}
    assert torch.equal(buf.all()["inputs"][:4], first)  # shrinking keeps the highest-priority exemplars


def test_herding_mean_is_closer_than_random():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(500, 8, generator=g) * torch.linspace(0.1, 3, 8)
    fn = torch.nn.functional.normalize(f.double(), dim=1)
    herd = herding_order(f, 10)
    assert len(set(herd.tolist())) == 10
    err_herd = (fn[herd].mean(0) - fn.mean(0)).norm()
    err_rand = np.mean([(fn[torch.randperm(500, generator=g)[:10]].mean(0) - fn.mean(0)).norm() for _ in range(50)])
    assert err_herd < 0.5 * err_rand


def test_state_round_trip_and_bad_settings():
    buf = ReplayBuffer(5, seed=1)
    x, y = stream_of(20)
    buf.add(x, y)
    other = ReplayBuffer(5)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.all()["inputs"], buf.all()["inputs"])
    assert torch.equal(other.sample(3)["inputs"], buf.sample(3)["inputs"])  # the generator state travels too
    with pytest.raises(ConfigError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ConfigError, match="unknown buffer policy"):
        ReplayBuffer(3, "fifo")
