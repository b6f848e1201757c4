"""Forget requests: what to forget, resolved against a training set into forget / retain indices."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.seeding import derive_seed


class ForgetRequest(Settings):
    """One deletion request.

    kind="indices": these training examples; "classes": every example of these classes;
    "subclass": part of one class, by `indices` within the training set or a random `fraction`
    of it (a Python `predicate` can be given to `resolve` instead); "random": a random `fraction`
    of the whole training set.

    Random draws come from `seed`; left None (the default) they come from the run's seed, so each
    seed of an experiment forgets its own random sample (a fixed seed forgets the same sample in
    every run, which measures one forget set, not the method).
    """

    kind: Literal["indices", "classes", "subclass", "random"]
    indices: list[int] | None = None
    classes: list[int] | None = None
    fraction: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, description="seed of a random forget set; None: the run's seed")

    def describe(self) -> str:
        if self.kind == "classes":
            return f"classes {self.classes}"
        if self.kind == "indices":
            return f"{len(self.indices or [])} examples"
        if self.kind == "subclass":
            part = f"{self.fraction:.0%}" if self.fraction else f"{len(self.indices or [])} examples"
            return f"{part} of class {self.classes}"
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


def resolve(request: ForgetRequest, targets: np.ndarray, n_classes: int | None = None,
            predicate: Callable[[int], bool] | None = None, run_seed: int = 0) -> ForgetSplit:
    """Turn a request into forget / retain indices of a training set with labels `targets`; a
    random draw uses the request's seed, or `run_seed` when the request has none.

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
