"""OnPro from "Online Prototype Learning for Online Continual Learning" (Wei, Ye, Huang, Zhang, Sun,
Zhang and Shao, ICCV 2023). Followed: the paper and the authors' code (github.com/weilllllls/OnPro,
train.py, modules/OPE.py, modules/APF.py).

The paper attributes the poor generalisation of online learners to shortcut features and adds two
parts to a replay learner with a reservoir buffer:

Online prototype equilibrium (OPE). An online prototype is the mean of the L2-normalised features
of one class within a mini-batch, for each of two views (the batch and an augmented copy). The
prototypes of the two views are contrasted, the positive of a class's prototype being the same
class's prototype in the other view and the negatives every other class's prototypes in both views
(temperature 0.5):

    L_OPE(batch) = SupCon over [p^1_1..p^1_K; p^2_1..p^2_K] with labels [1..K; 1..K], self excluded

It is applied to the incoming batch's classes (L_new: features against shortcuts, pulled to stay
representative of each new class) and to a batch drawn from the buffer (L_seen: all seen classes kept
apart), L_OPE = L_new + L_seen.

Adaptive prototypical feedback (APF). The buffer batch's prototypes (the mean of the two views')
from the last step tell which seen classes lie close. Of the m replayed examples, a share
`mixup_base_rate` is the plain replay batch mixed with a random permutation of itself (each example
with probability `mixup_p`, lambda ~ U(mixup_lower, mixup_upper)); the rest are drawn per pair of
classes (a, b) in proportion to softmax(1 / ||mu_a - mu_b||), one example of each class from the
whole buffer, mixed with lambda ~ Beta(alpha, alpha) (probability `mixup_p` per pair, otherwise
lambda = 0). The easily confused pairs therefore get most of the mixed examples, whose
cross-entropy (1 - lambda) CE(y_a) + lambda CE(y_b) sharpens the boundary between them.

Besides, as in the code (after OCM, Guo et al. 2022), the learner trains an instance-wise supervised
contrastive loss (temperature 0.07) on rotated views: every image is rotated by k * 90 degrees
(pseudo-class y * R + k), and each rotated image and an augmented view of it are contrasted;
incoming rows also have an explicit term pulling each row to its own augmented view. In the first
experience the classifier's cross-entropy is on the augmented incoming batch; later it is on the
augmented (APF-mixed) replay batch only, and the incoming classes reach the head through the buffer,
which takes the incoming examples after every step (reservoir). Per step:

    loss = CE + L_ins(incoming) + L_ins(replayed, from the second experience) + L_new + L_seen

Prediction: the model's classifier head.

The contrastive terms read a linear projection head of the backbone's features (128-d, added to the
model by `prepare` as `onpro_projection`); the classifier reads the features themselves.

Departures: the code's instance term also contrasts the projection with a random 128-d slice of the
backbone's features (not done here: the projection alone); OCM's 16 rotation views (4 half-swaps x 4 rotations) are the 4 plain rotations here
(`rotations: 1` turns them off, needed for flat inputs); the replayed rows' instance-contrastive
labels are each mixed example's dominant class (the code's mixed float labels group mixed rows by
their exact lambda); views are `data.augment`'s "strong" recipe (resized crop, flip, noise) instead
of crop, flip and colour-to-grey; self pairs are left out of every contrastive term. The code replays
64 buffer examples per step (at most 7 per class seen); here `replay_batch_size` (default: as many as
the incoming batch) sets m, so OnPro can be compared with ER at an equal replay budget. The code's
Adam at lr 5e-4 is the recipe's optimizer here. The defaults are the code's (4 rotations, strong
views); recipes/cl_online_proxy_replay_fmnist.yaml turns the rotations off and uses the weak views,
which suit its MLP on Fashion-MNIST better (the numbers are in the recipe).
"""
from __future__ import annotations

import itertools

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from ..data.augment import RECIPES, augment, rotate90
from ..data.batch import Batch
from ..train.losses import supervised_contrastive
from .components import NamedTensors
from .replay import ReplaySettings, ReplayStrategy


