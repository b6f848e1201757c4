"""DP2Unlearning: Mahmud et al., "DP2Unlearning: An Efficient and Guaranteed Unlearning Framework
for LLMs" (2025), on vision models.

At training time, next to the deployed model, a base model is trained on the whole training set with
DP-SGD (Abadi et al. 2016: per-example gradients clipped to `max_grad_norm`, Gaussian noise,
Poisson-sampled batches) through opacus, the noise calibrated by its RDP accountant so that the
base is (ε, δ)-differentially private with respect to each training example. A forget request is
served by fine-tuning that base on the retain set only (`finetune_epochs` of the original recipe).
The DP base barely depends on any one example, so the result is close in distribution to the same
fine-tuning of a DP base trained without the forget set: for a forget set of k examples, group
privacy bounds the difference by (kε, k·e^{(k−1)ε}·δ) (reported as `epsilon_group`; it is only
meaningful for small k, which is the paper's point too: the guarantee is per record). The cost of a
request is the fine-tuning, against retraining from scratch; the DP base is paid once, at
training time (its cost is reported, `base_seconds`).

Reads: the retain set (fine-tuning) and the forget set, because the DP base was trained on it (the
guarantee makes that acceptable; the leakage guard still requires it to be declared). The base is a
training-time artefact (`artifacts`); without it (a model trained outside the runner) it is trained
on the spot from forget + retain.

Departures: the paper trains LLMs with DP-SGD or DP-MLM and fine-tunes with LoRA or fully; here the
whole vision model is fine-tuned; opacus needs layers it can compute per-example gradients for
(BatchNorm is refused with a clear error). Needs opacus (`pip install 'palimpsest[dp]'`).
"""
from __future__ import annotations

import math
import time
import warnings

import torch
from pydantic import Field
from torch import nn

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from ..train.fit import fit
from .base import Unlearned, Unlearner
from .common import recipe_with

BASE_KEY = "dp2_base"


def _opacus():
    try:
        import opacus
        return opacus
    except ImportError:
        raise ConfigError("dp2unlearning needs the opacus library", expected="opacus installed",
                          got="no module named opacus", fix="pip install 'palimpsest[dp]'") from None


def train_dp_base(make_model, inputs: torch.Tensor, targets: torch.Tensor, *, epsilon: float, delta: float,
                  max_grad_norm: float, epochs: int, batch_size: int, lr: float, seed: int, device) -> dict:
    """A model trained with DP-SGD (opacus, Poisson sampling, RDP accountant) to (epsilon, delta);
    returns {"model": state_dict, "epsilon": spent, "delta", "noise_multiplier", "seconds"}."""
    _opacus()
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator
    torch.manual_seed(seed)
    model = make_model().to(device)
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError("dp2unlearning's DP-SGD cannot train this model", expected="layers with per-example "
                          "gradients (no BatchNorm)", got=[str(p) for p in problems][:3],
                          fix="use a model without BatchNorm (e.g. mlp, or cnn with norm: none / group)")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=batch_size,
                                         generator=generator(seed, "dp2_loader"))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # opacus warns that its RNG is not cryptographically secure (seeded, for reproducible runs) and
        # that backward hooks fire on inputs without gradients; neither changes the accounting
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=epsilon, target_delta=delta,
            epochs=epochs, max_grad_norm=max_grad_norm, noise_generator=generator(seed, "dp2_noise"))
        private.train()
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            for x, y in loader:
                if len(y) == 0:   # Poisson sampling can draw an empty batch
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss_fn(private(x.to(device)), y.to(device)).backward()
                optimizer.step()
    seconds = time.perf_counter() - start
    state = {k: v.detach().clone() for k, v in private._module.state_dict().items()}
    return {"model": state, "epsilon": float(engine.get_epsilon(delta)), "delta": float(delta),
            "noise_multiplier": float(optimizer.noise_multiplier), "seconds": seconds}


def group_epsilon(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """Group privacy of k records under (epsilon, delta)-DP: (k epsilon, k e^{(k-1) epsilon} delta)."""
    return k * epsilon, min(1.0, k * math.exp(min((k - 1) * epsilon, 700.0)) * delta)   # a δ above 1 says nothing


@UNLEARNERS.register("dp2unlearning", summary="DP2Unlearning: a DP-SGD base (opacus, epsilon-bounded per record) "
                     "kept at training time, fine-tuned on the retain set per request (Mahmud et al. 2025)")
class DP2Unlearning(Unlearner):
    """DP2Unlearning (Mahmud et al. 2025): fine-tune an (ε, δ)-DP base model on the retain set."""

    name = "dp2unlearning"
    reads = {"forget": "examples", "retain": "examples"}
    rebuilds = True   # returns the fine-tuned DP base, not an edit of the deployed model
    requires = ("opacus",)

    class Config(Settings):
        epsilon: float = Field(8.0, gt=0, description="target ε of the DP base (per training example)")
        delta: float | None = Field(None, gt=0, lt=1, description="target δ; None: 1 / (10 n) for n training "
                                    "examples")
        max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm of DP-SGD")
        epochs: int | None = Field(None, ge=1, description="DP-SGD epochs; None: the original recipe's")
        batch_size: int = Field(256, ge=1, description="expected DP-SGD batch size (Poisson sampling)")
        lr: float = Field(0.1, gt=0, description="DP-SGD learning rate (SGD, momentum 0.9)")
        finetune_epochs: int = Field(2, ge=0, description="epochs of the original recipe on the retain set per request")
        finetune_lr: float | None = Field(None, gt=0, description="fine-tuning learning rate; None: the recipe's")

    def _base(self, make_model, inputs, targets, ctx) -> dict:
        c = self.config
        return train_dp_base(make_model, inputs, targets, epsilon=c.epsilon, delta=c.delta or 1 / (10 * len(targets)),
                             max_grad_norm=c.max_grad_norm, epochs=c.epochs or ctx.training.epochs,
                             batch_size=c.batch_size, lr=c.lr, seed=ctx.seed, device=ctx.device)

    def artifacts(self, model, inputs, targets, ctx):
        """The DP base, trained at training time on the whole training set (kept with the model)."""
        return {BASE_KEY: self._base(ctx.make_model, inputs, targets, ctx)}

    def unlearn(self, model, data, ctx):
        c = self.config
        forget, retain = data.forget(), data.retain()
        base = ctx.cache[BASE_KEY] if BASE_KEY in ctx.cache else None
        cached = base is not None
        if base is None:   # no training-time base: train it now on the whole training set
            base = self._base(ctx.make_model, torch.cat([forget.inputs, retain.inputs]),
                              torch.cat([forget.targets, retain.targets]), ctx)
        out = ctx.make_model().to(ctx.device)
        out.load_state_dict(base["model"])
        start = time.perf_counter()
        if c.finetune_epochs:
            fit(out, retain.inputs, retain.targets, recipe_with(ctx.training, epochs=c.finetune_epochs,
                                                                  lr=c.finetune_lr), ctx.seed, ctx.device,
                stage="dp2_finetune")
        seconds = time.perf_counter() - start
        eps, delta = float(base["epsilon"]), float(base["delta"])
        k_eps, k_delta = group_epsilon(eps, delta, len(forget))
        return Unlearned(out.eval(), {"epsilon": eps, "delta": delta, "noise_multiplier": float(base["noise_multiplier"]),
                                      "epsilon_group": k_eps, "delta_group": k_delta, "forget_size": len(forget),
                                      "base_seconds": float(base["seconds"]), "base_cached": cached,
                                      "finetune_seconds": seconds})


__all__ = ["DP2Unlearning", "group_epsilon", "train_dp_base"]
