"""SISA training and exact unlearning: Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021).

Sharded, Isolated, Sliced, Aggregated. The training set is split into S disjoint shards and each
shard into R disjoint slices. One constituent model per shard is trained incrementally: at slice
step r it is trained on the union of slices 1..r, and its weights are saved before each step.
Prediction aggregates the constituents (majority vote of their labels, or the mean of their
softmax outputs). Deleting points retrains only the shards that hold them, each from the
checkpoint saved before the first slice that holds a deleted point, on the remaining slices
without the deleted points. The result is exactly what training that shard from scratch without
those points gives, with the same seeds (tested bit for bit), so SISA is *exact* unlearning.

As in the authors' code (cleverhans-lab/machine-unlearning, `sisa.py`): step r trains for
int((r+1) * a) - int(r * a) epochs with a = 2 * E / (R + 1), so that the whole cumulative schedule
costs about the same as E epochs over the shard (a step of 0 epochs is skipped; with E < (R+1)/2
some steps train nothing, as in theirs). Other choices here: each slice step starts a fresh
optimizer of the original recipe (the checkpoint is the weights only, so a resumed shard and a
shard trained from scratch see identical optimizer states; with plain SGD, the authors' default,
this is the same as theirs), and the batch order of step r of shard k comes from (seed, k, r).

Checkpoints live in memory as state_dict copies: S * R of them (the state after the last step is
the constituent itself). For the small CNN (0.42 M parameters) with S = R = 5 that is about 42 MB.

`SISAEnsemble.forward` returns aggregated log-scores so audits can treat the ensemble as a model:
"vote": log of the vote share, with ties broken by the mean probability (a 1e-3 weight, less than
one vote); "mean_softmax": log of the mean probability. Both are finite.

The "sisa" unlearner reads the forget set (only its indices: which points to delete) and the retain
set (the remaining examples of the affected shards). Handed a `SISAEnsemble` (made by `train_sisa`
on this training set) it retrains only the affected shards. Handed a plain model it means "there
is no SISA ensemble yet": it trains one on the retain set with the original recipe (an exact
result, costing one full SISA training) and returns it; `last_report["built"]` says so (set
`build_if_plain=False` to get an error instead). It declares forget + retain rather than the whole
training set: the retained examples of the affected shards are all it trains on. `last_report` and
`SISAEnsemble.deletions` record the shards and slice steps retrained and the seconds spent.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import UNLEARNERS
from ..core.seeding import derive_seed
from ..train.fit import fit
from .base import Unlearned, Unlearner

Aggregation = Literal["vote", "mean_softmax"]


def slice_epochs(epochs: int, slices: int) -> list[int]:
    """Epochs of each slice step (Bourtoule et al.'s schedule, summing to int(2*E*R/(R+1)))."""
    per = 2.0 * epochs / (slices + 1)
    return [int((r + 1) * per) - int(r * per) for r in range(slices)]


def split_shards(indices: np.ndarray, shards: int, slices: int, seed: int) -> list[list[np.ndarray]]:
    """A seeded random partition of `indices` into `shards` near-equal shards of `slices` slices each."""
    rng = np.random.default_rng(derive_seed(seed, "sisa", "partition"))
    order = np.asarray(indices, dtype=np.int64)[rng.permutation(len(indices))]
    return [[np.sort(s) for s in np.array_split(shard, slices)] for shard in np.array_split(order, shards)]


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Rows:
    """Rows of (inputs, targets) addressed by global training index."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, indices) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        self.inputs, self.targets = inputs, targets
        size = int(indices.max()) + 1 if len(indices) else 0
        self.position = np.full(size, -1, dtype=np.int64)
        self.position[indices] = np.arange(len(indices))

    def get(self, global_indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        gi = np.asarray(global_indices, dtype=np.int64)
        pos = self.position[gi] if len(gi) else gi
        if len(pos) and ((gi >= len(self.position)).any() or (pos < 0).any()):
            raise ConfigError("SISA needs training examples it was not given",
                              expected="the retained examples of every shard it retrains", got=f"{len(gi)} indices")
        idx = torch.as_tensor(pos, dtype=torch.long)
        return self.inputs[idx], self.targets[idx]


class SISAEnsemble(nn.Module):
    """S constituent models, one per shard, aggregated; plus the partition (global training indices
    per shard and slice), the per-slice checkpoints and what is needed to resume training."""

    def __init__(self, constituents: list[nn.Module], partition: list[list[np.ndarray]], n_train: int,
                 training, seed: int, make_model: Callable[[], nn.Module], aggregation: Aggregation = "vote") -> None:
        super().__init__()
        if aggregation not in ("vote", "mean_softmax"):
            raise ConfigError("unknown SISA aggregation", expected="'vote' or 'mean_softmax'", got=aggregation)
        self.constituents = nn.ModuleList(constituents)
        self.partition = partition
        self.n_train, self.training_config, self.seed, self.make_model = n_train, training, seed, make_model
        self.aggregation = aggregation
        self.checkpoints: list[list[dict[str, torch.Tensor]]] = [[] for _ in constituents]
        self.deleted: set[int] = set()
        self.deletions: list[dict] = []
        first = constituents[0]
        self.n_classes = getattr(first, "n_classes", None)

    @property
    def shards(self) -> int:
        return len(self.constituents)

    @property
    def slices(self) -> int:
        return len(self.partition[0])

    def shard_sizes(self) -> list[int]:
        return [int(sum(len(s) for s in shard)) for shard in self.partition]

    def live_shards(self) -> list[int]:
        """Shards that still hold data (a shard emptied by deletions no longer votes)."""
        return [k for k, size in enumerate(self.shard_sizes()) if size > 0]

    def constituent_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(live shards, batch, classes) softmax outputs."""
        return torch.stack([F.softmax(self.constituents[k](x), dim=-1) for k in self.live_shards()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.constituent_probs(x)
        mean = probs.mean(0)
        if self.aggregation == "mean_softmax":
            return mean.clamp_min(1e-30).log()
        votes = F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype).sum(0)
        share = (votes + 1e-3 * mean) / (len(probs) + 1e-3)
        return share.clamp_min(1e-30).log()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The constituents' penultimate features side by side (for probes)."""
        return torch.cat([self.constituents[k].features(x) for k in self.live_shards()], dim=-1)

    def observe_classes(self, classes) -> None:
        for m in self.constituents:
            if hasattr(m, "observe_classes"):
                m.observe_classes(classes)

    def checkpoint_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for shard in self.checkpoints for state in shard for t in state.values())

    # -- training -------------------------------------------------------------------------------
    def _fresh(self, shard: int, device) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "sisa", "init", shard))
            model = self.make_model()
        return model.to(device)

    def train_shard(self, shard: int, rows: _Rows, start_slice: int = 0, device="cpu") -> int:
        """(Re)train constituent `shard` from the checkpoint before `start_slice`; returns the number
        of slice steps trained. Slice step r trains on the union of slices 0..r."""
        model = self.constituents[shard]
        if start_slice == 0:
            fresh = self._fresh(shard, device)
            model.load_state_dict(fresh.state_dict())
        else:
            model.load_state_dict(self.checkpoints[shard][start_slice])
        model.to(device)
        del self.checkpoints[shard][start_slice:]
        schedule = slice_epochs(self.training_config.epochs, self.slices)
        steps = 0
        for r in range(start_slice, self.slices):
            self.checkpoints[shard].append(_state_copy(model))
            if schedule[r] == 0:
                continue
            x, y = rows.get(np.concatenate(self.partition[shard][:r + 1]))
            if len(y):
                step_recipe = self.training_config.model_copy(update={"epochs": schedule[r]})
                # the global RNG (dropout) is seeded per (shard, slice) too, so a shard resumed from
                # a checkpoint is bit-identical to one trained from scratch even with dropout
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(self.seed, "sisa", "step", shard, r))
                    fit(model, x, y, step_recipe, self.seed, device, stage=f"sisa/shard{shard}/slice{r}")
            steps += 1
        model.eval()
        return steps

    def delete(self, indices, rows: _Rows, device="cpu") -> dict:
        """Exact deletion of global training `indices`: retrain each affected shard from the
        checkpoint before its first slice holding a deleted point. Returns (and records) a report."""
        start = time.perf_counter()
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= self.n_train):
            raise ConfigError("deletion indices outside the SISA ensemble's training set",
                              expected=f"indices in [0, {self.n_train})", got=wanted[(wanted < 0) | (wanted >= self.n_train)][:5].tolist())
        new = np.setdiff1d(wanted, np.fromiter(self.deleted, dtype=np.int64, count=len(self.deleted)))
        affected: dict[int, int] = {}
        for k, shard in enumerate(self.partition):
            for r, part in enumerate(shard):
                hit = np.isin(part, new)
                if hit.any():
                    affected.setdefault(k, r)
                    shard[r] = part[~hit]
        slice_steps = 0
        for k, r in sorted(affected.items()):
            slice_steps += self.train_shard(k, rows, r, device)
        self.deleted.update(int(i) for i in new)
        report = {"examples_deleted": len(new), "shards_retrained": sorted(affected),
                  "first_slice": {int(k): int(r) for k, r in affected.items()}, "slice_steps_retrained": slice_steps,
                  "slice_steps_total": self.shards * self.slices, "seconds": time.perf_counter() - start}
        self.deletions.append(report)
        return report


