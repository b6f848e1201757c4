"""FPF and k-FPF, from "Does Continual Learning Equally Forget All Parameters?" (Zhao, Zhou, Long,
Jiang and Zhang, ICML 2023).

The paper measures how much each module of a network moves while a continual learner trains on a
new task and finds that only a few are task-specific and drift a lot: in CNNs and MLPs the last
layers, the classifier and the BatchNorm layers. It attributes forgetting mainly to them, and
repairs it by fine-tuning only those modules on a small buffer of earlier examples:

FPF (Forgetting Prioritized Finetuning): at the end of training, on top of any continual-learning
    method, `steps` iterations of plain SGD on mini-batches drawn from a reservoir buffer, updating
    only the forgetting-prone modules. Here a plug-in (`{name: er, plus: [fpf]}`, or `fpf` alone
    on plain fine-tuning) that fine-tunes at the end of every experience, so every evaluation sees
    a repaired model.
k-FPF: no replay at all during training (plain SGD on the incoming data, which is also offered to
    the buffer); instead FPF runs k times, at evenly spaced optimizer steps over the whole stream
    regardless of task boundaries (the last one at the very last step). Every-step replay costs one
    extra forward and backward of a replayed batch at every step; k-FPF costs k short fine-tunings of
    a few layers.

Which modules: by default the classifier (every parameter under `head`), the last `layers`
parameterised layers before it and every normalisation layer (BatchNorm, GroupNorm, LayerNorm):
the paper's finding for CNNs and MLPs. `modules` names them explicitly instead (parameter-name
prefixes). The paper's measurement is kept: after every experience the relative drift
||theta_end - theta_start|| / ||theta_start|| of each module during that experience is recorded
(`drift`, before the fine-tuning), so a run shows which modules moved.

The fine-tuning runs through the one loop (`train.loop.run_loop`) with its own plain SGD optimizer
over the chosen parameters; the other parameters stop requiring gradients meanwhile, so the backward
pass stops at the lowest chosen layer (that is where the saving comes from).

Departures: the authors' code could not be found, so the iteration count, batch size and learning
rate of a fine-tuning are settings with our defaults (100 iterations of 32, the training learning
rate); FPF's buffer is its own (composed with ER, the run holds two buffers of `buffer_size`);
k-FPF-KD (logit distillation during fine-tuning) and the paper's automatic module selection by its
sensitivity score are not implemented: the modules are chosen by the paper's finding, and the drift
record shows whether it holds on our models.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import STRATEGIES
from ..train.batching import n_batches
from ..train.loop import LossHooks, run_loop
from .components import ReplayMemory, as_batch
from .strategy import Strategy

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def forgetting_prone(model: nn.Module, layers: int = 1, modules: list[str] | None = None) -> list[str]:
    """Names of the parameters FPF fine-tunes: those under the `modules` prefixes when given, else the
    classifier (`head`), the last `layers` parameterised layers before it and every normalisation
    layer."""
    names = [n for n, _ in model.named_parameters()]
    if modules:
        chosen = [n for n in names if any(n == m or n.startswith(m + ".") for m in modules)]
        if not chosen:
            raise ConfigError("fpf modules match no parameter of the model", expected="parameter-name prefixes, e.g. "
                              "['head', 'backbone.3']", got=modules, fix=f"pick among {sorted({n.rsplit('.', 1)[0] for n in names})}")
        return chosen
    prefixes: list[str] = []
    layered: list[str] = []
    for name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own or name == "head" or name.startswith("head."):
            continue
        (prefixes if isinstance(module, NORMS) else layered).append(name)
    prefixes += layered[-layers:] if layers else []
    prefixes.append("head")
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]


def module_drift(start: dict[str, torch.Tensor], model: nn.Module) -> dict[str, float]:
    """||theta - theta_start|| / ||theta_start|| of each module (parameters grouped by the name of the
    module that owns them), the paper's measure of how task-specific a module is."""
    diff: dict[str, float] = {}
    base: dict[str, float] = {}
    for name, p in model.named_parameters():
        if name in start:
            module = name.rsplit(".", 1)[0]
            diff[module] = diff.get(module, 0.0) + float((p.detach() - start[name]).square().sum())
            base[module] = base.get(module, 0.0) + float(start[name].square().sum())
    return {m: (diff[m] / base[m]) ** 0.5 if base[m] > 0 else 0.0 for m in diff}


class FPFSettings(Settings):
    buffer_size: int = Field(500, ge=1, description="reservoir buffer the fine-tuning draws from, in examples")
    steps: int = Field(100, ge=0, description="iterations of each fine-tuning (plain SGD on buffer mini-batches)")
    batch_size: int = Field(32, ge=1, description="buffer examples per fine-tuning iteration")
    lr: float | None = Field(None, gt=0, description="learning rate of the fine-tuning; None = the training lr")
    layers: int = Field(1, ge=0, description="parameterised layers before the classifier that are fine-tuned (with "
                        "the classifier and every normalisation layer)")
    modules: list[str] | None = Field(None, description="parameter-name prefixes to fine-tune instead of the default "
                                      "choice (e.g. ['head', 'backbone.3'])")


