"""Index samplers shared by every loop: shuffled passes, forget/retain pairs, the union of two sets.

Batches are index tensors drawn from seeded generators (never a DataLoader), so a fixed seed gives
the same batches in every process and a resumed run continues the same sequence.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


def shuffled_batches(n: int, batch_size: int, epochs: int, gen: torch.Generator
                     ) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, index tensor) for each mini-batch: a fresh permutation per epoch from `gen`."""
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            yield epoch, order[start:start + batch_size]


def n_batches(n: int, batch_size: int, epochs: int) -> int:
    """How many mini-batches `shuffled_batches` yields."""
    return epochs * -(-n // batch_size) if n else 0


class Cycle:
    """An endless stream of index batches over range(n), a fresh permutation each pass."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self.order, self.pos = torch.randperm(n, generator=gen), 0

    def next(self) -> torch.Tensor:
        if self.pos >= self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def paired_batches(n_forget: int, n_retain: int | None, forget_batch_size: int, retain_batch_size: int,
                   epochs: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(forget indices, retain indices or None) per step. An epoch is one pass over the forget set
    in a fresh order (in Kurmanji et al.'s code, the zip of the two loaders stops with the forget
    loader, usually the shorter); each forget batch is paired with the next batch of a stream that
    cycles through the retain set in fresh orders, so the retain set is read only as far as the
    steps need, never re-read before a full pass."""
    retain = Cycle(n_retain, retain_batch_size, gen) if n_retain else None
    for _ in range(epochs):
        order = torch.randperm(n_forget, generator=gen)
        for start in range(0, n_forget, forget_batch_size):
            yield order[start:start + forget_batch_size], (retain.next() if retain else None)


def union_batches(n_forget: int, n_retain: int, batch_size: int, epochs: int, gen: torch.Generator
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(forget indices, retain indices) per step for one shuffled loader over the union of the two
    sets (SalUn's `torch.utils.data.ConcatDataset` with shuffling): each step is `batch_size`
    positions of a fresh permutation of the n_forget + n_retain examples, split by set."""
    for _ in range(epochs):
        order = torch.randperm(n_forget + n_retain, generator=gen)
        for start in range(0, len(order), batch_size):
            pos = order[start:start + batch_size]
            yield pos[pos < n_forget], pos[pos >= n_forget] - n_forget


__all__ = ["Cycle", "n_batches", "paired_batches", "shuffled_batches", "union_batches"]
