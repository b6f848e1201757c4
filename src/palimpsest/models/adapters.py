"""Model adapters: how the training loop, strategies and evaluators talk to a model.

An adapter turns a batch (a mapping, see data/batch.py) into a `ModelOutput` (logits, and features
or a loss when the model gives them), says which parameters train, what the model's own supervised
loss is, and which capabilities it has. Class observation is such a capability: a classifier with a
growing single head observes classes; a language model does not.

    ClassifierAdapter   palimpsest Classifier (any backbone + single or per-task heads)
    CausalLMAdapter     a Hugging Face causal language model (input_ids, attention_mask, labels)
    TokenAdapter        a sequence model answering at the labelled positions (recall tasks)

A frozen encoder is a Classifier whose backbone's parameters do not require gradients (see
`freeze`); a strategy's `prepare` can wrap it (e.g. with LoRA adapters) before the optimizer exists.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError


@dataclass
class ModelOutput:
    logits: torch.Tensor
    features: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class ModelAdapter:
    """Base adapter: `forward(batch) -> ModelOutput`, `task_loss(batch, output)`, `trainable_parameters()`."""

    observes_classes: bool = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def forward(self, batch) -> ModelOutput:
        raise NotImplementedError

    def __call__(self, batch) -> ModelOutput:
        return self.forward(batch)

    def task_loss(self, batch, output: ModelOutput) -> torch.Tensor:
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def observe_classes(self, classes) -> None:
        if self.observes_classes:
            self.model.observe_classes(classes)


class ClassifierAdapter(ModelAdapter):
    """A palimpsest Classifier: logits (B, C) over the global class space and the backbone's features
    (what prototype and contrastive methods read); cross-entropy on targets. Task ids reach the
    model only when `use_task_ids` (task-incremental scenarios)."""

    def __init__(self, model: nn.Module, use_task_ids: bool = False) -> None:
        super().__init__(model)
        self.use_task_ids = use_task_ids
        self.observes_classes = hasattr(model, "observe_classes")

    def forward(self, batch) -> ModelOutput:
        task_ids = batch.get("task_ids") if self.use_task_ids else None
        model = self.model
        if hasattr(model, "features") and hasattr(model, "head_logits"):
            # the same operations as model(x) (backbone, then head), with the features kept
            features = model.features(batch["inputs"])
            return ModelOutput(model.head_logits(features, task_ids), features)
        return ModelOutput(model(batch["inputs"], task_ids))

    def task_loss(self, batch, output: ModelOutput) -> torch.Tensor:
        return F.cross_entropy(output.logits, batch["targets"])


class CausalLMAdapter(ModelAdapter):
    """A Hugging Face causal LM (`AutoModelForCausalLM`): logits (B, T, V); the loss is the
    next-token cross-entropy of `labels` (-100 ignored), computed here from the logits, which
    equals the model's own loss."""

    def forward(self, batch) -> ModelOutput:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
        return ModelOutput(out.logits)

    def task_loss(self, batch, output: ModelOutput) -> torch.Tensor:
        labels = batch.get("labels", batch.get("targets"))
        if labels is None:
            labels = batch["input_ids"]
        return shifted_cross_entropy(output.logits, labels)


class TokenAdapter(ModelAdapter):
    """A sequence model over token ids whose answer at position t is read from its output at t
    (models/sequence.py RecallLM on data/recall.py tasks): logits (B, T, V); the loss is the
    cross-entropy over positions whose label is not -100, plus the model's auxiliary loss (e.g.
    mixture-of-memories load balancing) when it has one."""

    def forward(self, batch) -> ModelOutput:
        """Logits at the labelled positions only, (N, V), when the batch has labels; else (B, T, V)."""
        labels = batch.get("labels")
        select = None if labels is None else labels != IGNORE_INDEX
        return ModelOutput(self.model(batch["input_ids"], select=select))

    def task_loss(self, batch, output: ModelOutput) -> torch.Tensor:
        labels = batch["labels"]
        if output.logits.dim() == 2:
            loss = F.cross_entropy(output.logits.float(), labels[labels != IGNORE_INDEX])
        else:
            loss = F.cross_entropy(output.logits.reshape(-1, output.logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        aux = getattr(self.model, "aux_loss", None)
        return loss + aux if isinstance(aux, torch.Tensor) else loss


IGNORE_INDEX = -100


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts labels[t + 1]; labels of -100 are ignored
    (Hugging Face's convention, so the two agree)."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def adapter_for(model: nn.Module, use_task_ids: bool = False) -> ModelAdapter:
    """The adapter of a model: a per-position token model, a Hugging Face causal LM or a classifier."""
    if getattr(model, "token_model", False):
        return TokenAdapter(model)
    if hasattr(model, "config") and hasattr(model, "generate") and not hasattr(model, "head_logits"):
        return CausalLMAdapter(model)
    return ClassifierAdapter(model, use_task_ids)


def freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Stop gradients for every parameter whose name starts with one of `prefixes` (e.g.
    ["backbone"] for a frozen encoder); return the frozen names. An unknown prefix is an error."""
    prefixes = list(prefixes)
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise ConfigError(f"cannot freeze {unknown}: no such parameters in the model",
                          expected=f"parameter name prefixes, e.g. one of {tops}", got=unknown,
                          fix="name modules of the model (model.named_parameters())")
    frozen = []
    for n, p in model.named_parameters():
        if any(n == p_ or n.startswith(p_ + ".") for p_ in prefixes):
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


__all__ = ["IGNORE_INDEX", "CausalLMAdapter", "TokenAdapter", "ClassifierAdapter", "ModelAdapter", "ModelOutput", "adapter_for", "freeze", "shifted_cross_entropy"]
