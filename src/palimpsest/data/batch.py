"""A mini-batch is a mapping of tensors with conventional keys (the Hugging Face convention):

    inputs / input_ids     what the model reads (images, features / token ids)
    targets / labels       supervision (class ids / next-token labels, -100 = ignored)
    task_ids               the task of each example (int64), present in every batch a stream makes
    attention_mask         which tokens are real (language models)

Strategies, unlearners and model adapters read batches by these names, so a new modality is a new
set of keys, not a new trainer. `LabelFreeBatch` is the batch handed to label-free methods
(test-time adaptation): it holds no labels, and asking for them raises a LeakageError.
"""
from __future__ import annotations

import torch

from ..core.errors import LeakageError

INPUT_KEYS = ("inputs", "input_ids")
TARGET_KEYS = ("targets", "labels")


class Batch(dict):
    """A dict of tensors with the same first dimension (rows), plus conveniences."""

    @property
    def inputs(self) -> torch.Tensor:
        return self._first(INPUT_KEYS, "inputs")

    @property
    def targets(self) -> torch.Tensor:
        return self._first(TARGET_KEYS, "targets")

    @property
    def task_ids(self) -> torch.Tensor | None:
        return self.get("task_ids")

    def _first(self, keys: tuple[str, ...], what: str) -> torch.Tensor:
        for key in keys:
            if key in self:
                return self[key]
        raise KeyError(f"this batch has no {what} (looked for {', '.join(keys)}; it has {', '.join(self)})")

    @property
    def rows(self) -> int:
        """Number of examples in the batch."""
        return len(next(iter(self.values()))) if self else 0

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        return type(self)({k: v.to(device, non_blocking=non_blocking) for k, v in self.items()})

    def select(self, rows) -> Batch:
        """The rows `rows` (an index tensor or a slice) of every field."""
        return type(self)({k: v[rows] for k, v in self.items()})

    def head(self, n: int) -> Batch:
        """The first n rows (e.g. the incoming examples of a batch that replay extended)."""
        return self.select(slice(0, n))

    @classmethod
    def cat(cls, *batches: Batch) -> Batch:
        """Rows of several batches, in order (one forward pass serves them all); fields present
        in every batch are kept."""
        keys = [k for k in batches[0] if all(k in b for b in batches[1:])]
        return cls({k: torch.cat([b[k] for b in batches]) for k in keys})


class LabelFreeBatch(Batch):
    """A batch for a method that must not read labels: it has none, and asking raises LeakageError."""

    def _no_labels(self, key: str):
        raise LeakageError(f"a label-free method asked for {key!r}", expected="inputs only (labels are withheld)",
                           got=key, fix="use the inputs; the adaptation kind evaluates with the labels itself")

    def __getitem__(self, key):
        if key in TARGET_KEYS:
            self._no_labels(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in TARGET_KEYS:
            self._no_labels(key)
        return super().get(key, default)

    @property
    def targets(self):
        self._no_labels("targets")


__all__ = ["Batch", "INPUT_KEYS", "LabelFreeBatch", "TARGET_KEYS"]
