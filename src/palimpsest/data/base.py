"""The in-memory dataset that every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import DataError


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled train/test pair held in memory.

    `x_*` are float32 arrays shaped (N, *input_shape), already scaled (e.g. pixels to [0, 1] and
    standardised); `y_*` are int64 class ids in [0, n_classes). `source` records where the data
    came from (a path or a generator's settings) so a stored model can say what trained it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) != len(y):
                raise DataError(f"dataset {self.name!r}: {split} inputs and labels differ in length",
                                expected="one label per input", got=f"{len(x)} inputs, {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DataError(f"dataset {self.name!r}: {split} labels out of range",
                                expected=f"class ids in [0, {len(self.class_names)})",
                                got=f"min {y.min()}, max {y.max()}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset {self.name!r}: train and test inputs have different shapes",
                            expected="the same shape per example",
                            got=f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def subsample(self, train: int | None, test: int | None, seed: int = 0) -> "ArrayDataset":
        """A stratified-by-chance subset (same seed -> same subset); None keeps a split whole."""
        rng = np.random.default_rng(seed)

        def pick(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
            if n is None or n >= len(y):
                return x, y
            idx = np.sort(rng.permutation(len(y))[:n])
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, train)
        xte, yte = pick(self.x_test, self.y_test, test)
        src = dict(self.source, subsample={"train": train, "test": test, "seed": seed})
        return ArrayDataset(self.name, xtr, ytr, xte, yte, self.class_names, src)


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both splits by the training mean and standard deviation (one scalar each)."""
    mean = float(x_train.mean())
    std = float(x_train.std()) or 1.0
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)
