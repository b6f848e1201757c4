"""NAPA-VQ: Malepathirana, Senanayake and Halgamuge, "NAPA-VQ: Neighborhood-Aware Prototype
Augmentation with Vector Quantization for Continual Learning", ICCV 2023. Followed: the paper and the
authors' code (github.com/TamashaM/NAPA-VQ, NAPAVQ.py and losses/na_loss.py).

Non-exemplar class-incremental learning: no example of an earlier experience is kept, only one mean
feature (prototype) per class. The feature space is quantised by coding vectors (CVs), one per class
and rotation: as in PASS, every image is also seen rotated by 90, 180 and 270 degrees, and
(class y, rotation k) is label y * 4 + k. The CVs are trained like a neural gas:

  graph     for each feature, the nearest CV (the winner) is joined to its `neighbours` nearest CVs
            (edge strength 1); every other edge of the winner decays by `edge_decay` per visit, and
            edges below `edge_min` are cut (competitive Hebbian learning; edges kept symmetric)
  loss      cross-entropy over -||f - cv_j|| / T (the distance classifier)
            + NA: mean_i relu(||f_i - cv_{y_i}||^2 - sum_{j neighbour of y_i} w_ij ||f_i - cv_j||^2),
              w_i = softmax_j(-0.001 ||f_i - cv_j||^2) over the graph neighbours of y_i (not learned):
              a contrast with the classes that lie close, not with all of them
  from the second experience:
            + kd_weight * ||F - F_old||_2, the features of the rotated batch against the previous
              model's (torch.dist over the whole batch)
            + NA-PA, neighbourhood-aware prototype augmentation: for as many old classes as the batch
              has images (drawn uniformly), a pseudo-feature gamma * P_c + (1 - gamma) * P_n between
              the class's prototype and that of a random graph neighbour n (itself included),
              gamma ~ U(0.5, 1); these pass through the NA loss and pa_weight * the cross-entropy
  CVs       of classes outside the current experience are frozen (gradients zeroed); the CVs take
            their own plain SGD step of `cv_lr` (x `later_lr_factor` after the first experience)
  prototypes the mean feature of each (class, rotation) of an experience, computed with the model at
            its end; and at its start for the experience's classes, so new classes already have a
            position when they are drawn as neighbours of old ones
  prediction the nearest L2-normalised rotation-0 CV to the L2-normalised feature

Code settings: T 0.1, pa_weight 10, kd_weight 10, k = 15 neighbours, edge decay 0.9, cut at 0.9^10,
CV SGD lr 5 (0.5 after the first task), network Adam 1e-3 (1e-4 after the first task), batch 64,
100 epochs, ResNet-18 with 512 features, a first task of half the classes (CIFAR-100: 50 + 5 x 10).

Departures: our backbones (an MLP on Fashion-MNIST), epochs and splits (equal tasks); the network's optimizer is the run's
(`training:` of the spec), one learning rate for every experience, no step decay of either learning
rate; the CVs' SGD step is made in `after_step`, outside the run's optimizer (the paper's second
optimizer), so gradient accumulation is refused. `rotations: 1` drops the rotation labels (needed
for inputs that are not square images); with only 2 coding vectors per experience the code's CV
learning rate 5 then diverges (split Fashion-MNIST, 2 classes per experience): use cv_lr 0.5. The class prototypes are computed on the experience's own
training data at its start and end, also in online streams, where that is a second look at data
the stream has already shown.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.config import Settings
from ..core.registry import STRATEGIES
from ..data.augment import rotate90
from ..data.batch import Batch
from .components import NamedTensors, Snapshot
from .icarl import NearestMeanOfExemplars
from .strategy import Strategy

FAR = 1.0e4   # distance given to coding vectors of classes not seen yet (never a winner, never predicted)


def update_graph(edges: torch.Tensor, distances: torch.Tensor, k: int, decay: float, minimum: float) -> torch.Tensor:
    """One neural-gas graph update from a batch (the code's NAVQ.forward, vectorised): each row's
    nearest CV (its winner) is joined to its k nearest CVs; the winner's other edges decay by
    `decay` once per visit; edges under `minimum` are cut; the result is symmetrised. `distances`
    (N, M) holds FAR for CVs that may not take part."""
    m = edges.shape[0]
    k = max(1, min(k, int((distances[0] < FAR).sum())))
    nearest = distances.topk(k, dim=1, largest=False).indices
    winner = nearest[:, 0]
    visits = torch.bincount(winner, minlength=m).to(edges.dtype)
    joined = edges.new_zeros(m, m).index_put_((winner.repeat_interleave(k), nearest.reshape(-1)),
                                              edges.new_ones(len(winner) * k), accumulate=True)
    decays = (visits.view(-1, 1) - joined).clamp(min=0)
    edges = torch.maximum(edges, (joined > 0).to(edges.dtype)) * decay ** decays
    edges = edges * (edges >= minimum)
    return (edges + edges.T) / 2


def neighbourhood_loss(features: torch.Tensor, labels: torch.Tensor, cvs: torch.Tensor, edges: torch.Tensor,
                       usable: torch.Tensor, scale: float = 1e-3) -> torch.Tensor:
    """NA loss: mean_i relu(d_i,y - sum_j w_ij d_ij), d squared distances to the CVs, j over the
    graph neighbours of y_i (usable, not y_i itself), w_i = softmax(-scale d_i) over them, detached."""
    d2 = torch.cdist(features, cvs).pow(2)
    positive = d2.gather(1, labels.view(-1, 1)).squeeze(1)
    neighbour = (edges[labels] > 0) & usable.view(1, -1)
    neighbour[torch.arange(len(labels), device=labels.device), labels] = False
    weights = torch.softmax((-scale * d2.detach()).masked_fill(~neighbour, float("-inf")), dim=1)
    weights = torch.nan_to_num(weights) * neighbour            # rows without any neighbour: no negative term
    return F.relu(positive - (weights * d2).sum(1)).sum() / len(labels)


@STRATEGIES.register("napa_vq", summary="NAPA-VQ: neural-gas coding vectors with a neighbourhood graph, "
                     "neighbour-aware contrast and prototype augmentation, no exemplars (Malepathirana et al. 2023)")
class NAPAVQ(Strategy):
    """Neighborhood-Aware Prototype Augmentation with Vector Quantization; see the module docstring."""

    name = "napa_vq"
    accumulation_safe = False    # the coding vectors step in after_step with the last micro-batch's gradient
    # the paper's optimizer; plain SGD at lr 0.05 kills the features
    training_requirements: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 1e-3}

    class Config(Settings):
        rotations: Literal[1, 4] = Field(4, description="4: each image also rotated by 90, 180, 270 degrees with its "
                                         "own label (PASS's label augmentation, the paper); 1: none")
        temperature: float = Field(0.1, gt=0, description="T of the distance classifier's cross-entropy")
        pa_weight: float = Field(10.0, ge=0, description="weight of the cross-entropy of the augmented prototypes")
        kd_weight: float = Field(10.0, ge=0, description="weight of the feature distillation ||F - F_old||")
        cv_lr: float = Field(5.0, gt=0, description="SGD learning rate of the coding vectors (the code's "
                             "sng_learning_rate)")
        later_lr_factor: float = Field(0.1, gt=0, le=1, description="cv_lr factor after the first experience")
        neighbours: int = Field(15, ge=1, description="k: the winner is joined to its k nearest coding vectors")
        edge_decay: float = Field(0.9, gt=0, lt=1, description="decay of a winner's other edges per visit")
        edge_min: float = Field(0.9 ** 10, gt=0, lt=1, description="edges weaker than this are cut")
        gamma_min: float = Field(0.5, ge=0, le=1, description="augmented prototype = gamma P_c + (1 - gamma) P_n, "
                                 "gamma ~ U(gamma_min, 1)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.previous = Snapshot()
        # cvs (C*R, d) coding vectors; edges (C*R, C*R) graph; prototypes (C*R, d) with has_prototype;
        # seen (C,) classes met so far
        self.vq = NamedTensors()
        self._trainable: torch.Tensor | None = None   # CV rows that learn in this experience
        self._old: torch.Tensor | None = None         # old classes whose prototypes are augmented

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, ctx):
        super().setup(ctx)
        model, r = ctx.model, self.config.rotations
        n = model.n_classes * r
        generator = torch.Generator().manual_seed(ctx.seed)
        self.vq.clear()
        self.vq.update(cvs=torch.randn(n, model.feature_dim, generator=generator).to(ctx.device),
                       edges=torch.eye(n, device=ctx.device), prototypes=torch.zeros(n, model.feature_dim, device=ctx.device),
                       has_prototype=torch.zeros(n, dtype=torch.bool, device=ctx.device),
                       seen=torch.zeros(model.n_classes, dtype=torch.bool, device=ctx.device))

    def rows(self, classes) -> torch.Tensor:
        """CV rows (every rotation) of these classes."""
        r = self.config.rotations
        return torch.tensor([c * r + k for c in classes for k in range(r)], dtype=torch.long)

    def rotated(self, batch: Batch) -> tuple[Batch, torch.Tensor]:
        """The batch with every rotation stacked (k-major) and the CV label of each row."""
        r, y = self.config.rotations, batch["targets"]
        if r == 1:
            return batch, y
        n = len(y)
        rotated = Batch({key: torch.cat([value] * r) if torch.is_tensor(value) and len(value) == n else value
                         for key, value in batch.items()})
        rotated["inputs"] = rotate90(batch["inputs"])
        return rotated, torch.cat([y * r + k for k in range(r)])

    # -- hooks -------------------------------------------------------------------------------
    def before_experience(self, ctx, exp):
        classes = sorted(int(c) for c in exp.classes)
        seen = self.vq["seen"]
        self._old = torch.tensor([c for c in seen.nonzero(as_tuple=True)[0].tolist() if c not in classes],
                                 dtype=torch.long, device=ctx.device)
        seen[classes] = True
        self._trainable = torch.zeros(len(self.vq["cvs"]), dtype=torch.bool, device=ctx.device)
        self._trainable[self.rows(classes).to(ctx.device)] = True
        if bool(self.vq["has_prototype"].any()):   # new classes get a position before they train
            self.save_prototypes(ctx, exp)

    def prepare_batch(self, ctx, batch, values):
        batch, values["napa_labels"] = self.rotated(batch.head(values["incoming"]))
        return batch

    def usable(self) -> torch.Tensor:
        return self.vq["seen"].repeat_interleave(self.config.rotations)

    def distances(self, features: torch.Tensor, cvs: torch.Tensor) -> torch.Tensor:
        return torch.cdist(features, cvs).masked_fill(~self.usable().view(1, -1), FAR)

    def vq_terms(self, features: torch.Tensor, labels: torch.Tensor, cvs: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the distance classifier plus the NA loss, the graph updated first."""
        c = self.config
        distances = self.distances(features, cvs)
        with torch.no_grad():
            self.vq["edges"] = update_graph(self.vq["edges"], distances.detach(), c.neighbours, c.edge_decay, c.edge_min)
        return (F.cross_entropy(-distances / c.temperature, labels),
                neighbourhood_loss(features, labels, cvs, self.vq["edges"], self.usable()))

    def batch_loss(self, ctx, batch, output, values):
        c = self.config
        cvs = self.vq["cvs"].requires_grad_(True)
        features, labels = output.features.flatten(1), values["napa_labels"]
        ce, na = self.vq_terms(features, labels, cvs)
        loss = ce + na
        if self.previous:
            with torch.no_grad():
                old = self.previous.model.features(batch["inputs"]).flatten(1)
            loss = loss + c.kd_weight * torch.dist(features, old, 2)
        augmented = self.augmented_prototypes(values["incoming"], ctx.device)
        if augmented is not None:
            ce_pa, na_pa = self.vq_terms(*augmented, cvs)
            loss = loss + c.pa_weight * ce_pa + na_pa
        return loss

    def augmented_prototypes(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """n pseudo-features of old classes (rotation 0), each between its prototype and that of a
        random graph neighbour; None when there is no old class."""
        if self._old is None or not len(self._old):
            return None
        r, prototypes, known = self.config.rotations, self.vq["prototypes"], self.vq["has_prototype"]
        labels = self._old[torch.randint(len(self._old), (n,))].to(device) * r
        candidates = (self.vq["edges"][labels] > 0) & known.view(1, -1)
        candidates[torch.arange(n, device=device), labels] = True      # the diagonal: itself is a neighbour
        neighbours = torch.multinomial(candidates.float(), 1).squeeze(1)
        gamma = torch.empty(n, 1, device=device).uniform_(self.config.gamma_min, 1.0)
        return gamma * prototypes[labels] + (1 - gamma) * prototypes[neighbours], labels

    def after_step(self, ctx, batch, values):
        cvs = self.vq["cvs"]
        if cvs.grad is None:
            return
        lr = self.config.cv_lr * (self.config.later_lr_factor if self.previous else 1.0)
        with torch.no_grad():
            cvs -= lr * cvs.grad * self._trainable.view(-1, 1)
        cvs.grad = None

    def after_experience(self, ctx, exp):
        self.save_prototypes(ctx, exp)
        self.previous.take(ctx.model)

    @torch.no_grad()
    def save_prototypes(self, ctx, exp) -> None:
        """The mean feature of every (class, rotation) of the experience, with the current model."""
        model, was_training = ctx.model, ctx.model.training
        model.eval()
        sums = torch.zeros_like(self.vq["prototypes"])
        counts = torch.zeros(len(sums), device=sums.device)
        for start in range(0, len(exp.targets), 512):
            part = Batch(inputs=exp.inputs[start:start + 512].to(ctx.device),
                         targets=exp.targets[start:start + 512].to(ctx.device))
            rotated, labels = self.rotated(part)
            sums.index_add_(0, labels, model.features(rotated["inputs"]).flatten(1))
            counts += torch.bincount(labels, minlength=len(sums))
        model.train(was_training)
        present = counts > 0
        self.vq["prototypes"][present] = sums[present] / counts[present].view(-1, 1)
        self.vq["has_prototype"] |= present

    def eval_model(self, model):
        cvs = F.normalize(self.vq["cvs"].detach()[::self.config.rotations], dim=1).to(model.active.device)
        return NearestMeanOfExemplars(model, cvs, model.active.clone())

    def load_extra_state(self, state):
        self.vq["cvs"] = self.vq["cvs"].detach()


__all__ = ["NAPAVQ", "neighbourhood_loss", "update_graph"]