class OnProConfig(ReplaySettings):
    prototype_temperature: float = Field(0.5, gt=0, description="temperature of the prototype contrast (OPE; the "
                                         "code's proto_t)")
    instance_temperature: float = Field(0.07, gt=0, description="temperature of the instance-wise contrast on "
                                        "rotated views (the code's ins_t)")
    rotations: int = Field(4, ge=1, le=4, description="4: rotated copies by k * 90 degrees as pseudo-classes "
                           "(square images only); 1: no rotations")
    replay_similarity_weight: float = Field(0.5, ge=0, description="scale of the similarities of the rows "
                                            "after the first experience (the code's sim_lambda: 0.5 for 10 "
                                            "classes, 1.0 for 100)")
    mixup_base_rate: float = Field(0.75, ge=0, le=1, description="share of the replay batch mixed at random; "
                                   "the rest are prototype-guided pairs of close classes (APF)")
    mixup_p: float = Field(0.6, ge=0, le=1, description="probability that an example (random part) or a class "
                           "pair (guided part) is mixed")
    mixup_lower: float = Field(0.0, ge=0, le=1, description="lowest lambda of the random mixup")
    mixup_upper: float = Field(0.6, ge=0, le=1, description="highest lambda of the random mixup")
    mixup_alpha: float = Field(0.4, gt=0, description="lambda ~ Beta(alpha, alpha) for the guided pairs")
    projection_dim: int | None = Field(128, ge=1, description="width of the linear projection head the contrastive "
                                       "terms read (the code's 128); None: they read the backbone's features")
    augmentation: str = Field("strong", pattern="^(" + "|".join(RECIPES) + ")$",
                              description="the second view of every example (data/augment.py)")


