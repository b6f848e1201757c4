"""Behaviour of the baselines on real data (digits): assertions that fail if they are wrong."""
import numpy as np
import torch

from palimpsest.data import class_incremental
from palimpsest.evaluate import evaluate_stream

from .test_conformance import fit


def final_accuracies(name, stream, **kw):
    _, model, _ = fit(name, stream, epochs=5, **kw)
    ev = evaluate_stream(model, stream)
    return ev.accuracy("class"), ev.accuracy("task")


def test_naive_keeps_only_the_last_experience_in_class_il(digits):
    stream = class_incremental(digits, 5)
    cls_acc, task_acc = final_accuracies("naive", stream)
    assert cls_acc[-1] > 0.9
    assert cls_acc[:-1].max() < 0.1          # earlier classes are overwritten
    assert task_acc.mean() > cls_acc.mean() + 0.4   # task ids make the same model far better


def test_joint_and_cumulative_remember(digits):
    stream = class_incremental(digits, 5)
    naive = final_accuracies("naive", stream)[0].mean()
    joint = final_accuracies("joint", stream)[0].mean()
    cumulative = final_accuracies("cumulative", stream)[0].mean()
    assert joint > naive + 0.4 and cumulative > naive + 0.4


def test_joint_trains_once_on_everything(digits):
    from palimpsest.learn.joint import Joint
    stream = class_incremental(digits, 5)
    assert Joint().schedule(stream) == [[0, 1, 2, 3, 4]]


def test_from_scratch_reinitialises_before_each_experience(digits):
    stream = class_incremental(digits, 5)
    _, model_a, _ = fit("from_scratch", stream, steps=2, epochs=5)
    # a from-scratch model after step 2 equals a model trained on experience 1 alone from a fresh init
    cls_acc = evaluate_stream(model_a, stream).accuracy("class")
    assert cls_acc[0] == 0.0 and cls_acc[1] > 0.9
    assert bool(model_a.active[2:4].all()) and not bool(model_a.active[:2].any())
    assert np.isfinite(cls_acc).all()
    assert all(torch.isfinite(p).all() for p in model_a.parameters())
