"""Synaptic Intelligence: "Continual Learning Through Synaptic Intelligence", Zenke, Poole and
Ganguli (2017).

At every optimizer step each parameter's share of the drop of the TASK loss is accumulated along
the path it actually travelled: omega_i += -g_i * delta_theta_i, where delta_theta is the change
the optimizer made (read after the step, so momentum, Adam and weight decay are included) and g
is the gradient of the cross-entropy alone, read before the penalty's gradient is added to it.
At the end of an experience Omega_i += max(0, omega_i / ((theta_i - theta_i^start)^2 + xi)), the
anchor moves to the current weights and omega restarts from 0. The loss is
cross-entropy + c sum_i Omega_i (theta_i - theta*_i)^2, whose exact gradient is added before each
optimizer step (the reported training loss is the cross-entropy alone).

The clamp at 0 is ours: a parameter whose path integral came out negative (the optimizer moved it
uphill on the task loss, e.g. through momentum) would otherwise get a negative importance and a
penalty unbounded below.

The weights before a step and the task gradient are COPIED into buffers the strategy owns, never
referenced: a snapshot that aliases the live parameters makes every delta 0 and every importance
0, the bug that makes Avalanche's SI (v0.3.0 to 0.6.0) train exactly like naive fine-tuning on a
CPU device, where `.cpu().flatten()` returns a view of the live weights. On CUDA its SI runs, with
every importance capped above at 0.001 (`clip_to`), so a large si_lambda cannot make it strong.

Conversions (docs/PARITY.md): si_c = Avalanche's si_lambda / 2 (its penalty has a 1/2); si_c =
Mammoth's c. Mammoth's SI also clips gradients by value at 1 and does not clamp Omega at 0.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .components import NamedTensors
from .regularizer import QuadraticRegulariser
from .strategy import legacy_prefixed


class SIConfig(Settings):
    si_c: float = Field(1.0, ge=0, description="c: the penalty is c sum Omega (theta - theta*)^2")
    xi: float = Field(0.1, gt=0, description="damping xi in Omega += omega / ((theta_end - theta_start)^2 + xi)")


@STRATEGIES.register("si", summary="Synaptic Intelligence: importances from each weight's path integral")
class SynapticIntelligence(QuadraticRegulariser):
    """Cross-entropy + c sum Omega (theta - theta*)^2, Omega from the per-step path integral of the
    task loss.

    Zenke et al., "Continual Learning Through Synaptic Intelligence" (2017).
    """

    name = "si"
    Config = SIConfig
    weight_setting = "si_c"
    accumulation_safe = False   # the path integral needs every optimizer step's own gradient

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.omega = NamedTensors()   # path integral over the current experience so far
        self.start = NamedTensors()   # weights when the current experience began
        # Workspace refilled by before_step (not state: a checkpoint never falls inside a step).
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def before_experience(self, ctx, exp):
        with torch.no_grad():
            for name, p in ctx.model.named_parameters():
                if not p.requires_grad:
                    continue
                # Present already after an earlier experience or a resumed checkpoint (then moved to p's device).
                self.start[name] = self.start[name].to(p) if name in self.start else p.detach().clone()
                self.omega[name] = self.omega[name].to(p) if name in self.omega else torch.zeros_like(p)
                self._prev[name] = torch.empty_like(p)
                self._grad[name] = torch.empty_like(p)

    @torch.no_grad()
    def before_step(self, ctx, batch, values):
        stepped = [(n, p) for n, p in ctx.model.named_parameters() if p.grad is not None and n in self._prev]
        values["si_stepped"] = stepped
        if stepped:
            names = [n for n, _ in stepped]
            torch._foreach_copy_([self._grad[n] for n in names], [p.grad for _, p in stepped])
            torch._foreach_copy_([self._prev[n] for n in names], [p for _, p in stepped])
        self.penalty.add_gradient(ctx.model, self.config.si_c)

    @torch.no_grad()
    def after_step(self, ctx, batch, values):
        stepped = values.get("si_stepped")
        if not stepped:
            return
        names = [n for n, _ in stepped]
        moved = torch._foreach_sub([p for _, p in stepped], [self._prev[n] for n in names])
        torch._foreach_addcmul_([self.omega[n] for n in names], [self._grad[n] for n in names], moved, value=-1.0)

    def after_experience(self, ctx, exp):
        with torch.no_grad():
            new = {}
            for name, p in ctx.model.named_parameters():
                if name in self.omega:
                    travelled = (p - self.start[name]).square_().add_(self.config.xi)
                    new[name] = (self.omega[name] / travelled).clamp_(min=0)
            self.penalty.consolidate(ctx.model, new)
            for name, p in ctx.model.named_parameters():
                if name in self.omega:
                    self.start[name] = p.detach().clone()
                    self.omega[name].zero_()
        self.check_stability(ctx)

    @classmethod
    def upgrade_state(cls, state, version):
        if version == 1:
            return {**super().upgrade_state(state, version), "omega": legacy_prefixed(state, "omega"),
                    "start": legacy_prefixed(state, "start")}
        return state