def online_prototypes(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes present, the mean of each one's rows) for L2-normalised `features`."""
    classes, inverse = torch.unique(targets, return_inverse=True)
    sums = features.new_zeros(len(classes), features.shape[1]).index_add_(0, inverse, features)
    counts = torch.bincount(inverse, minlength=len(classes)).clamp(min=1).to(features)
    return classes, sums / counts[:, None]


def prototype_equilibrium(view1: torch.Tensor, view2: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OPE: each class's online prototype of one view against every class's prototypes of both views
    (positive: its own class in the other view). Returns (loss, classes, mean of the two views'
    prototypes)."""
    z1, z2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    classes, p1 = online_prototypes(z1, targets)
    _, p2 = online_prototypes(z2, targets)
    labels = torch.arange(len(classes), device=targets.device)
    loss = supervised_contrastive(F.normalize(torch.cat([p1, p2]), dim=1), torch.cat([labels, labels]),
                                  temperature=temperature)
    return loss, classes, ((p1 + p2) / 2).detach()


def instance_contrast(features: torch.Tensor, labels: torch.Tensor, temperature: float, scale: float,
                      pair_term: bool) -> torch.Tensor:
    """The OCM-style loss on 2B rows (B rows, then their augmented views): supervised contrast among
    rows with the same (rotation) label, with similarities scaled by `scale`; with `pair_term`, twice
    that plus each row's -log p of its own view (the code's Supervised_NT_xent_n; without it, _uni)."""
    z = F.normalize(features, dim=1) * scale ** 0.5
    labels2 = torch.cat([labels, labels])
    loss = supervised_contrastive(z, labels2, temperature=temperature)
    if not pair_term:
        return loss
    b = len(labels)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    log_prob = logits.log_softmax(1)
    own_view = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(features.device)
    return 2 * loss - log_prob[torch.arange(2 * b, device=features.device), own_view].mean()


@STRATEGIES.register("onpro", summary="online prototype learning: prototype contrast of two views against shortcut "
                     "features, and replay mixed towards easily confused classes (Wei et al. 2023)")
class OnPro(ReplayStrategy):
    """Online Prototype Learning (Wei et al., ICCV 2023); see the module docstring."""

    name = "onpro"
    Config = OnProConfig
    # mixed replay crosses tasks, and a task-incremental head masks the other tasks' classes
    unsupported = frozenset({"task"})

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        # the last buffer batch's prototype per class (rows of zeros: classes it did not hold)
        self.prototypes = NamedTensors()

    def prepare(self, model):
        """Add the projection head (`model.onpro_projection`) the contrastive terms read."""
        if self.config.projection_dim is not None and not hasattr(model, "onpro_projection"):
            width = model.class_weights().shape[1]
            model.add_module("onpro_projection", nn.Linear(width, self.config.projection_dim))
        return model

    def projected(self, ctx, features: torch.Tensor) -> torch.Tensor:
        head = getattr(ctx.model, "onpro_projection", None)
        return features if head is None else head(features)

    # -- adaptive prototypical feedback -----------------------------------------------------------
    def feedback(self, memory: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """APF: (mixed inputs, first labels, second labels, lambdas, task ids) for a replay sample."""
        c = self.config
        x, y, t, m = memory["inputs"], memory["targets"], memory["task_ids"], len(memory["targets"])
        base = int(m * c.mixup_base_rate)
        order = torch.randperm(m, device=x.device)
        chosen, rest = order[:base], order[base:]
        partner = torch.randperm(base, device=x.device)
        lam = torch.empty(base, device=x.device).uniform_(c.mixup_lower, c.mixup_upper)
        lam = lam * (torch.rand(base, device=x.device) < c.mixup_p)
        parts = [(mix(x[chosen], x[chosen][partner], lam), y[chosen], y[chosen][partner], lam, t[chosen])]
        if len(rest):
            means = self.prototypes.get("means")
            present = torch.zeros(0, dtype=torch.long)
            if means is not None:
                present = (means.abs().sum(1) > 0).nonzero().flatten()
                present = present[torch.isin(present, self.buffer.buffer.data["targets"].to(present.device))]
            if len(present) >= 2:
                parts.append(self.guided_pairs(means[present], present, len(rest)))
            else:   # no prototypes of two classes yet: the rest of the sample unmixed
                parts.append((x[rest], y[rest], y[rest], x.new_zeros(len(rest)), t[rest]))
        return tuple(torch.cat(column) for column in zip(*parts))

    def guided_pairs(self, means, classes, n):
        """n examples mixed from pairs of classes drawn in proportion to softmax(1 / distance)."""
        c = self.config
        probability = F.softmax(1 / torch.pdist(means).clamp(min=1e-6), dim=0)
        counts = (probability * n).round().long()
        diff = n - int(counts.sum())
        if diff > 0:
            counts[torch.randperm(len(counts))[:diff]] += 1
        while diff < 0:
            nonzero = counts.nonzero().flatten()
            take = nonzero[torch.randperm(len(nonzero))[:-diff]]
            counts[take] -= 1
            diff += len(take)
        data = self.buffer.buffer.data
        inputs, targets, tasks = data["inputs"], data["targets"].to(classes.device), data["task_ids"]
        parts = []
        for (i, j), k in zip(itertools.combinations(range(len(classes)), 2), counts.tolist()):
            if k == 0:
                continue
            a, b = classes[i], classes[j]
            rows_a = (targets == a).nonzero().flatten()
            rows_b = (targets == b).nonzero().flatten()
            pick_a = rows_a[torch.randint(len(rows_a), (k,))]
            pick_b = rows_b[torch.randint(len(rows_b), (k,))]
            mixed = torch.rand(()) <= c.mixup_p
            lam = torch.distributions.Beta(c.mixup_alpha, c.mixup_alpha).sample((k,)).to(inputs) if mixed \
                else inputs.new_zeros(k)
            parts.append((mix(inputs[pick_a], inputs[pick_b], lam), targets[pick_a], targets[pick_b], lam,
                          tasks[pick_a]))
        return tuple(torch.cat(column) for column in zip(*parts))

    # -- hooks ------------------------------------------------------------------------------------
    def views(self, x: torch.Tensor) -> torch.Tensor:
        return rotate90(x) if self.config.rotations == 4 else x

    def prepare_batch(self, ctx, batch, values):
        n = values["incoming"]
        incoming = batch.head(n)
        recipe = self.config.augmentation
        memory = self.buffer.sample(self.replay_size(values))
        first = ctx.step == 0
        parts: list[Batch] = []
        sizes: dict[str, int] = {}

        def add(key, inputs, like):
            rows = len(inputs)
            repeat = rows // len(like["targets"])
            parts.append(Batch(inputs=inputs, targets=like["targets"].repeat(repeat),
                               task_ids=like["task_ids"].repeat(repeat)))
            sizes[key] = rows

        rotated = self.views(incoming["inputs"])
        add("incoming", rotated, incoming)
        add("incoming_view", augment(rotated, recipe), incoming)
        if memory:
            replay = {"inputs": memory["inputs"], "targets": memory["targets"], "task_ids": memory["task_ids"]}
            if not first:
                mixed, ya, yb, lam, tasks = self.feedback(memory)
                like = {"targets": torch.where(lam > 0.5, yb, ya), "task_ids": tasks}
                rotated_replay = self.views(mixed)
                add("replayed", rotated_replay, like)
                add("replayed_view", augment(rotated_replay, recipe), like)
                add("classify", augment(mixed, recipe), like)
                values["onpro_mix"] = (ya, yb, lam)
            add("seen", replay["inputs"], replay)
            add("seen_view", augment(replay["inputs"], recipe), replay)
        if first or not memory:
            add("classify", augment(incoming["inputs"], recipe), incoming)
        values["onpro_sizes"] = sizes
        values["onpro_first"] = first
        return Batch.cat(*parts)

    def batch_loss(self, ctx, batch, output, values):
        c = self.config
        sizes, n = values["onpro_sizes"], values["incoming"]
        parts, start = {}, 0
        for key, rows in sizes.items():
            parts[key] = slice(start, start + rows)
            start += rows
        features, logits, targets = self.projected(ctx, output.features), output.logits, batch["targets"]
        scale = 1.0 if values["onpro_first"] else c.replay_similarity_weight

        def rotation_labels(key):
            rows = targets[parts[key]]   # k-major: all rows rotated by 0, then by 90 degrees, ...
            k = torch.arange(len(rows), device=rows.device) // (len(rows) // c.rotations)
            return rows * c.rotations + k

        both = torch.cat([features[parts["incoming"]], features[parts["incoming_view"]]])
        loss = instance_contrast(both, rotation_labels("incoming"), c.instance_temperature, scale, pair_term=True)
        new, _, _ = prototype_equilibrium(features[parts["incoming"]][:n], features[parts["incoming_view"]][:n],
                                          targets[:n], c.prototype_temperature)
        loss = loss + new
        if "seen" in parts:
            seen, classes, means = prototype_equilibrium(features[parts["seen"]], features[parts["seen_view"]],
                                                         targets[parts["seen"]], c.prototype_temperature)
            loss = loss + seen
            table = means.new_zeros(logits.shape[1], means.shape[1])
            table[classes] = means
            values["onpro_means"] = table
        if "replayed" in parts:
            both = torch.cat([features[parts["replayed"]], features[parts["replayed_view"]]])
            loss = loss + instance_contrast(both, rotation_labels("replayed"), c.instance_temperature, scale,
                                            pair_term=False)
        classify = logits[parts["classify"]]
        if "onpro_mix" in values:
            ya, yb, lam = values["onpro_mix"]
            ce = ((1 - lam) * F.cross_entropy(classify, ya, reduction="none")
                  + lam * F.cross_entropy(classify, yb, reduction="none")).mean()
        else:
            ce = F.cross_entropy(classify, targets[parts["classify"]])
        return loss + ce

    def after_step(self, ctx, batch, values):
        if "onpro_means" in values:
            self.prototypes["means"] = values["onpro_means"]
        self.buffer.add(batch.head(values["incoming"]))   # rotation k = 0: the incoming rows as they came


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(1 - lambda) a + lambda b, row by row."""
    shape = (-1,) + (1,) * (a.dim() - 1)
    return (1 - lam.view(shape).to(a)) * a + lam.view(shape).to(a) * b


__all__ = ["OnPro", "instance_contrast", "online_prototypes", "prototype_equilibrium"]
