"""Fisher forgetting: Golatkar, Achille and Soatto, "Eternal Sunshine of the Spotless Net: Selective
Forgetting in Deep Networks" (CVPR 2020).

No training: noise is added to every weight in inverse proportion to how much the retain set needs
it, measured by the diagonal Fisher information F of the retain set,

    w  <-  w + sqrt(alpha * min(1 / (F + 1e-8), cap)) * N(0, 1),

so weights the retained data pins down barely move while weights only the forgotten data used are
scrambled (the paper's "scrubbing" with the Fisher approximation of the Hessian). As in the code most
unlearning papers compare against (Foster et al.'s SSD repository, `fisher_new`, after the authors'):
F is the true Fisher (here estimated per example with one label drawn from the model's softmax:
unbiased for E_y~p [(d log p_y / dw)^2]); the variance is capped at 1e3 (1e2 for the head), averaged
over each row of a matrix, multiplied by 10 for the head and for 1-D parameters, alpha = 1e-6; for a
whole-class request the forgotten classes' head rows are set to 0 with variance 1e-4.

Reads the retain set (its Fisher) and the forget set's labels (which classes a class request removes).
A reference point the audits must rank: it forgets classes (the head rows), but on random requests
its noise hurts utility before it removes membership.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from ..core.seeding import generator
from ..train.importance import per_example_importance
from .base import Unlearned, Unlearner


def retain_fisher(model, inputs, targets, seed: int, device, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Diagonal true Fisher of `model` on the retain set (one sampled label per example)."""
    gen = generator(seed, "fisher_forgetting_labels")

    def sampled(logits, _targets):
        probs = torch.softmax(torch.nan_to_num(logits.float(), neginf=-1e4), 1).cpu()
        return torch.multinomial(probs, 1, generator=gen).squeeze(1).to(logits.device)

    def nll(logits, label):
        return torch.nn.functional.cross_entropy(logits, label, reduction="none")

    no_tasks = torch.zeros(len(targets), dtype=torch.long)
    return per_example_importance(model.eval(), (inputs, targets, no_tasks), False, sampled, nll, "square",
                                  torch.device(device), chunk=chunk)


@UNLEARNERS.register("fisher_forgetting", summary="Fisher forgetting: Gaussian noise scaled by the inverse retain-set "
                     "Fisher (Golatkar et al. 2020)")
class FisherForgetting(Unlearner):
    """Golatkar et al. (CVPR 2020): scrub weights with noise the retain set's Fisher does not resist."""

    name = "fisher_forgetting"
    reads = {"retain": "examples", "forget": "labels"}
    zero_steps = {"alpha": 0.0, "zero_head_rows": False}

    class Config(Settings):
        alpha: float = Field(1e-6, ge=0, description="scale of the noise variance (the reference code's 1e-6)")
        cap: float = Field(1e3, gt=0, description="largest variance before alpha (1 / Fisher is capped there)")
        head_cap: float = Field(1e2, gt=0, description="largest variance of the head's parameters")
        zero_head_rows: bool = Field(True, description="whole-class requests: set the forgotten classes' head rows "
                                     "to 0 (variance 1e-4), as the reference code does")
        chunk: int = Field(256, ge=1, description="examples per per-example-gradient pass (memory only)")

    def unlearn(self, model, data, ctx):
        c = self.config
        model.to(ctx.device)
        retain, forget = data.retain(), data.forget()
        fisher = retain_fisher(model, retain.inputs, retain.targets, ctx.seed, ctx.device, c.chunk) if c.alpha else {}
        kept = set(torch.unique(retain.targets).tolist())
        gone = sorted(set(torch.unique(forget.targets).tolist()) - kept)   # classes with no retained example
        gen = generator(ctx.seed, "fisher_forgetting_noise")
        moved = 0.0
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                head = p.shape[0] == data.n_classes
                mu = p.detach().clone()
                if c.alpha:
                    var = (1.0 / (fisher[name] + 1e-8)).clamp(max=c.head_cap if head else c.cap) * c.alpha
                    if p.ndim > 1:
                        var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
                    if head or p.ndim == 1:
                        var = var * 10
                else:
                    var = torch.zeros_like(p)
                if head and gone and c.zero_head_rows:
                    mu[gone] = 0
                    var[gone] = 1e-4 if c.alpha else 0.0
                noise = torch.randn(p.shape, generator=gen).to(p.device)
                new = mu + var.sqrt() * noise
                moved += float((new - p).square().sum())
                p.copy_(new)
        return Unlearned(model.eval(), {"forgotten_classes": gone, "weight_change_norm": moved ** 0.5,
                                        "alpha": c.alpha})


__all__ = ["FisherForgetting", "retain_fisher"]
