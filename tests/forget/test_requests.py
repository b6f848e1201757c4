import numpy as np
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.forget import ForgetRequest, LeakageError, UnlearningData, resolve

Y = np.arange(100) % 10


def test_class_request_takes_every_example_of_the_class():
    split = resolve(ForgetRequest(kind="classes", classes=[3, 4]), Y, 10)
    assert set(Y[split.forget]) == {3, 4} and len(split.forget) == 20
    assert not set(split.forget) & set(split.retain) and len(split.retain) == 80
    assert split.forget_classes == (3, 4)


def test_random_fraction_is_seeded():
    a = resolve(ForgetRequest(kind="random", fraction=0.1, seed=1), Y)
    b = resolve(ForgetRequest(kind="random", fraction=0.1, seed=1), Y)
    c = resolve(ForgetRequest(kind="random", fraction=0.1, seed=2), Y)
    assert len(a.forget) == 10 and np.array_equal(a.forget, b.forget) and not np.array_equal(a.forget, c.forget)


def test_a_random_request_without_a_seed_draws_from_the_run_seed():
    unseeded = ForgetRequest(kind="random", fraction=0.1)
    runs = [resolve(unseeded, Y, run_seed=s).forget for s in (0, 1, 2)]
    assert not np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[1], runs[2])
    # seed 0 forgets what every seed forgot before the run seed counted; a request's own seed wins
    assert np.array_equal(runs[0], resolve(ForgetRequest(kind="random", fraction=0.1, seed=0), Y, run_seed=5).forget)
    fixed = ForgetRequest(kind="subclass", classes=[2], fraction=0.5, seed=3)
    assert np.array_equal(resolve(fixed, Y, run_seed=0).forget, resolve(fixed, Y, run_seed=1).forget)


def test_subclass_by_fraction_indices_or_predicate():
    half = resolve(ForgetRequest(kind="subclass", classes=[2], fraction=0.5), Y)
    assert len(half.forget) == 5 and set(Y[half.forget]) == {2}
    some = resolve(ForgetRequest(kind="subclass", classes=[2], indices=[2, 12, 13]), Y)
    assert list(some.forget) == [2, 12]   # 13 is not in class 2
    odd = resolve(ForgetRequest(kind="subclass", classes=[2]), Y, predicate=lambda i: i % 20 == 2)
    assert set(odd.forget) == {2, 22, 42, 62, 82}


@pytest.mark.parametrize("request_, match", [
    (ForgetRequest(kind="classes", classes=[12]), "classes the model does not have"),
    (ForgetRequest(kind="subclass", classes=[2], indices=[3]), "the forget set is empty"),
    (ForgetRequest(kind="indices", indices=list(range(100))), "the forget set is the whole training set"),
    (ForgetRequest(kind="random", fraction=1.0), "whole training set"),
    (ForgetRequest(kind="indices", indices=[5, 100]), "out of range"),
    (ForgetRequest(kind="classes"), "needs `classes`"),
])
def test_bad_requests_are_clear_errors(request_, match):
    with pytest.raises(ConfigError, match=match) as info:
        resolve(request_, Y, 10)
    assert "expected" in str(info.value)


def test_leakage_guard_serves_only_declared_splits():
    x, y = torch.randn(100, 3), torch.from_numpy(Y)
    split = resolve(ForgetRequest(kind="classes", classes=[1]), Y, 10)
    data = UnlearningData(x, y, split, {"forget"}, 10)
    assert len(data.forget()) == 10
    with pytest.raises(LeakageError, match="read the retain set, which it did not declare"):
        data.retain()
    with pytest.raises(LeakageError, match="train"):
        data.train()


def test_artefacts_reach_a_method_only_when_its_reads_cover_their_splits():
    from palimpsest.forget.base import Artifact, ArtifactCache, covers
    assert covers({"train": "examples"}, {"train": "examples"})
    assert covers({"forget": "examples", "retain": "examples"}, {"train": "examples"})   # both parts = the whole
    assert not covers({"retain": "examples"}, {"train": "examples"})
    assert not covers({"forget": "indices", "retain": "examples"}, {"train": "examples"})
    assert covers({"forget": "examples"}, {"forget": "labels"}) and not covers({"forget": "inputs"}, {"forget": "labels"})
    cache = ArtifactCache({"from_train": Artifact(1), "from_retain": Artifact(2, {"retain": "examples"})},
                          {"retain": "examples"})
    assert sorted(cache) == ["from_retain", "from_train"] and "from_train" in cache and len(cache) == 2
    assert cache["from_retain"] == 2 and cache.get("missing", 7) == 7
    with pytest.raises(LeakageError, match="artefact 'from_train'"):
        cache.get("from_train")
