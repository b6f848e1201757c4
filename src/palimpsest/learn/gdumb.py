"""GDumb (Prabhu et al., "GDumb: A Simple Approach that Questions Our Progress in Continual
Learning", ECCV 2020).

  sampler  the stream goes through a greedy class-balancing memory of `memory_size` examples: an
           example enters while there is room, otherwise it replaces a random example of the
           largest class unless its own class is already the largest (the buffer's
           `class_balanced` policy)
  learner  at every step the model is reinitialised (as `from_scratch` does) and trained on the
           memory alone, for `epochs` passes; nothing else of the experience is trained on

Task identity comes from the memory: each stored example keeps its task id, which routes it to
its task's head in a multi-head model; at evaluation the task-IL view masks the logits to the
task's classes, as the paper does.

Domain-incremental streams: every class comes back in each domain, so once the memory is full and
balanced the paper's sampler never admits an example of a later domain (GDumb then learns the
first domain only). `balance="task_class"` balances (task, class) pairs instead, which keeps
every domain's share; it is identical to class balancing whenever each class belongs to one task.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..core.config import Settings
from ..core.registry import STRATEGIES
from .components import ReplayMemory
from .from_scratch import reinitialise
from .icarl import memory_experience
from .strategy import Strategy, legacy_prefixed


@STRATEGIES.register("gdumb", summary="GDumb: greedy class-balanced memory, model retrained from scratch on it")
class GDumb(Strategy):
    """GDumb (Prabhu et al. 2020): keep a class-balanced memory of the stream and, at each step,
    train a freshly initialised model on that memory only."""

    name = "gdumb"

    class Config(Settings):
        memory_size: int = Field(500, ge=1, description="number of examples kept (the paper's k)")
        epochs: int | None = Field(None, ge=1, description="passes over the memory at each step (the paper trains "
                                   "many; 30 on split Fashion-MNIST); None: the training settings' epochs")
        batch_size: int | None = Field(None, ge=1, description="mini-batch size on the memory (the paper's 16); "
                                       "None: the training settings' batch size")
        balance: Literal["class", "task_class"] = Field("class", description="what the greedy sampler balances: "
                                                        "classes (the paper) or (task, class) pairs (keeps every "
                                                        "domain of a domain-incremental stream)")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.memory = ReplayMemory(self.config.memory_size, "class_balanced")

    def before_experience(self, ctx, exp):
        task_ids = exp.task_ids
        # the buffer balances what it stores as targets: (task, class) keys are decoded on the way out
        keys = exp.targets + task_ids * ctx.stream.n_classes if self.config.balance == "task_class" else exp.targets
        self.memory.buffer.add(exp.inputs, keys, task_ids)
        reinitialise(ctx, exp.classes)   # fresh weights, optimizer state and class mask
        ctx.model.observe_classes(sorted({k % ctx.stream.n_classes for k in self.memory.buffer.class_counts()}))

    def training_data(self, ctx, exp):
        memory = dict(self.memory.all())
        memory["targets"] = memory["targets"] % ctx.stream.n_classes
        return memory_experience(memory, exp.task_id)

    def passes(self, ctx) -> tuple[int, int]:
        """(epochs, batch size) on the memory. The memory is not a stream, so an online scenario's
        single pass in small mini-batches does not apply to it (the paper trains GDumb offline)."""
        return (self.config.epochs or ctx.training.epochs, self.config.batch_size or ctx.training.batch_size)

    @classmethod
    def upgrade_state(cls, state, version):
        return {"memory": legacy_prefixed(state, "memory")} if version == 1 else state
