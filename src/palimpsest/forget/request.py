"""Forget requests: what to forget, resolved against a training set into forget / retain indices."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from ..core.config import Settings, since
from ..core.errors import ConfigError
from ..core.seeding import derive_seed


class ForgetRequest(Settings):
    """One deletion request.

    kind="indices": these training examples; "classes": every example of these classes;
    "subclass": part of one class, by `indices` within the training set or a random `fraction`
    of it (a Python `predicate` can be given to `resolve` instead); "random": a random `fraction`
    of the whole training set; "worst_case": the `fraction` of the training set that is hardest to
    unlearn, chosen by the bi-level selection of forget/worst_case.py (Fan et al. 2024) with
    `objective` retrain_gap (the default; needs the per-example attack's reference models) or
    forget_loss. A worst_case set is selected once per run seed by the unlearn kind (its
    `request<i>/select` job) and stored; `resolve` takes it as `selected`.

    Random draws come from `seed`; left None (the default) they come from the run's seed, so each
    seed of an experiment forgets its own random sample (a fixed seed forgets the same sample in
    every run, which measures one forget set, not the method).
    """

    kind: Literal["indices", "classes", "subclass", "random", "worst_case"] = Field(
        ..., description="indices: these training examples; classes: every example of these classes; subclass: "
        "part of one class (by indices or a random fraction); random: a random fraction of the training set; "
        "worst_case: the fraction hardest to unlearn (bi-level selection, Fan et al. 2024)")
    indices: list[int] | None = Field(None, description="indices and subclass: positions in the training set")
    classes: list[int] | None = Field(None, description="classes and subclass: class ids")
    fraction: float | None = Field(None, gt=0, le=1, description="random, subclass and worst_case: the share of "
                                   "examples forgotten")
    seed: int | None = Field(None, description="draws the random forget set (random, subclass with a fraction); "
                             "None: the run's seed")
    objective: Literal["retrain_gap", "forget_loss"] | None = Field(
        None, json_schema_extra=since("0.3"), description="worst_case: what the selection maximises; retrain_gap "
        "(None: the default) needs audits.reference_mia.n_models > 0, forget_loss (the paper's) needs nothing")

    lower: Literal["gradient_ascent", "finetune", "neggrad_plus"] | None = Field(
        None, json_schema_extra=since("0.3"), description="worst_case: the unlearning the selection unrolls as its "
        "lower level (None: gradient_ascent); pick the one closest to the method under test")

    @property
    def worst_case_objective(self) -> str:
        return self.objective or "retrain_gap"

    @property
    def worst_case_lower(self) -> str:
        return self.lower or "gradient_ascent"

    def describe(self) -> str:
        if self.kind == "classes":
            return f"classes {self.classes}"
        if self.kind == "indices":
            return f"{len(self.indices or [])} examples"
        if self.kind == "subclass":
            part = f"{self.fraction:.0%}" if self.fraction else f"{len(self.indices or [])} examples"
            return f"{part} of class {self.classes}"
        if self.kind == "worst_case":
            return f"worst case {self.fraction:.0%} ({self.worst_case_objective}, lower level {self.worst_case_lower})"
        return f"random {self.fraction:.0%}"


@dataclass(frozen=True)
class ForgetSplit:
    """Indices into the training set: what must be forgotten and what stays."""

    forget: np.ndarray
    retain: np.ndarray
    request: ForgetRequest
    forget_classes: tuple[int, ...] = ()

    def key(self) -> str:
        import hashlib
        return hashlib.sha256(np.sort(self.forget).astype(np.int64).tobytes()).hexdigest()[:16]


def worst_case_size(request: ForgetRequest, n: int) -> int:
    """The number of examples a worst_case request forgets from a training set of `n`."""
    if request.fraction is None:
        raise ConfigError("a 'worst_case' forget request needs `fraction`", expected="fraction=...", got=None,
                          fix="add fraction to the request")
    size = int(round(request.fraction * n))
    if not 0 < size < n:
        raise ConfigError("the worst_case forget set must be non-empty and smaller than the training set",
                          expected=f"round(fraction x {n}) in [1, {n - 1}]", got=f"fraction {request.fraction}: {size}",
                          fix="change the request's fraction")
    return size


def resolve(request: ForgetRequest, targets: np.ndarray, n_classes: int | None = None,
            predicate: Callable[[int], bool] | None = None, run_seed: int = 0,
            selected: np.ndarray | None = None) -> ForgetSplit:
    """Turn a request into forget / retain indices of a training set with labels `targets`; a
    random draw uses the request's seed, or `run_seed` when the request has none; a worst_case
    request takes its stored selection, `selected`.

    Raises a ConfigError for an unknown class, an empty forget set, or a forget set that is the
    whole training set (nothing would remain to define the model)."""
    targets = np.asarray(targets)
    n = len(targets)
    n_classes = n_classes or int(targets.max()) + 1
    r = request

    def need(field: str, value) -> None:
        if value is None:
            raise ConfigError(f"a {r.kind!r} forget request needs `{field}`", expected=f"{field}=...", got=None,
                              fix=f"add {field} to the request")

    def check_classes(classes: list[int]) -> None:
        bad = [c for c in classes if not 0 <= c < n_classes]
        if bad:
            raise ConfigError("forget request names classes the model does not have",
                              expected=f"class ids in [0, {n_classes})", got=bad, fix="drop those ids")

    rng = np.random.default_rng(derive_seed("forget", r.seed if r.seed is not None else run_seed))
    if r.kind == "indices":
        need("indices", r.indices)
        idx = np.unique(np.asarray(r.indices, dtype=np.int64))
        bad = idx[(idx < 0) | (idx >= n)]
        if len(bad):
            raise ConfigError("forget indices out of range", expected=f"indices in [0, {n})", got=bad[:10].tolist())
        forget = idx
    elif r.kind == "classes":
        need("classes", r.classes)
        check_classes(r.classes)
        forget = np.flatnonzero(np.isin(targets, r.classes))
    elif r.kind == "subclass":
        need("classes", r.classes)
        check_classes(r.classes)
        members = np.flatnonzero(np.isin(targets, r.classes))
        if predicate is not None:
            forget = np.asarray([i for i in members if predicate(int(i))], dtype=np.int64)
        elif r.indices is not None:
            forget = np.intersect1d(members, np.asarray(r.indices, dtype=np.int64))
        else:
            need("fraction", r.fraction)
            forget = np.sort(rng.choice(members, size=int(round(r.fraction * len(members))), replace=False))
    elif r.kind == "worst_case":
        size = worst_case_size(r, n)
        if selected is None:
            raise ConfigError("a worst_case forget request has no selected set yet",
                              expected="the indices its selection chose (the unlearn kind's request<i>/select job)",
                              got=None, fix="run it in an unlearning experiment (kind: unlearn), which selects "
                              "and stores the set, or pass selected=worst_case_forget_set(...)['indices']")
        forget = np.unique(np.asarray(selected, dtype=np.int64))
        if len(forget) != size or (len(forget) and (forget[0] < 0 or forget[-1] >= n)):
            raise ConfigError("the stored worst_case selection does not fit this training set",
                              expected=f"{size} distinct indices in [0, {n})", got=f"{len(forget)} indices",
                              fix="select the set again (delete the stored forget_set model)")
    else:
        need("fraction", r.fraction)
        forget = np.sort(rng.choice(n, size=int(round(r.fraction * n)), replace=False))
    if len(forget) == 0:
        raise ConfigError("the forget set is empty", expected="at least one training example to forget",
                          got=r.describe(), fix="check the classes, indices or fraction of the request")
    if len(forget) >= n:
        raise ConfigError("the forget set is the whole training set", expected="some data left to retain",
                          got=f"{len(forget)} of {n} examples",
                          fix="forget less, or train a new model instead of unlearning")
    retain = np.setdiff1d(np.arange(n), forget)
    classes = tuple(sorted(r.classes)) if r.kind == "classes" else ()
    return ForgetSplit(forget.astype(np.int64), retain.astype(np.int64), r, classes)