def train_sisa(make_model: Callable[[], nn.Module], inputs: torch.Tensor, targets: torch.Tensor, shards: int = 5,
               slices: int = 5, training=None, seed: int = 0, aggregation: Aggregation = "vote",
               device: torch.device | str = "cpu", indices=None, n_train: int | None = None,
               partition: list[list[np.ndarray]] | None = None) -> SISAEnsemble:
    """Train a SISA ensemble ("the original model" of SISA unlearning).

    `inputs`/`targets` are training rows; `indices` their global training indices (default
    0..n-1), and `n_train` the size of the whole training set (default max index + 1). The partition
    is drawn from `seed` unless given explicitly (a list per shard of index arrays per slice)."""
    from ..train.config import TrainingConfig
    training = training or TrainingConfig()
    indices = np.arange(len(targets)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(indices) != len(targets):
        raise ConfigError("one global index per training row", expected=f"{len(targets)} indices", got=len(indices))
    if partition is None:
        if not (1 <= shards <= len(indices)) or slices < 1:
            raise ConfigError("bad SISA shape", expected=f"1 <= shards <= {len(indices)} and slices >= 1",
                              got=f"shards={shards}, slices={slices}")
        partition = split_shards(indices, shards, slices, seed)
    else:
        partition = [[np.asarray(s, dtype=np.int64) for s in shard] for shard in partition]
        if len({len(shard) for shard in partition}) != 1:
            raise ConfigError("every shard needs the same number of slices", expected="a list of R arrays per shard",
                              got=[len(s) for s in partition])
    n_train = n_train or (int(indices.max()) + 1 if len(indices) else 0)
    rows = _Rows(inputs, targets, indices)
    ensemble = SISAEnsemble([nn.Identity() for _ in partition], partition, n_train, training, seed, make_model,
                            aggregation)
    ensemble.constituents = nn.ModuleList(ensemble._fresh(k, device) for k in range(len(partition)))
    ensemble.n_classes = getattr(ensemble.constituents[0], "n_classes", None)
    for k in range(len(partition)):
        ensemble.train_shard(k, rows, 0, device)
    return ensemble.eval()


@UNLEARNERS.register("sisa", summary="exact: retrain only the shards of a SISA ensemble that held the deleted "
                                     "points, from their last clean slice checkpoint")
class SISA(Unlearner):
    """Exact SISA unlearning (Bourtoule et al., IEEE S&P 2021): see the module docstring."""

    name = "sisa"
    reads = {"forget": "indices", "retain": "examples"}
    exact = True

    class Config(Settings):
        shards: int = Field(5, ge=1, description="shards S when an ensemble must be built from a plain model")
        slices: int = Field(5, ge=1, description="slices R per shard when an ensemble must be built")
        aggregation: Aggregation | None = Field(None, description="'vote' (majority of labels) or 'mean_softmax'; "
                                                              "None: keep the ensemble's ('vote' when building)")
        build_if_plain: bool = Field(True, description="handed a plain model, train a SISA ensemble on the retain "
                                                       "set (exact); False: raise an error instead")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.last_report: dict = {}

    def unlearn(self, model, data, ctx):
        c = self.config
        if not isinstance(model, SISAEnsemble) and not c.build_if_plain:
            require_ensemble(model)
        forget_indices = data.forget().indices.numpy()  # only which points go; their contents are not used
        retain = data.retain()
        n_train = data.n_forget + data.n_retain
        if not isinstance(model, SISAEnsemble):
            start = time.perf_counter()
            ensemble = train_sisa(ctx.make_model, retain.inputs, retain.targets, c.shards, c.slices, ctx.training,
                                  ctx.seed, c.aggregation or "vote", ctx.device, indices=retain.indices.numpy(),
                                  n_train=n_train)
            ensemble.deleted.update(int(i) for i in forget_indices)
            self.last_report = {"built": True, "examples_deleted": len(forget_indices),
                                "shards_retrained": list(range(ensemble.shards)),
                                "slice_steps_retrained": ensemble.shards * ensemble.slices,
                                "slice_steps_total": ensemble.shards * ensemble.slices,
                                "seconds": time.perf_counter() - start}
            return Unlearned(ensemble, dict(self.last_report))
        if model.n_train != n_train:
            raise ConfigError("this SISA ensemble was trained on a different training set",
                              expected=f"a training set of {model.n_train} examples", got=n_train,
                              fix="train the ensemble with train_sisa on the same training set the request refers to")
        if c.aggregation is not None:
            model.aggregation = c.aggregation
        report = model.delete(forget_indices, _Rows(retain.inputs, retain.targets, retain.indices.numpy()), ctx.device)
        self.last_report = {"built": False, **report}
        return Unlearned(model.eval(), dict(self.last_report))


    def stored(self, model):
        """The constituents, the partition and the aggregation (the slice checkpoints are not kept:
        a restored ensemble predicts, but later deletions need an ensemble trained in this process)."""
        if not isinstance(model, SISAEnsemble):
            return super().stored(model)
        return {"constituents": [m.state_dict() for m in model.constituents], "n_train": model.n_train,
                "partition": [[torch.from_numpy(np.asarray(s, dtype=np.int64)) for s in shard] for shard in model.partition],
                "aggregation": model.aggregation, "seed": model.seed}

    @classmethod
    def restore(cls, make_model, saved):
        if "constituents" not in saved:
            return super().restore(make_model, saved)
        constituents = []
        for weights in saved["constituents"]:
            member = make_model()
            member.load_state_dict(weights)
            constituents.append(member)
        partition = [[s.numpy() for s in shard] for shard in saved["partition"]]
        return SISAEnsemble(constituents, partition, int(saved["n_train"]), None, int(saved["seed"]), make_model,
                            saved["aggregation"]).eval()


def require_ensemble(model: nn.Module) -> SISAEnsemble:
    """`model` as a SISAEnsemble, or a clear error saying how to get one."""
    if not isinstance(model, SISAEnsemble):
        raise ConfigError("SISA unlearning needs a model trained with SISA", expected="a SISAEnsemble",
                          got=type(model).__name__,
                          fix="train the original model with palimpsest.forget.sisa.train_sisa(make_model, inputs, "
                              "targets, shards, slices, training, seed)")
    return model


__all__ = ["SISA", "SISAEnsemble", "require_ensemble", "slice_epochs", "split_shards", "train_sisa"]
