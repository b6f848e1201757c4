"""Sparsey: the Code Selection Algorithm (familiar inputs reinstate their code, novel ones get a
near-random one, similar ones overlapping ones), single-trial storage and recall, the two-level
hierarchy over digit images, and the errors for bad input."""
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.memory.sparsey import SparseyHierarchy, SparseyLevel, SparseyMac, binarize, code_overlap, tiling


def sparse_patterns(n, size=200, active=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, size, dtype=torch.uint8)
    for i in range(n):
        x[i, torch.randperm(size, generator=g)[:active]] = 1
    return x


def variant(base, keep, seed):
    """`base` with all but `keep` of its active units moved elsewhere (input overlap keep / |base|)."""
    g = torch.Generator().manual_seed(seed)
    on, off = base.nonzero().flatten(), (base == 0).nonzero().flatten()
    out = base.clone()
    drop = on[torch.randperm(len(on), generator=g)[keep:]]
    out[drop] = 0
    out[off[torch.randperm(len(off), generator=g)[:len(drop)]]] = 1
    return out


def test_csa_probabilities_follow_the_familiarity_modulated_sigmoid():
    mac = SparseyMac(10, modules=2, cells=4, g_floor=0.5, height=100.0, power=1.0, steepness=20.0, inflection=0.5)
    v = torch.tensor([[1.0, 0.2, 0.0, 0.0], [1.0, 0.3, 0.1, 0.0]])        # G = 1: eta = 101
    p = mac.probabilities(v)
    mu = 1 + 100 * torch.sigmoid(20 * (v - 0.5))
    assert torch.allclose(p, mu / mu.sum(-1, keepdim=True))
    assert p[:, 0].min() > 0.9                                              # the V = 1 cells win almost surely
    low = torch.tensor([[0.4, 0.1, 0.0, 0.0], [0.3, 0.3, 0.0, 0.0]])        # G = 0.35 <= G-: flat, uniform draw
    assert torch.allclose(mac.probabilities(low), torch.full((2, 4), 0.25))


def test_patterns_stored_once_are_recalled_and_recognised():
    mac = SparseyMac(200, modules=12, cells=16)
    stored = sparse_patterns(20)
    codes = mac.store(stored)
    assert torch.equal(mac.retrieve(stored), codes)                         # one trial was enough
    novel = sparse_patterns(20, seed=1)
    assert mac.familiarity(stored).min() == 1.0 and mac.familiarity(novel).max() < 0.6
    assert code_overlap(mac.store(stored[:5]), codes[:5]).diag().mean() > 0.8  # a familiar input reuses its code


def test_similar_inputs_get_overlapping_codes_and_novel_ones_do_not():
    overlaps = {keep: [] for keep in (20, 17, 14, 0)}
    for seed in range(6):
        base = sparse_patterns(1, seed=100 + seed)[0]
        for keep in overlaps:
            mac = SparseyMac(200, modules=16, cells=16, seed=seed)
            code = mac.store(base.unsqueeze(0))
            overlaps[keep].append(float(code_overlap(mac.store(variant(base, keep, seed).unsqueeze(0)), code)))
    mean = {keep: sum(v) / len(v) for keep, v in overlaps.items()}
    assert mean[20] > 0.95                                                  # the same input: (almost) the same code
    assert mean[20] >= mean[17] > mean[14] > mean[0]                        # code overlap falls with input overlap
    assert mean[17] > 0.9 and 0.3 < mean[14] < 0.9 and mean[0] < 0.15       # a novel input: near-random (1/16)


def test_hierarchy_shapes_and_silent_macs():
    assert tiling(8, 8, 3, field=4, stride=2).shape == (9, 48)              # overlapping RFs tile 8 x 8
    model = SparseyHierarchy(shape=(8, 8, 3), field=4, stride=4, level1=(6, 5), level2=(7, 9))
    assert model.level1.fields.shape == (4, 48) and model.level2.inputs == 4 * 6 * 5
    x = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
    x[:, :4, :4, 0] = 1                                                     # only the top-left patch is on
    codes1, codes2 = model.store(x.flatten(1))
    assert codes1.shape == (3, 4, 6) and codes2.shape == (3, 7)
    assert (codes1[:, 0] >= 0).all() and (codes1[:, 1:] == -1).all()        # blank patches keep their macs silent
    assert model.level1.as_input(codes1).sum(1).tolist() == [6, 6, 6]


def test_hierarchy_recalls_digits_stored_in_one_trial():
    from palimpsest.data.datasets import load_dataset

    data = load_dataset("digits", standardize=False)
    x = binarize(torch.from_numpy(data.x_train[:40]))
    model = SparseyHierarchy(csa1=dict(g_floor=0.7, inflection=0.8, freeze_at=0.2), csa2=dict(g_floor=0.8),
                             level2=(16, 64))
    codes1, codes2 = model.store(x)
    again1, again2 = model.retrieve(x)
    assert (again2 == codes2).all(1).float().mean() >= 0.95                 # the level-2 code comes back
    assert model.familiarity(x).mean() > 0.9 > model.familiarity(binarize(torch.from_numpy(data.x_test[:40]))).mean()


def test_critical_period_freezes_a_mac():
    level = SparseyLevel(200, torch.arange(200).unsqueeze(0), modules=8, cells=8, freeze_at=0.05)
    level.store(sparse_patterns(40))
    assert level.frozen().all()
    before = level.weights.clone()
    codes = level.store(sparse_patterns(5, seed=3))
    assert torch.equal(level.weights, before) and torch.equal(codes, level.retrieve(sparse_patterns(5, seed=3)))


def test_bad_input_gets_a_clear_error():
    mac = SparseyMac(10)
    with pytest.raises(ConfigError, match="binary"):
        mac.store(torch.rand(2, 10))
    with pytest.raises(ConfigError, match="shape"):
        mac.store(torch.zeros(2, 9))
    with pytest.raises(ConfigError, match="tile"):
        tiling(8, 8, 3, field=3, stride=2)
    with pytest.raises(ConfigError, match="outside"):
        SparseyLevel(10, torch.tensor([[0, 10]]))
    with pytest.raises(ConfigError, match="floor"):
        SparseyMac(10, g_floor=1.0)
    x = binarize(torch.randn(5, 1, 4, 4), levels=3)
    assert x.shape == (5, 48) and set(x.unique().tolist()) <= {0, 1}
