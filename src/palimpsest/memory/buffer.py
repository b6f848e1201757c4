"""A tensor-backed replay buffer with a memory budget in samples.

Policies for what stays in memory:
  reservoir       every example seen so far is kept with equal probability capacity / seen
                  (Vitter 1985; the buffer of ER and DER, "On Tiny Episodic Memories", 2019)
  class_balanced  at most capacity // (classes seen) examples per class; when full, an example of
                  the largest class makes room (GDumb's greedy sampler, Prabhu et al. 2020)
Selection of which examples of a class to keep (`select_class_balanced`): random, or herding
(iCaRL, Rebuffi et al. 2017), whose order is also the priority when quotas shrink.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.seeding import derive_seed

POLICIES = ("reservoir", "class_balanced")


class ReplayBuffer:
    """Fixed-capacity storage of inputs, targets, task ids and (optionally) logits and features, as
    tensors (logits: DER, HPCR; features: HPCR's structure distillation)."""

    FIELDS = ("inputs", "targets", "task_ids", "logits", "features")

    def __init__(self, capacity: int, policy: str = "reservoir", seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError("replay buffer capacity must be at least 1", expected="an integer >= 1",
                              got=capacity, fix="set buffer_size to the number of examples to keep")
        if policy not in POLICIES:
            raise ConfigError("unknown buffer policy", expected=" or ".join(POLICIES), got=policy)
        self.capacity, self.policy = int(capacity), policy
        self.size = 0
        self.seen = 0
        self.data: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(derive_seed("buffer", seed))

    def __len__(self) -> int:
        return self.size

    def _allocate(self, **tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            if t is not None and name not in self.data:
                self.data[name] = torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)

    def _put(self, slots: torch.Tensor, rows: torch.Tensor, tensors: dict[str, torch.Tensor | None]) -> None:
        for name, t in tensors.items():
            if t is not None:
                self.data[name][slots] = t[rows].detach().to(self.data[name].dtype)

    def add(self, inputs: torch.Tensor, targets: torch.Tensor, task_ids: torch.Tensor | None = None,
            logits: torch.Tensor | None = None, features: torch.Tensor | None = None) -> None:
        """Offer a batch of examples to the buffer under its policy."""
        if task_ids is None:
            task_ids = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
        tensors = {"inputs": inputs, "targets": targets, "task_ids": task_ids, "logits": logits}
        if features is not None:
            tensors["features"] = features
        self._allocate(**tensors)
        if self.policy == "reservoir":
            self._add_reservoir(tensors, len(targets))
        else:
            self._add_balanced(tensors, len(targets))

    def _add_reservoir(self, tensors, n: int) -> None:
        # Items that fit in free slots go in directly; each later item i (the seen_i-th example)
        # replaces a uniform slot j in [0, seen_i] when j < capacity. Later items win ties, as in a
        # sequential loop.
        free = max(0, min(self.capacity - self.size, n))
        if free:
            slots = torch.arange(self.size, self.size + free)
            self._put(slots, torch.arange(free), tensors)
            self.size += free
        if n > free:
            counts = torch.arange(self.seen + free, self.seen + n, dtype=torch.float64) + 1
            draws = (torch.rand(n - free, generator=self.generator, dtype=torch.float64) * counts).long()
            accept = draws < self.capacity
            rows = torch.arange(free, n)[accept]
            slots = draws[accept]
            if len(slots):
                # keep only the last write to each slot
                last = {int(s): int(r) for s, r in zip(slots, rows)}
                self._put(torch.tensor(list(last.keys())), torch.tensor(list(last.values())), tensors)
        self.seen += n

    def _add_balanced(self, tensors, n: int) -> None:
        targets = tensors["targets"]
        free = max(0, min(self.capacity - self.size, n))
        if free:  # room left: the first items go straight in
            self._put(torch.arange(self.size, self.size + free), torch.arange(free), tensors)
            self.size += free
        self.seen += free
        if n == free:
            return
        # Full: item i replaces a random slot of the currently largest class unless its own class
        # already holds the most slots. Counts and slot lists are kept in Python, one pass.
        stored = self.data["targets"][:self.size].tolist()
        slots: dict[int, list[int]] = {}
        for slot, label in enumerate(stored):
            slots.setdefault(int(label), []).append(slot)
        labels = targets[free:].tolist()
        rows, chosen = [], []
        for offset, label in enumerate(labels):
            self.seen += 1
            own = len(slots.get(label, ()))
            largest = max(len(v) for v in slots.values())
            if own >= largest:
                continue  # its class already holds the most slots: keep the buffer as it is
            biggest = [c for c, v in slots.items() if len(v) == largest]
            victim = biggest[int(torch.randint(len(biggest), (1,), generator=self.generator))]
            pool = slots[victim]
            slot = pool.pop(int(torch.randint(len(pool), (1,), generator=self.generator)))
            slots.setdefault(label, []).append(slot)
            rows.append(free + offset)
            chosen.append(slot)
        if rows:
            last = {s_: r for s_, r in zip(chosen, rows)}  # a slot written twice keeps the later item
            self._put(torch.tensor(list(last)), torch.tensor(list(last.values())), tensors)

    def sample(self, n: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Up to n stored examples drawn uniformly without replacement."""
        if self.size == 0:
            return {}
        idx = torch.randperm(self.size, generator=self.generator)[:n]
        return {k: (v[idx] if device is None else v[idx].to(device)) for k, v in self.data.items()}

    def all(self) -> dict[str, torch.Tensor]:
        return {k: v[:self.size] for k, v in self.data.items()}

    def class_counts(self) -> dict[int, int]:
        if self.size == 0:
            return {}
        classes, counts = torch.unique(self.data["targets"][:self.size], return_counts=True)
        return {int(c): int(k) for c, k in zip(classes, counts)}

    def select_class_balanced(self, inputs: torch.Tensor, targets: torch.Tensor, task_ids: torch.Tensor,
                              selection: str = "random", features: Callable[[torch.Tensor], torch.Tensor] | None = None,
                              logits: torch.Tensor | None = None) -> None:
        """End-of-experience update (iCaRL): the new classes join, every class gets
        capacity // (classes seen) slots; old classes keep their first (highest-priority) examples,
        new classes are chosen by `selection` ("random" or "herding" on `features`)."""
        if selection not in ("random", "herding"):
            raise ConfigError("unknown exemplar selection", expected="'random' or 'herding'", got=selection)
        if selection == "herding" and features is None:
            raise ConfigError("herding needs a feature extractor", expected="features=model.features", got=None)
        tensors = {"inputs": inputs, "targets": targets, "task_ids": task_ids, "logits": logits}
        self._allocate(**tensors)
        old = self.all()
        new_classes = [int(c) for c in torch.unique(targets)]
        old_classes = [c for c in self.class_counts() if c not in new_classes]
        per_class = self.capacity // max(1, len(old_classes) + len(new_classes))
        keep: list[dict[str, torch.Tensor]] = []
        for c in old_classes:
            rows = (old["targets"] == c).nonzero(as_tuple=True)[0][:per_class]
            keep.append({k: v[rows] for k, v in old.items()})
        for c in new_classes:
            rows = (targets == c).nonzero(as_tuple=True)[0]
            if selection == "random":
                order = rows[torch.randperm(len(rows), generator=self.generator)]
            else:
                with torch.no_grad():
                    order = rows[herding_order(features(inputs[rows]), per_class)]
            chosen = order[:per_class]
            keep.append({k: t[chosen] for k, t in tensors.items() if t is not None})
        self.size = 0
        for part in keep:
            m = len(part["targets"])
            if m:
                slots = torch.arange(self.size, self.size + m)
                for k, v in part.items():
                    self.data[k][slots] = v.to(self.data[k].dtype)
                self.size += m
        self.seen += len(targets)

    def drop_matching(self, inputs: torch.Tensor) -> int:
        """Remove every stored example whose input equals one of `inputs` (byte for byte), keeping
        the others in order; returns how many were removed. What an unlearning request does to a
        replay memory: forgotten examples must not be replayed into the model again. `seen` is
        left as it is (the reservoir's draw probabilities continue)."""
        if self.size == 0 or len(inputs) == 0:
            return 0
        stored = self.data["inputs"][:self.size]
        keep = ~torch.as_tensor(np.isin(_row_keys(stored), _row_keys(inputs.to(stored.dtype))))
        removed = int((~keep).sum())
        if removed:
            for k, v in self.data.items():
                kept = v[:self.size][keep.to(v.device)].clone()
                v[:len(kept)] = kept
            self.size -= removed
        return removed

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "policy": self.policy, "size": self.size, "seen": self.seen,
                "data": {k: v.clone() for k, v in self.data.items()},
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.policy = int(state["capacity"]), state["policy"]
        self.size, self.seen = int(state["size"]), int(state["seen"])
        self.data = {k: v.clone() for k, v in state["data"].items()}
        self.generator.set_state(state["generator"])


def _row_keys(x: torch.Tensor) -> np.ndarray:
    """One hashable key per row (its bytes), for exact matching of examples."""
    rows = np.ascontiguousarray(x.detach().cpu().reshape(len(x), -1).numpy())
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's herding: greedily pick examples whose running mean stays closest to the class mean
    of the L2-normalised features; returns up to m indices in priority order."""
    f = torch.nn.functional.normalize(features.flatten(1).double(), dim=1)
    mu = f.mean(0)
    sq = (f * f).sum(1)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool)
    for k in range(1, min(m, len(f)) + 1):
        # argmin_i ||mu - (running + f_i)/k||  ==  argmax_i 2 f_i.(k mu - running) - ||f_i||^2
        score = 2 * (f @ (k * mu - running)) - sq
        score[~available] = float("-inf")
        i = int(score.argmax())
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.long)
