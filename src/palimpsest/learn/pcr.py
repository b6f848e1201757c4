"""PCR and HPCR: proxy-based contrastive replay for online continual learning.

PCR: "PCR: Proxy-based Contrastive Replay for Online Class-Incremental Continual Learning" (Lin,
Zhang, Feng, Li and Ye, CVPR 2023). HPCR: "HPCR: Holistic Proxy-based Contrastive Replay for Online
Continual Learning" (Lin, Feng, Li, Ye et al., 2023). Followed: the authors' code
(github.com/FelixHuiweiLin/PCR, agents/pcr.py and agents/hpcr.py).

PCR, each step: the incoming examples and one augmented view of each, plus a batch drawn from a
reservoir buffer and one augmented view of each, go through the network. Every row i is an anchor
(its L2-normalised feature) and the proxy of its class (the normalised head weight row w_{y_i}) is
its contrast: a supervised contrastive loss in "proxy" mode with temperature T,

    L_PCR = -1/N sum_i mean_{j: y_j = y_i} log( exp(a_i . p_j / T) / sum_k exp(a_i . p_k / T) ),

so each anchor is pulled to its own proxy and pushed only from the proxies of the classes present
in this batch (incoming and replayed), not from every class. Before the buffer holds anything the
loss is 0 (the code's `0 * CE`). Prediction: the cosine classifier, argmax_c cos(f(x), w_c).

HPCR adds, from the second experience on: a temperature factor tau_s, cycling between tau_min and
tau_max with a period of 500 steps within each experience, that multiplies L_PCR (the "decoupled
temperature"); a proxy-based distillation, alpha * MSE between the replayed rows' cosine logits
(cos / T, over the columns of the classes in the batch) and the logits they had when stored; and a
sample-based structure distillation, beta * CE between the old and new softmax over cosine
similarities among the replayed rows (self excluded), the old features being those stored with the
example. The buffer therefore keeps each example's logits and features from the step it was seen.

Departures: augmentations are `data.augment`'s "strong" recipe (resized crop 0.2-1, flip, noise),
the grayscale analogue of the code's crop, flip, colour jitter and grayscale. Stored logits are the
unmasked cosine logits over every class, as the code's fixed head gives them.

HPCR's contrastive component (the paper; the published code leaves it out): anchor-to-sample pairs
join PCR's anchor-to-proxy pairs, each anchor's contrast set being the proxies of the batch's rows
and every other row of the batch, its positives its class's proxy and the other rows of its class
(`proxy_sample_contrastive`). The paper adds them conditionally, through a step function of the
training batch's size (they help with large batches); `sample_pairs_min_batch` is that step's
threshold in rows. The paper's threshold value was not available to us: the default 0 always adds
the pairs, None never does (the code's behaviour). The temperature component follows the code: the
softmax temperature T = 0.09 stays fixed and the loss is scaled by tau_s in [0.09/0.16, 0.09/0.05],
which is the gradient's temperature moving between 0.05 and 0.16. The distillation weights are the
code's for CIFAR-100 (alpha 0.1, beta 0.5); for 10 classes the code uses alpha 0.01.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from ..data.augment import RECIPES, augment
from ..data.batch import Batch
from ..models.heads import CosineClassifier
from ..train.losses import supervised_contrastive
from .components import as_batch
from .replay import ReplaySettings, ReplayStrategy


class PCRConfig(ReplaySettings):
    temperature: float = Field(0.09, gt=0, description="T of the proxy contrastive loss and the cosine logits "
                               "(the code's pcr_temp, 0.09)")
    augmentation: str = Field("strong", pattern="^(" + "|".join(RECIPES) + ")$",
                              description="views added for every incoming and replayed example (data/augment.py)")


class HPCRConfig(PCRConfig):
    temperature_min: float = Field(0.5625, gt=0, description="lowest factor tau_s on the contrastive loss (0.09/0.16)")
    temperature_max: float = Field(1.8, gt=0, description="highest factor tau_s (0.09/0.05)")
    period: int = Field(500, ge=1, description="steps of one cycle of tau_s within an experience")
    alpha: float = Field(0.1, ge=0, description="weight of the proxy-based logit distillation (PCD; the code: 0.1 "
                         "on CIFAR-100 and Mini-ImageNet, 0.01 on CIFAR-10)")
    beta: float = Field(0.5, ge=0, description="weight of the sample-based structure distillation (SCD)")
    sample_pairs_min_batch: int | None = Field(
        0, ge=0, description="the contrastive component: anchor-to-sample pairs join the anchor-to-proxy pairs "
        "when a step's batch (incoming and replayed rows, both views) has at least this many rows (the paper's "
        "step function of the batch size); 0 = always, None = never (the authors' published code)")


def normalised(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1), dim=1, eps=1e-6)


@STRATEGIES.register("pcr", summary="proxy-based contrastive replay: anchors contrast with the proxies of the "
                     "classes in the batch (Lin et al. 2023)")
class PCR(ReplayStrategy):
    """Proxy-based Contrastive Replay (Lin et al., CVPR 2023); see the module docstring."""

    name = "pcr"
    Config = PCRConfig

    def prepare_batch(self, ctx, batch, values):
        n = values["incoming"]
        incoming = batch.head(n)
        memory = self.buffer.sample(self.replay_size(values))
        values["pcr_replayed"] = m = len(memory["targets"]) if memory else 0
        if m:
            values["pcr_stored"] = memory
        recipe = self.config.augmentation
        parts = [incoming, Batch(incoming, inputs=augment(incoming["inputs"], recipe))]
        if m:
            replayed = as_batch(memory)
            parts += [replayed, Batch(replayed, inputs=augment(replayed["inputs"], recipe))]
        return Batch.cat(*parts)

    def cosine(self, ctx, features: torch.Tensor) -> torch.Tensor:
        """cos(f, w_c) / T over every class, unmasked (the code's fixed cosine head)."""
        return normalised(features) @ normalised(ctx.model.class_weights()).T / self.config.temperature

    def contrastive(self, ctx, features, targets) -> torch.Tensor:
        proxies = normalised(ctx.model.class_weights())[targets]
        return supervised_contrastive(normalised(features), targets, proxies, targets, self.config.temperature)

    def batch_loss(self, ctx, batch, output, values):
        n, m = values["incoming"], values["pcr_replayed"]
        if not m:   # the code's 0 * CE: nothing to contrast with yet
            return 0.0 * F.cross_entropy(output.logits[:2 * n], batch["targets"][:2 * n])
        return self.contrastive(ctx, output.features, batch["targets"])

    def after_step(self, ctx, batch, values):
        self.buffer.add(batch.head(values["incoming"]), values.get("pcr_logits"), values.get("pcr_features"))

    def eval_model(self, model):
        return CosineClassifier(model, self.config.temperature)


@STRATEGIES.register("hpcr", summary="holistic PCR: PCR with a cycling temperature factor and logit and structure "
                     "distillation on replayed examples (Lin et al. 2023)")
class HPCR(PCR):
    """Holistic Proxy-based Contrastive Replay; see the module docstring."""

    name = "hpcr"
    Config = HPCRConfig

    def __init__(self, **settings):
        super().__init__(**settings)
        self._iteration = 0   # steps within the current experience (tau_s restarts each experience)

    def before_experience(self, ctx, exp):
        self._iteration = 0

    def temperature_factor(self, iteration: int) -> float:
        c = self.config
        return (c.temperature_max - c.temperature_min) * 0.5 * (1 - math.cos(2 * math.pi * iteration / c.period)) \
            + c.temperature_min

    def contrastive(self, ctx, features, targets) -> torch.Tensor:
        """PCR's anchor-to-proxy contrast, with the anchor-to-sample pairs when the batch is large enough."""
        threshold = self.config.sample_pairs_min_batch
        if threshold is None or len(features) < threshold:
            return super().contrastive(ctx, features, targets)
        return proxy_sample_contrastive(normalised(features), targets, normalised(ctx.model.class_weights()),
                                        self.config.temperature)

    def batch_loss(self, ctx, batch, output, values):
        n, m = values["incoming"], values["pcr_replayed"]
        features = output.features
        # what the buffer keeps for the incoming examples: their logits and features before this step
        values["pcr_logits"] = self.cosine(ctx, features[:n]).detach()
        values["pcr_features"] = features[:n].detach()
        tau = self.temperature_factor(self._iteration)
        self._iteration += 1
        if not m:
            return 0.0 * F.cross_entropy(output.logits[:2 * n], batch["targets"][:2 * n])
        loss = tau * self.contrastive(ctx, features, batch["targets"])
        stored = values["pcr_stored"]
        if ctx.step > 0 and "logits" in stored and "features" in stored:
            replayed = features[2 * n:]
            present = torch.unique(batch["targets"])   # the columns of the classes in this batch
            old_logits = torch.cat([stored["logits"], stored["logits"]])
            loss = loss + self.config.alpha * F.mse_loss(self.cosine(ctx, replayed)[:, present], old_logits[:, present])
            loss = loss + self.config.beta * structure_distillation(replayed, torch.cat([stored["features"]] * 2),
                                                                     self.config.temperature)
        return loss


def proxy_sample_contrastive(anchors: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    """HPCR's contrastive component with anchor-to-sample pairs: each anchor a_i is contrasted with the
    proxies of the classes of the batch's rows (as in PCR) and with every other row of the batch; its
    positives are its own class's proxy and the other rows of its class,

        -1/N sum_i mean_{p in P(i)} log( exp(a_i . p / T) / (sum_{c in C_B} exp(a_i . w_c / T)
                                                              + sum_{j != i} exp(a_i . a_j / T)) ).

    Rows are L2-normalised features, `class_weights` the normalised proxies."""
    proxies = class_weights[targets]
    n = len(anchors)
    logits = torch.cat([anchors @ proxies.T, anchors @ anchors.T], dim=1) / temperature
    self_pairs = torch.cat([torch.zeros(n, n, dtype=torch.bool, device=anchors.device),
                            torch.eye(n, dtype=torch.bool, device=anchors.device)], dim=1)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    same = targets.view(-1, 1) == targets.view(1, -1)
    positives = torch.cat([same, same], dim=1) & ~self_pairs
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mean_positive = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / positives.sum(1)
    return -mean_positive.mean()


def structure_distillation(new: torch.Tensor, old: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE(softmax(old sims), softmax(new sims)) over cosine similarities among rows, self excluded,
    averaged over rows (HPCR's sample-based structure distillation)."""
    def log_softmax_similarities(f):
        f = normalised(f)
        sims = f @ f.T / temperature
        off = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
        return F.log_softmax(sims[off].view(len(f), -1), dim=1)
    with torch.no_grad():
        target = log_softmax_similarities(old).exp()
    return -(target * log_softmax_similarities(new)).sum(1).mean()


__all__ = ["HPCR", "PCR", "proxy_sample_contrastive", "structure_distillation"]
