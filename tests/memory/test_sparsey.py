"""Sparsey: single-trial storage and recognition of sparse binary patterns, similar inputs get
overlapping codes, and no gradient is involved."""
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.memory.sparsey import SparseyMac, binarize, code_overlap


def sparse_patterns(n, size=200, active=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, size, dtype=torch.uint8)
    for i in range(n):
        x[i, torch.randperm(size, generator=g)[:active]] = 1
    return x


def test_patterns_stored_once_are_recalled_and_recognised():
    mac = SparseyMac(200, modules=12, cells=16, floor=0.5)
    stored = sparse_patterns(20)
    codes = mac.store(stored)
    assert torch.equal(mac.retrieve(stored), codes)                       # one trial was enough
    novel = sparse_patterns(20, seed=1)
    assert mac.familiarity(stored).min() == 1.0 and mac.familiarity(novel).max() < 0.8


def test_similar_inputs_get_overlapping_codes():
    mac = SparseyMac(200, modules=16, cells=16, floor=0.3, seed=1)
    base = sparse_patterns(1, active=20)[0]
    mac.store(base.unsqueeze(0))
    near = base.clone()
    on = base.nonzero().flatten()
    near[on[:3]] = 0                                                       # drop 3 of its 20 features
    near[(base == 0).nonzero().flatten()[:3]] = 1
    far = sparse_patterns(1, active=20, seed=7)[0]
    code = mac.retrieve(base.unsqueeze(0))
    both = mac.store(torch.stack([near, far]))
    overlaps = code_overlap(both, code).flatten()
    assert overlaps[0] > 0.8 and overlaps[1] < 0.5


def test_inputs_must_be_binary_and_the_right_size():
    mac = SparseyMac(10)
    with pytest.raises(ConfigError, match="binary"):
        mac.store(torch.rand(2, 10))
    with pytest.raises(ConfigError, match="shape"):
        mac.store(torch.zeros(2, 9))
    x = binarize(torch.randn(5, 1, 4, 4), levels=3)
    assert x.shape == (5, 48) and set(x.unique().tolist()) <= {0, 1}
