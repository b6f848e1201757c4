"""UER from "UER: A Heuristic Bias Addressing Approach for Online Continual Learning" (Lin, Feng,
Zhang, Qiao, Li and Ye, ACM MM 2023).

A dot-product logit w_c . f = ||w_c|| ||f|| cos(w_c, f) has a norm factor and an angle factor. The
paper finds the bias towards the classes of the current data mostly in the angle factor when it
is learned through the full logits, while the norm factor helps remember old classes. So UER
learns the CURRENT (incoming) examples through the angle alone, with cosine logits
cos(w_c, f) / T, and REPLAYED examples through the full dot-product logits (norm and angle):

    loss = CE(cos(W, f(x_in)) / T, y_in) + CE(W f(x_buf) + b, y_buf)

Prediction uses the full dot-product logits. The buffer is ER's reservoir, filled with the incoming
examples after each step.

Departures: the authors published no code (their repository holds a README only); the
temperature default T = 0.09 is the cosine scale of their PCR code (same authors and codebase).
The replayed rows keep the head's bias, which the single-head models here have.
"""
from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from .er import ER
from .replay import ReplaySettings


class UERConfig(ReplaySettings):
    temperature: float = Field(0.09, gt=0, description="T: the incoming examples' logits are cos(w_c, f) / T")


@STRATEGIES.register("uer", summary="unbias experience replay: incoming examples learn through cosine logits, "
                     "replayed ones through full dot-product logits (Lin et al. 2023)")
class UER(ER):
    """Unbias Experience Replay (Lin et al., 2023); see the module docstring."""

    name = "uer"
    Config = UERConfig

    def batch_loss(self, ctx, batch, output, values):
        n, targets = values["incoming"], batch["targets"]
        angle = ctx.model.cosine_logits(output.features[:n], self.config.temperature)
        loss = F.cross_entropy(angle, targets[:n])
        if len(targets) > n:
            loss = loss + F.cross_entropy(output.logits[n:], targets[n:])
        return loss


__all__ = ["UER"]
