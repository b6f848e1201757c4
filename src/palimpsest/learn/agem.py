"""A-GEM from "Efficient Lifelong Learning with A-GEM" (Chaudhry et al., 2019).

An episodic memory holds examples of finished experiences. Before every optimizer step the
reference gradient g_ref of the loss on a random memory sample is computed; when the incoming
gradient g points against it (g . g_ref < 0) it is projected to
    g <- g - (g . g_ref) / (g_ref . g_ref) * g_ref,
so that, to first order, the step does not increase the memory loss. The projection runs over all
parameters as one vector (the paper's flattened gradient); g_ref comes from `torch.autograd.grad`,
so the incoming gradient in `.grad` is never overwritten and needs no save/restore.

Memory: as in the paper, examples join at the end of each experience, the memory being only read
while training. With the reservoir policy every experience gets an equal share,
buffer_size // (training steps of the stream), drawn at random (the authors keep mem_size examples
per class of each task; Avalanche keeps patterns_per_exp of each experience; Mammoth kept
buffer_size // n_tasks of each task in its 2020 code, and since 2022 keeps ONE training mini-batch,
batch_size examples, of each task). With the class_balanced policy the whole experience is offered
in random order and the buffer stays full with an equal share per class seen.

Where we depart from Avalanche's AGEMPlugin: its reference sample is stratified, sample_size // k
examples from each of the k experience memories; ours is drawn uniformly from the whole memory
(with equal shares per experience the two agree in expectation; measured, it changes nothing). In
class-incremental streams the head matters more than these details: Avalanche's examples use a
plain fixed head (SimpleMLP), in which classes not yet seen are trained as negatives from the
start; with our default masked head (= Avalanche's IncrementalClassifier(masking=True)) A-GEM
reaches ~42 % on split Fashion-MNIST, with `mask_unseen: false` ~59 %, while naive and ER do not
move (docs/PARITY.md, "A-GEM and the head").
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from ..core.registry import STRATEGIES
from .components import as_batch
from .replay import ReplaySettings, ReplayStrategy


class AGEMConfig(ReplaySettings):
    replay_batch_size: int | None = Field(
        256, ge=0, description="memory examples behind each reference gradient (the paper uses 256); "
        "None = as many as the incoming batch; 0 turns the projection off")


@STRATEGIES.register("agem", summary="averaged gradient episodic memory: project gradients that would raise "
                     "the loss on memory examples (Chaudhry et al. 2019)")
class AGEM(ReplayStrategy):
    """Averaged Gradient Episodic Memory (Chaudhry et al., 2019)."""

    name = "agem"
    Config = AGEMConfig

    def __init__(self, **settings):
        super().__init__(**settings)
        self.projected_steps = torch.zeros((), dtype=torch.long)

    def setup(self, ctx):
        super().setup(ctx)
        self.projected_steps = torch.zeros((), dtype=torch.long, device=ctx.device)

    def before_step(self, ctx, batch, values):
        memory = self.buffer.sample(self.replay_size(values))
        if not memory:
            return
        params = [p for group in ctx.optimizer.param_groups for p in group["params"]]
        reference = F.cross_entropy(ctx.forward(as_batch(memory)), memory["targets"])
        ref_grads = torch.autograd.grad(reference, params, allow_unused=True)
        pairs = [(p, r) for p, r in zip(params, ref_grads) if r is not None]
        dot = sum((p.grad * r).sum() for p, r in pairs if p.grad is not None)
        if not isinstance(dot, torch.Tensor):  # no parameter has both gradients
            return
        ref_norm = sum((r * r).sum() for _, r in pairs)
        # coefficient 0 (no change, bit for bit) unless the gradients conflict; no host sync
        coef = dot.clamp(max=0) / ref_norm.clamp(min=torch.finfo(ref_norm.dtype).tiny)
        for p, r in pairs:
            if p.grad is None:
                p.grad = -coef * r
            else:
                p.grad.sub_(coef * r)
        self.projected_steps = self.projected_steps.to(dot.device) + (dot < 0)

    def after_experience(self, ctx, exp):
        order = torch.randperm(len(exp), generator=self.buffer.generator)
        if self.config.buffer_policy == "reservoir":
            order = order[:max(1, self.config.buffer_size // len(ctx.stream.train))]
        self.buffer.add(exp.batch(order, ctx.device))

    def extra_state(self):
        return {"projected_steps": self.projected_steps}

    def load_extra_state(self, state):
        if "projected_steps" in state:
            self.projected_steps = state["projected_steps"].clone()
