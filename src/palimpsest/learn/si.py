"""Synaptic Intelligence: "Continual Learning Through Synaptic Intelligence", Zenke, Poole and
Ganguli (2017).

At every optimizer step, each parameter's contribution to the drop of the TASK loss is
accumulated along the path it actually travelled: omega_i += -g_i * delta_theta_i, where
delta_theta is the change the optimizer made (read after the step, so momentum, Adam and weight
decay are included) and g is the gradient of the cross-entropy alone: the penalty's own gradient,
2 c Omega (theta - theta*), is removed analytically rather than by a second backward pass.
At the end of an experience Omega_i += max(0, omega_i / ((theta_i - theta_i^start)^2 + xi)) and the
anchor moves to the current weights; the loss is cross-entropy + c sum_i Omega_i (theta_i - theta*_i)^2.

The clamp at 0 is ours: a parameter whose path integral came out negative (the optimizer moved
it uphill on the task loss, e.g. through momentum) would otherwise get a negative importance and
a penalty unbounded below.

The weights before each step are copied into buffers the strategy owns, never referenced: a
snapshot that aliases the live parameters makes every delta 0 and every importance 0, the bug
that made Avalanche 0.6.0's SI equal to naive fine-tuning.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .regularizer import QuadraticPenalty, named_tensors
from .strategy import Strategy


class SIConfig(Settings):
    si_c: float = Field(1.0, ge=0, description="c: weight of c sum Omega (theta - theta*)^2")
    xi: float = Field(0.1, gt=0, description="damping xi in Omega += omega / ((theta - theta_start)^2 + xi)")


@STRATEGIES.register("si", summary="Synaptic Intelligence: importances from each weight's path integral")
class SynapticIntelligence(Strategy):
    """Cross-entropy + c sum Omega (theta - theta*)^2, Omega from the per-step path integral of the
    task loss.

    Zenke et al., "Continual Learning Through Synaptic Intelligence" (2017).
    """

    name = "si"
    Config = SIConfig

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.penalty = QuadraticPenalty()
        self.omega: dict[str, torch.Tensor] = {}   # running path integral of the current experience
        self.start: dict[str, torch.Tensor] = {}   # weights when the current experience began
        # Per-step scratch, refilled in before_step (not state: a checkpoint never falls mid-step).
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}
        self._stepped: list[tuple[str, torch.Tensor]] = []

    def before_experience(self, ctx, exp):
        with torch.no_grad():
            for name, p in ctx.model.named_parameters():
                if not p.requires_grad:
                    continue
                # Kept across experiences only if resumed from a checkpoint (moved to the model's device).
                self.start[name] = self.start[name].to(p) if name in self.start else p.detach().clone()
                self.omega[name] = self.omega[name].to(p) if name in self.omega else torch.zeros_like(p)
                self._prev[name] = torch.empty_like(p)
                self._grad[name] = torch.empty_like(p)

    def batch_loss(self, ctx, batch, logits):
        loss = torch.nn.functional.cross_entropy(logits, batch.targets)
        if self.penalty:
            loss = loss + self.config.si_c * self.penalty(ctx.model)
        return loss

    @torch.no_grad()
    def before_step(self, ctx, batch):
        self._stepped = []
        for name, p in ctx.model.named_parameters():
            if p.grad is None or name not in self._prev:
                continue
            grad = self._grad[name]
            grad.copy_(p.grad)
            penalty_grad = self.penalty.gradient(name, p)
            if penalty_grad is not None:
                grad.sub_(penalty_grad, alpha=self.config.si_c)
            self._prev[name].copy_(p)
            self._stepped.append((name, p))

    @torch.no_grad()
    def after_step(self, ctx, batch):
        for name, p in self._stepped:
            self.omega[name].addcmul_(self._grad[name], p - self._prev[name], value=-1.0)

    @torch.no_grad()
    def after_experience(self, ctx, exp):
        new = {}
        for name, p in ctx.model.named_parameters():
            if name in self.omega:
                moved = (p - self.start[name]).square_()
                new[name] = (self.omega[name] / moved.add_(self.config.xi)).clamp_(min=0)
        self.penalty.consolidate(ctx.model, new)
        for name, p in ctx.model.named_parameters():
            if name in self.omega:
                self.start[name] = p.detach().clone()
                self.omega[name].zero_()

    def state_dict(self):
        state = self.penalty.state_dict()
        state.update({f"omega.{n}": v for n, v in self.omega.items()})
        state.update({f"start.{n}": v for n, v in self.start.items()})
        return state

    def load_state_dict(self, state):
        self.penalty.load_state_dict(state)
        self.omega = named_tensors(state, "omega")
        self.start = named_tensors(state, "start")