class ForgettingPrioritized(Strategy):
    """What FPF and k-FPF share: the buffer, the choice of modules, the fine-tuning, the drift record."""

    Config = FPFSettings
    accumulation_safe = False   # the buffer takes each mini-batch's incoming examples

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.memory = ReplayMemory(self.config.buffer_size)
        self.drift: list[dict[str, float]] = []    # a record per experience (the method does not read it)
        self.finetunes = 0
        self._start: dict[str, torch.Tensor] = {}

    def setup(self, ctx):
        super().setup(ctx)
        self.chosen = set(forgetting_prone(ctx.model, self.config.layers, self.config.modules))

    def before_experience(self, ctx, exp):
        self._start = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}

    def after_step(self, ctx, batch, values):
        self.memory.add(batch.head(values["incoming"]))

    def record_drift(self, ctx) -> None:
        if self._start:
            self.drift.append({m: round(v, 6) for m, v in module_drift(self._start, ctx.model).items()})

    def finetune(self, ctx) -> None:
        """`steps` iterations of plain SGD on buffer mini-batches over the chosen parameters only."""
        if self.config.steps == 0 or len(self.memory) == 0:
            return
        trainable = {id(p) for group in ctx.optimizer.param_groups for p in group["params"]}
        params = [p for n, p in ctx.model.named_parameters() if n in self.chosen and p.requires_grad and id(p) in trainable]
        if not params:
            return
        keep = {id(p) for p in params}
        paused = [p for p in ctx.model.parameters() if p.requires_grad and id(p) not in keep]
        lr = self.config.lr or ctx.training.lr
        training = ctx.training.model_copy(update={"optimizer": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0,
                                                   "batch_size": self.config.batch_size, "epochs": 1, "accumulation": 1,
                                                   "scheduler": "constant", "warmup_steps": 0})
        optimizer = torch.optim.SGD(params, lr=lr)
        memory, bs = self.memory, self.config.batch_size
        batches = (as_batch(memory.sample(bs)) for _ in range(self.config.steps))
        for p in paused:
            p.requires_grad_(False)
        try:
            run_loop(LossHooks(lambda b, v: ctx.task_loss(b, ctx.output(b))), optimizer, batches, training, ctx.device,
                     self.config.steps)
        finally:
            for p in paused:
                p.requires_grad_(True)
                p.grad = None
        self.finetunes += 1

    def extra_state(self):
        return {"drift": list(self.drift), "finetunes": self.finetunes}

    def load_extra_state(self, state):
        self.drift = [dict(d) for d in state.get("drift", [])]
        self.finetunes = int(state.get("finetunes", 0))


@STRATEGIES.register("fpf", summary="forgetting prioritized finetuning: after each experience, fine-tune only the "
                     "classifier, last layer and norms on a small buffer; a plug-in (Zhao et al. 2023)")
class FPF(ForgettingPrioritized):
    """FPF (Zhao et al., ICML 2023) as a plug-in for any strategy; see the module docstring."""

    name = "fpf"

    def after_experience(self, ctx, exp):
        self.record_drift(ctx)
        self.finetune(ctx)


class KFPFSettings(FPFSettings):
    k: int = Field(10, ge=1, description="fine-tunings over the whole stream, at evenly spaced optimizer steps (the "
                   "last at the last step)")


@STRATEGIES.register("kfpf", summary="k-FPF: plain SGD without replay, plus k fine-tunings of the forgetting-prone "
                     "modules on a small buffer spread over the stream (Zhao et al. 2023)")
class KFPF(ForgettingPrioritized):
    """k-FPF (Zhao et al., ICML 2023): no every-step replay, k periodic FPFs; see the module docstring."""

    name = "kfpf"
    Config = KFPFSettings

    def setup(self, ctx):
        super().setup(ctx)
        epochs, batch_size = self.passes(ctx)
        total = sum(n_batches(len(ctx.stream.train[i]), batch_size, epochs) for ids in self.schedule(ctx.stream)
                    for i in ids)
        k = min(self.config.k, max(total, 1))
        self.triggers = {round(j * total / k) for j in range(1, k + 1)}
        self.steps_done = 0

    def after_step(self, ctx, batch, values):
        super().after_step(ctx, batch, values)
        self.steps_done += 1
        if self.steps_done in self.triggers:
            self.finetune(ctx)

    def after_experience(self, ctx, exp):
        self.record_drift(ctx)

    def extra_state(self):
        return {**super().extra_state(), "steps_done": self.steps_done}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.steps_done = int(state.get("steps_done", 0))


__all__ = ["FPF", "KFPF", "ForgettingPrioritized", "forgetting_prone", "module_drift"]
