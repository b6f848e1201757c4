"""Worst-case forget sets (Challenging Forgets): the bi-level selection finds a set that unlearning
by gradient ascent leaves better remembered than a random set of the same size."""
import numpy as np
import pytest

from palimpsest.core.errors import ConfigError
from palimpsest.forget.worst_case import _project, forget_loss_after_ascent, worst_case_forget_set


def test_projection_keeps_weights_in_the_box_with_their_sum():
    import torch
    w = _project(torch.tensor([3.0, -1.0, 0.5, 0.2, 0.9]), 2)
    assert float(w.sum()) == pytest.approx(2, abs=1e-4) and float(w.min()) >= 0 and float(w.max()) <= 1


def test_the_worst_case_set_is_harder_to_forget_than_random_sets(digits_tensors, trained_digits):
    x, y, _, _ = digits_tensors
    pool = np.random.default_rng(0).permutation(len(y))[:400]
    out = worst_case_forget_set(trained_digits, x, y, 40, pool=pool, outer_steps=15)
    assert len(out["indices"]) == 40 and set(out["indices"]) <= set(pool)
    assert out["objective"][-1] < out["objective"][0]
    worst = forget_loss_after_ascent(trained_digits, x, y, out["indices"])
    rng = np.random.default_rng(1)
    randoms = [forget_loss_after_ascent(trained_digits, x, y, rng.choice(pool, 40, replace=False)) for _ in range(5)]
    assert worst < min(randoms)
    with pytest.raises(ConfigError, match="smaller than its pool"):
        worst_case_forget_set(trained_digits, x, y, 400, pool=pool)
