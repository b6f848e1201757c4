import numpy as np
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.data import class_incremental, domain_incremental, online, recurring, task_incremental


def test_class_incremental_splits_classes_disjointly(digits):
    s = class_incremental(digits, 5)
    assert s.scenario == "class" and s.n_tasks == 5
    assert s.task_classes == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for exp in s.train:
        assert set(exp.targets.tolist()) == set(exp.classes)
        # indices point back at the dataset's own examples
        assert np.array_equal(digits.y_train[exp.indices], exp.targets.numpy())
    assert sum(len(e) for e in s.train) == len(digits.y_train)


def test_class_order_from_seed_is_reproducible(digits):
    a = class_incremental(digits, 5, shuffle_classes=True, seed=3)
    b = class_incremental(digits, 5, shuffle_classes=True, seed=3)
    c = class_incremental(digits, 5, shuffle_classes=True, seed=4)
    assert a.class_order == b.class_order != c.class_order
    assert sorted(a.class_order) == list(range(10))


def test_uneven_first_experience(digits):
    s = class_incremental(digits, 3, first_experience_classes=6)
    assert [len(c) for c in s.task_classes] == [6, 2, 2]


@pytest.mark.parametrize("kwargs,match", [
    ({"class_order": []}, "class_order is empty"),
    ({"class_order": [0, 1, 1, 2]}, "repeats classes"),
    ({"class_order": [0, 11]}, "does not have"),
    ({"n_experiences": 11}, "more experiences than classes"),
    ({"n_experiences": 3}, "do not split evenly"),
    ({"n_experiences": 3, "first_experience_classes": 5}, "does not fit"),
])
def test_bad_class_splits_are_clear_errors(digits, kwargs, match):
    args = {"n_experiences": 5, **kwargs}
    with pytest.raises(ConfigError, match=match) as info:
        class_incremental(digits, **args)
    assert "expected" in str(info.value)


def test_experiences_are_immutable(digits_stream):
    exp = digits_stream.train[0]
    with pytest.raises(AttributeError):
        exp.task_id = 3
    with pytest.raises(ValueError):
        exp.indices[0] = 5


def test_task_incremental_marks_scenario(digits):
    assert task_incremental(digits, 5).scenario == "task"


def test_permuted_domains_keep_labels_and_change_inputs(digits):
    s = domain_incremental(digits, 3, transform="permutation", seed=1)
    assert s.scenario == "domain" and s.task_classes == [tuple(range(10))] * 3
    x0, x1 = s.train[0].inputs, s.train[1].inputs
    assert torch.equal(s.train[0].targets, s.train[1].targets)
    assert not torch.equal(x0, x1)
    # a permutation only reorders pixels
    assert torch.allclose(x0.flatten(1).sort(1).values, x1.flatten(1).sort(1).values)
    # train and test use the same permutation per experience
    assert torch.allclose(s.test[1].inputs.flatten(1).sort(1).values[0],
                          torch.from_numpy(digits.x_test[0]).flatten().sort().values)


def test_rotations(digits):
    s = domain_incremental(digits, 4, transform="rotation")
    assert torch.allclose(s.train[0].inputs, torch.from_numpy(digits.x_train), atol=1e-5)
    assert not torch.allclose(s.train[2].inputs, s.train[0].inputs)
    assert [d["degrees"] for d in s.info["domains"]] == [0, 45, 90, 135]


def test_validation_split_is_carved_from_training(digits):
    s = class_incremental(digits, 5, validation_fraction=0.2)
    for tr, va in zip(s.train, s.valid):
        assert not set(tr.indices) & set(va.indices)
        assert abs(len(va) - 0.2 * (len(tr) + len(va))) <= 1


def test_online_and_recurring(digits_stream):
    o = online(digits_stream, 10)
    assert o.online_batch_size == 10 and len(o.train) == 5
    r = recurring(digits_stream, 20, "power_law", alpha=2.0, seed=0, introduce="first")
    assert r.learned_task[:5] == [0, 1, 2, 3, 4] and len(r.learned_task) == 20
    spread = recurring(digits_stream, 20, "uniform", seed=0)
    assert [spread.learned_task.index(k) for k in range(5)] == [0, 4, 8, 12, 16]
    assert set(spread.learned_task) == set(range(5))
    with pytest.raises(ConfigError, match="too short"):
        recurring(digits_stream, 3)


def test_power_law_recurrence_favours_recently_seen_tasks(digits_stream):
    # P(task) ~ (steps since last seen)^-alpha: an immediate repeat is the most likely revisit,
    # so with a steep exponent repeats dominate, and with uniform draws they do not.
    def repeat_share(stream):
        order = stream.learned_task
        return np.mean([a == b for a, b in zip(order[5:], order[6:])])
    steep = recurring(digits_stream, 400, "power_law", alpha=3.0, seed=1, introduce="first")
    flat = recurring(digits_stream, 400, "uniform", seed=1, introduce="first")
    assert repeat_share(steep) > 0.7 and repeat_share(flat) < 0.35
    assert steep.info["recurrence"]["order"] == steep.learned_task


def test_zipf_recurrence_gives_fixed_frequencies_by_rank(digits_stream):
    # P(task k) ~ (k + 1)^-alpha, whatever happened recently: frequencies fall with rank and every
    # task keeps coming back (under the recency law a task may never return)
    z = recurring(digits_stream, 1000, "zipf", alpha=1.0, seed=2, introduce="first")
    counts = np.bincount(z.learned_task[5:], minlength=5)
    expected = 995 * (1 / np.arange(1, 6)) / (1 / np.arange(1, 6)).sum()
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    assert all(k in z.learned_task[-200:] for k in range(5))
    assert z.info["recurrence"]["distribution"] == "zipf"
