"""Scenario builders: turn an ArrayDataset into a Stream of Experiences (Avalanche vocabulary).

Scenarios: class-incremental, task-incremental, domain-incremental (pixel permutations or
rotations), online (single pass in small mini-batches) and recurring sequences in which earlier
experiences come back (uniform or power-law frequencies).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.seeding import derive_seed
from .base import ArrayDataset
from .batch import INPUT_KEYS, TARGET_KEYS, Batch, LabelFreeBatch

SCENARIO_KINDS = ("class", "task", "domain")


@dataclass(frozen=True, eq=False)
class TensorSource:
    """The tensors experiences index into: named fields with one row per example (e.g. a dataset
    split's `inputs` and `targets`, or `input_ids` and `labels`). Shared, never copied per
    experience, and read-only by convention."""

    fields: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        lengths = {k: len(v) for k, v in self.fields.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError("the fields of a data source differ in length", expected="one row per example in each",
                              got=lengths)
        for t in self.fields.values():
            t.requires_grad_(False)

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()))) if self.fields else 0


def _first_field(fields: dict, keys: tuple[str, ...], what: str) -> str:
    for key in keys:
        if key in fields:
            return key
    raise KeyError(f"this experience has no {what} field (it has {', '.join(fields)})")


@dataclass(frozen=True, eq=False)
class Experience:
    """One step of a stream: rows of a `TensorSource`. Immutable: a strategy never changes an
    experience's data, and the data are not copied (a class-incremental stream's experiences all
    index the same split tensors).

    `rows` are positions in the source; `indices` point into the dataset split the examples came
    from (`split`), so a stored model can say exactly which examples trained it (-1 for examples
    that are not in a split, e.g. a replay memory). `task_id` identifies the experience; every
    example also carries its own task id (`task_ids`, the same for all unless the experience is a
    union of several). In class-incremental evaluation the model is not given task ids.
    """

    source: TensorSource
    rows: torch.Tensor
    task_id: int
    classes: tuple[int, ...]
    indices: np.ndarray
    split: str = "train"
    example_tasks: torch.Tensor | None = None
    labels_withheld: bool = False

    def __post_init__(self) -> None:
        self.indices.setflags(write=False)
        if len(self.rows) != len(self.indices):
            raise ConfigError("an experience needs one dataset index per row", expected=f"{len(self.rows)} indices",
                              got=len(self.indices))

    @classmethod
    def from_tensors(cls, inputs: torch.Tensor, targets: torch.Tensor, task_id: int, classes: tuple[int, ...],
                     indices: np.ndarray, split: str = "train", task_ids: torch.Tensor | None = None,
                     **fields: torch.Tensor) -> Experience:
        """An experience over its own tensors (a replay memory, a transformed copy, a test case)."""
        source = TensorSource({"inputs": inputs, "targets": targets, **fields})
        return cls(source, torch.arange(len(targets)), task_id, tuple(classes), np.asarray(indices), split, task_ids)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.source.fields)

    def field(self, name: str, positions=None) -> torch.Tensor:
        """Field `name` of this experience's rows (or of the rows at `positions` among them)."""
        rows = self.rows if positions is None else self.rows[positions]
        return self.source.fields[name][rows]

    @property
    def inputs(self) -> torch.Tensor:
        return self.field(_first_field(self.source.fields, INPUT_KEYS, "inputs"))

    @property
    def targets(self) -> torch.Tensor:
        if self.labels_withheld:
            LabelFreeBatch()._no_labels("targets")
        return self.field(_first_field(self.source.fields, TARGET_KEYS, "targets"))

    def without_labels(self) -> Experience:
        """The same examples with their labels withheld (what a label-free method is handed): its
        batches are LabelFreeBatch and asking for its targets raises a LeakageError."""
        source = TensorSource({k: v for k, v in self.source.fields.items() if k not in TARGET_KEYS})
        return replace(self, source=source, labels_withheld=True)

    @property
    def task_ids(self) -> torch.Tensor:
        """The task id of every example (int64)."""
        if self.example_tasks is not None:
            return self.example_tasks
        return torch.full((len(self),), self.task_id, dtype=torch.long)

    def batch(self, positions: torch.Tensor, device: torch.device | str | None = None,
              task_ids: torch.Tensor | None = None) -> Batch:
        """The examples at `positions` (among this experience's rows) as a Batch on `device`, with
        their task ids (pass `task_ids` = self.task_ids once to avoid rebuilding it per batch)."""
        rows = self.rows[positions]
        batch = {k: v[rows] for k, v in self.source.fields.items()}
        batch["task_ids"] = (self.task_ids if task_ids is None else task_ids)[positions]
        if device is not None:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return LabelFreeBatch(batch) if self.labels_withheld else Batch(batch)

    def subset(self, positions: np.ndarray, split: str | None = None) -> Experience:
        """The rows at `positions` (among this experience's rows), in that order."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        tasks = self.example_tasks[pos] if self.example_tasks is not None else None
        return Experience(self.source, self.rows[pos], self.task_id, self.classes, self.indices[np.asarray(positions)],
                          split or self.split, tasks)


def merge(experiences: list[Experience]) -> Experience:
    """The union of several experiences, rows in order (cumulative and joint training). Experiences
    over one source stay views of it; otherwise their fields are concatenated into a new source.
    Each example keeps its own task id; the union's `task_id` is the last experience's."""
    if len(experiences) == 1:
        return experiences[0]
    classes = tuple(sorted({c for e in experiences for c in e.classes}))
    task_ids = torch.cat([e.task_ids for e in experiences])
    indices = np.concatenate([e.indices for e in experiences])
    last = experiences[-1]
    if all(e.source is last.source for e in experiences):
        return Experience(last.source, torch.cat([e.rows for e in experiences]), last.task_id, classes, indices,
                          last.split, task_ids)
    names = [k for k in last.fields if all(k in e.fields for e in experiences)]
    source = TensorSource({k: torch.cat([e.field(k) for e in experiences]) for k in names})
    return Experience(source, torch.arange(len(task_ids)), last.task_id, classes, indices, last.split, task_ids)


@dataclass(frozen=True, eq=False)
class Stream:
    """The train sequence, one test experience per task, and optional validation experiences.

    `train[i].task_id` says which test experience step i learns; with recurrence the same task id
    can appear at several steps. `online_batch_size` set means a single pass in mini-batches of
    that size.
    """

    name: str
    scenario: str
    train: tuple[Experience, ...]
    test: tuple[Experience, ...]
    valid: tuple[Experience, ...] | None
    n_classes: int
    class_order: tuple[int, ...]
    input_shape: tuple[int, ...]
    online_batch_size: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(self.test)

    @property
    def task_classes(self) -> list[tuple[int, ...]]:
        return [e.classes for e in self.test]

    @property
    def learned_task(self) -> list[int]:
        return [e.task_id for e in self.train]

    def digest(self) -> str:
        """Identifies the stream's content: its description and, for every training and test
        experience, the dataset indices and split it holds (16 hex digits). Runs on the same stream
        share one stored copy of its indices."""
        h = hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode())
        for group in (self.train, self.test, self.valid or ()):
            for e in group:
                h.update(f"{e.split}:{e.task_id}:".encode())
                h.update(np.ascontiguousarray(e.indices, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "scenario": self.scenario, "n_classes": self.n_classes,
                "class_order": list(self.class_order), "n_train_steps": len(self.train),
                "n_tasks": self.n_tasks, "task_classes": [list(c) for c in self.task_classes],
                "learned_task": self.learned_task, "online_batch_size": self.online_batch_size,
                "train_sizes": [len(e) for e in self.train], "input_shape": list(self.input_shape), **self.info}


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def resolve_class_order(n_classes: int, class_order: Sequence[int] | None, shuffle: bool,
                        seed: int) -> list[int]:
    if class_order is None:
        order = list(range(n_classes))
        if shuffle:
            order = [int(c) for c in np.random.default_rng(derive_seed("class_order", seed)).permutation(n_classes)]
        return order
    order = [int(c) for c in class_order]
    if not order:
        raise ConfigError("class_order is empty", expected=f"a list of class ids in [0, {n_classes})",
                          got=[], fix="leave class_order out for the natural order, or list the classes")
    dupes = sorted({c for c in order if order.count(c) > 1})
    if dupes:
        raise ConfigError("class_order repeats classes", expected="each class id at most once",
                          got=f"{order} (repeated: {dupes})", fix="remove the repeated ids")
    bad = [c for c in order if not 0 <= c < n_classes]
    if bad:
        raise ConfigError("class_order names classes the dataset does not have",
                          expected=f"class ids in [0, {n_classes})", got=bad, fix="drop those ids")
    return order


def split_classes(order: list[int], n_experiences: int,
                  first_experience_classes: int | None = None) -> list[tuple[int, ...]]:
    n = len(order)
    if n_experiences < 1:
        raise ConfigError("n_experiences must be at least 1", expected="an integer >= 1", got=n_experiences)
    if n_experiences > n:
        raise ConfigError("more experiences than classes", expected=f"n_experiences <= {n} (the number of classes)",
                          got=n_experiences, fix=f"use at most {n} experiences or more classes")
    if first_experience_classes is None:
        if n % n_experiences:
            raise ConfigError("classes do not split evenly into experiences",
                              expected=f"n_experiences dividing {n}", got=n_experiences,
                              fix="pick a divisor or set first_experience_classes for an uneven first experience")
        size = n // n_experiences
        return [tuple(order[i * size:(i + 1) * size]) for i in range(n_experiences)]
    first = first_experience_classes
    rest = n - first
    if not 1 <= first < n or (n_experiences > 1 and rest % (n_experiences - 1)) or (n_experiences == 1 and rest):
        raise ConfigError("first_experience_classes does not fit", expected=(
            f"1 <= first < {n} with the remaining {n} - first classes dividing evenly into {n_experiences - 1} experiences"),
            got=first, fix="change first_experience_classes or n_experiences")
    size = rest // (n_experiences - 1) if n_experiences > 1 else 0
    chunks = [tuple(order[:first])]
    chunks += [tuple(order[first + i * size: first + (i + 1) * size]) for i in range(n_experiences - 1)]
    return chunks


def _carve_validation(exp: Experience, fraction: float, seed: int) -> tuple[Experience, Experience]:
    rng = np.random.default_rng(derive_seed("valid", seed, exp.task_id))
    perm = rng.permutation(len(exp))
    n_val = int(round(fraction * len(exp)))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return exp.subset(tr_idx, "train"), exp.subset(val_idx, "valid")


def _with_validation(train: list[Experience], fraction: float, seed: int):
    if not fraction:
        return tuple(train), None
    if not 0 < fraction < 1:
        raise ConfigError("validation_fraction out of range", expected="0 <= fraction < 1", got=fraction)
    pairs = [_carve_validation(e, fraction, seed) for e in train]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def class_incremental(data: ArrayDataset, n_experiences: int, class_order: Sequence[int] | None = None,
                      shuffle_classes: bool = False, seed: int = 0, first_experience_classes: int | None = None,
                      validation_fraction: float = 0.0, task_labels: bool = False) -> Stream:
    """Split the classes into disjoint groups, one experience each (class-IL; task-IL when
    `task_labels` is True, in which case the model is told each example's task)."""
    order = resolve_class_order(data.n_classes, class_order, shuffle_classes, seed)
    groups = split_classes(order, n_experiences, first_experience_classes)

    def build(x: np.ndarray, y: np.ndarray, split: str) -> list[Experience]:
        source = TensorSource({"inputs": _tensor(x), "targets": torch.from_numpy(y.astype(np.int64))})
        out = []
        for t, classes in enumerate(groups):
            idx = np.flatnonzero(np.isin(y, classes))
            out.append(Experience(source, torch.from_numpy(idx.astype(np.int64)), t, tuple(int(c) for c in classes),
                                  idx, split))
        return out

    train, valid = _with_validation(build(data.x_train, data.y_train, "train"), validation_fraction, seed)
    kind = "task" if task_labels else "class"
    return Stream(f"split_{data.name}", kind, train, tuple(build(data.x_test, data.y_test, "test")), valid,
                  data.n_classes, tuple(order), data.input_shape, info={"dataset": data.name})


def task_incremental(data: ArrayDataset, n_experiences: int, **kwargs) -> Stream:
    """The class-incremental split with the task identity given to the model."""
    return class_incremental(data, n_experiences, task_labels=True, **kwargs)


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    if x.dim() != 4:
        raise ConfigError("rotations need image inputs", expected="inputs shaped (N, C, H, W)",
                          got=tuple(x.shape), fix="use transform='permutation' for flat inputs")
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    grid = torch.nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    # Rotated-out corners get the background value (the minimum), not zero, since inputs are standardised.
    background = x.amin()
    out = torch.nn.functional.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros")
    return out + background


def _noise(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """x plus Gaussian noise of standard deviation `std` (in the inputs' standardised units),
    drawn from `seed`: the same noise every time (a corruption, as in CIFAR-10-C)."""
    if std == 0:
        return x
    g = torch.Generator().manual_seed(seed)
    return x + std * torch.randn(x.shape, generator=g)


DOMAIN_TRANSFORMS = ("permutation", "rotation", "noise")


def domain_incremental(data: ArrayDataset, n_experiences: int, transform: str = "permutation",
                       seed: int = 0, keep_first: bool = False, max_degrees: float = 180.0,
                       validation_fraction: float = 0.0, max_noise: float = 1.0) -> Stream:
    """Same classes in every experience, a different input distribution in each: a fixed random
    pixel permutation per experience (permuted MNIST, Goodfellow et al. 2013), a rotation by
    evenly spaced angles in [0, max_degrees), or additive Gaussian noise whose standard deviation
    grows evenly from 0 (the clean first domain) to `max_noise`."""
    if n_experiences < 1:
        raise ConfigError("n_experiences must be at least 1", expected="an integer >= 1", got=n_experiences)
    if transform not in DOMAIN_TRANSFORMS:
        raise ConfigError("unknown domain transform", expected=" or ".join(repr(t) for t in DOMAIN_TRANSFORMS),
                          got=transform)
    d = int(np.prod(data.input_shape))
    classes = tuple(range(data.n_classes))
    xtr, xte = _tensor(data.x_train), _tensor(data.x_test)
    ytr, yte = torch.from_numpy(data.y_train.astype(np.int64)), torch.from_numpy(data.y_test.astype(np.int64))
    train, test, params = [], [], []
    for t in range(n_experiences):
        if transform == "permutation":
            if keep_first and t == 0:
                perm = torch.arange(d)
            else:
                perm = torch.from_numpy(np.random.default_rng(derive_seed("perm", seed, t)).permutation(d))
            f = lambda x, p=perm: x.reshape(len(x), -1)[:, p].reshape(x.shape)  # noqa: E731
            params.append({"permutation_seed": derive_seed("perm", seed, t) if not (keep_first and t == 0) else None})
        elif transform == "rotation":
            deg = max_degrees * t / n_experiences
            f = lambda x, a=deg: _rotate(x, a)  # noqa: E731
            params.append({"degrees": deg})
        else:
            std = max_noise * t / max(n_experiences - 1, 1)
            f = lambda x, s=std, k=t: _noise(x, s, derive_seed("noise", seed, k, len(x)))  # noqa: E731
            params.append({"noise_std": std, "noise_seed": derive_seed("noise", seed, t)})
        train.append(Experience.from_tensors(f(xtr), ytr, t, classes, np.arange(len(ytr)), "train"))
        test.append(Experience.from_tensors(f(xte), yte, t, classes, np.arange(len(yte)), "test"))
    train_t, valid = _with_validation(train, validation_fraction, seed)
    return Stream(f"{transform}_{data.name}", "domain", train_t, tuple(test), valid, data.n_classes,
                  classes, data.input_shape, info={"dataset": data.name, "domains": params})


def online(stream: Stream, batch_size: int = 10) -> Stream:
    """The same stream seen once, in mini-batches of `batch_size` (online continual learning)."""
    if batch_size < 1:
        raise ConfigError("online batch size must be at least 1", expected="an integer >= 1", got=batch_size)
    return replace(stream, name=f"online_{stream.name}", online_batch_size=batch_size)


def recurring(stream: Stream, length: int, distribution: str = "uniform", alpha: float = 1.0,
              seed: int = 0, introduce: str = "spread") -> Stream:
    """A training sequence of `length` steps in which experiences recur.

    New tasks are introduced in order, either all first (`introduce="first"`) or spread evenly over
    the sequence (`"spread"`: task k first appears at step round(k * length / T)). Every other step
    revisits a task already introduced:
      uniform    each introduced task equally likely;
      power_law  task k with probability proportional to (steps since k was last seen)^-alpha: the
                 naturalistic environment of "Catastrophic Interference is Mitigated in
                 Naturalistic Power-Law Learning Environments", where the chance of meeting a task
                 decays as a power law of the time since it was last performed.
      zipf       task k (in order of introduction) with fixed probability proportional to
                 (k + 1)^-alpha: Zipf-like task frequencies, under which every task keeps coming
                 back at its own rate (the frequency-based re-occurrence of SCoLe, "Challenging
                 Common Assumptions about Catastrophic Forgetting", and of the power-law paper's
                 frequency environments), unlike the recency law above, under which a task not
                 drawn for a while may never return.
    """
    t = stream.n_tasks
    if distribution not in ("uniform", "power_law", "zipf"):
        raise ConfigError("unknown recurrence distribution", expected="'uniform', 'power_law' or 'zipf'",
                          got=distribution)
    if introduce not in ("first", "spread"):
        raise ConfigError("unknown task introduction", expected="'first' or 'spread'", got=introduce)
    if length < t:
        raise ConfigError("recurring sequence too short", expected=f"length >= {t} (every task at least once)",
                          got=length, fix="raise length")
    base = {e.task_id: e for e in stream.train}
    rng = np.random.default_rng(derive_seed("recurring", seed))
    starts = list(range(t)) if introduce == "first" else [int(round(k * length / t)) for k in range(t)]
    order: list[int] = []
    last_seen: dict[int, int] = {}
    for step in range(length):
        if step in starts:
            task = starts.index(step)
        else:
            known = np.array(sorted(last_seen))
            if distribution == "uniform":
                weights = np.ones(len(known))
            elif distribution == "zipf":
                weights = (known + 1.0) ** -alpha
            else:
                weights = np.array([step - last_seen[k] for k in known], dtype=float) ** -alpha
            task = int(rng.choice(known, p=weights / weights.sum()))
        order.append(task)
        last_seen[task] = step
    info = dict(stream.info, recurrence={"distribution": distribution, "alpha": alpha, "introduce": introduce,
                                         "order": order})
    return replace(stream, name=f"recurring_{stream.name}", train=tuple(base[k] for k in order), info=info)
