"""Exact unlearning of a linear head: the head refitted from scratch on the retain set's features.

With the backbone frozen, a linear softmax head with L2 regularisation is a strictly convex problem:
its optimum on the retain set's features is unique, so refitting it (from zeros, L-BFGS to
convergence) gives exactly the head that training on the retain set alone would give on these
features; no trace of the forget set is left in the head (as in the certified-removal and
"linear filtration" baselines for linear models, e.g. Guo et al. 2020, Baumhauer et al. 2022). The
backbone still carries what it learned from the forget set, so this is a reference point, not full
unlearning: an audit that cannot rank it between the original and the retrained model (members
still exposed through the features) is not measuring the backbone.

Reads the retain set. The head's parameters are replaced; everything else is bit for bit the
original's. Multi-head models are refused (one head per task has no single refit).
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import UNLEARNERS
from .base import Unlearned, Unlearner


@torch.no_grad()
def features_of(model, inputs: torch.Tensor, device, chunk: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(inputs[i:i + chunk].to(device)) for i in range(0, len(inputs), chunk)])


def fit_linear_head(feats: torch.Tensor, targets: torch.Tensor, n_out: int, l2: float, max_iter: int,
                    classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The unique minimiser of mean CE + (l2 / 2) ||W||^2 over (W, b) from zeros, by L-BFGS; logits of
    classes outside `classes` are masked (they get no probability, as in a growing head)."""
    w = torch.zeros(n_out, feats.shape[1], dtype=feats.dtype, requires_grad=True)
    b = torch.zeros(n_out, dtype=feats.dtype, requires_grad=True)
    mask = None
    if classes is not None:
        mask = torch.full((n_out,), float("-inf"), dtype=feats.dtype)
        mask[classes] = 0.0
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = feats @ w.T + b
        if mask is not None:
            logits = logits + mask
        loss = F.cross_entropy(logits, targets) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    grad = float(torch.cat([w.grad.flatten(), b.grad.flatten()]).abs().max())
    return w.detach(), b.detach(), {"head_loss": float(loss.detach()), "head_max_grad": grad}


@UNLEARNERS.register("linear_head_exact", summary="exact for the head: refit a linear head from scratch on the "
                     "retain set's frozen features (strictly convex, unique optimum); the backbone is kept")
class LinearHeadExact(Unlearner):
    """Refit the linear head on the retain set's features (exact for the head; a reference point)."""

    name = "linear_head_exact"
    reads = {"retain": "examples"}
    rebuilds = True   # the head is rebuilt from zeros, whatever it was

    class Config(Settings):
        l2: float = Field(1e-3, gt=0, description="L2 weight on the head's weights (makes the optimum unique)")
        max_iter: int = Field(500, ge=1, description="L-BFGS iterations (to convergence on small heads)")

    def unlearn(self, model, data, ctx):
        c = self.config
        head = getattr(model, "head", None)
        if not isinstance(head, torch.nn.Linear) or not hasattr(model, "features"):
            raise ConfigError("linear_head_exact needs a model with one linear head", expected="a single-head "
                              "classifier (model.features, model.head)", got=type(model).__name__,
                              fix="use a single-head model (head: single)")
        model.to(ctx.device)
        retain = data.retain()
        feats = features_of(model, retain.inputs, ctx.device).cpu().double()
        classes = torch.unique(retain.targets)
        w, b, report = fit_linear_head(feats, retain.targets, head.out_features, c.l2, c.max_iter, classes)
        with torch.no_grad():
            head.weight.copy_(w.to(head.weight))
            head.bias.copy_(b.to(head.bias))
            # a class with no retained example gets no probability (its logit masked via the bias)
            gone = torch.ones(head.out_features, dtype=torch.bool)
            gone[classes] = False
            head.bias[gone] = -1e4
        return Unlearned(model.eval(), dict(report, refit_classes=len(classes)))


__all__ = ["LinearHeadExact", "fit_linear_head"]
