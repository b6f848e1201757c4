"""Synthetic recall tasks, generated on the fly: every call to `sample` draws fresh sequences from the
generator it is given (a fixed training set gets memorised instead of recalled), so training draws a new
batch at every step from a seeded generator and evaluation uses a fixed, separately seeded set.

A batch is a mapping {input_ids (B, T) int64, labels (B, T) int64}; labels are -100 except where the
model must answer, and the answer at position t is predicted from the output at position t (no shift).

    mqar            multi-query associative recall in the Zoology setting (Arora, Eyuboglu et al., "Zoology:
                    Measuring and Improving Recall in Efficient Language Models", 2023): key-value pairs at the
                    start (keys from the first half of the vocabulary, values from the second), then every key
                    queried once at power-law distributed gaps; other positions hold random tokens
    forgetting_mqar the same with `n_updates` keys re-assigned a new value later in the context, in each of
                    `n_rounds` rounds: the answer is the latest value (Zoology's forgetting_mqar; rounds ours)
    passkey         a passkey hidden after a marker in one of `n_chunks` chunks of `chunk_len` random tokens;
                    the last token asks for it
    selective_copy  `n_tokens` data tokens scattered among blanks, to be repeated in order after a separator
                    (Gu and Dao, "Mamba", 2023)

Tasks are registered by name in `RECALL_TASKS`: `recall_task("mqar", seq_len=64, n_pairs=4)`.
"""
from __future__ import annotations

import torch
from pydantic import Field, model_validator

from ..core.config import Settings, validate
from ..core.errors import ConfigError
from ..core.registry import Registry
from .batch import Batch

IGNORE = -100
RECALL_TASKS = Registry("recall task")


class RecallTask:
    """Base: `sample(batch_size, generator) -> Batch`; `vocab_size`, `seq_len`, `chance`."""

    name = "task"
    Config: type[Settings] = Settings

    def __init__(self, **settings) -> None:
        self.config = validate(self.Config, settings, f"recall task {self.name!r}")

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        raise NotImplementedError

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess among the possible answers."""
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"task": self.name, **self.config.model_dump(), "seq_len": self.seq_len, "chance": self.chance}


def _distinct(batch: int, low: int, high: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct integers from [low, high) per row."""
    return torch.rand(batch, high - low, generator=gen).argsort(1)[:, :n] + low


class MQARConfig(Settings):
    vocab_size: int = Field(256, ge=8)
    seq_len: int = Field(64, ge=4)
    n_pairs: int = Field(4, ge=1)
    power_a: float = Field(0.01, gt=0, le=1, description="power law of the gaps between queries (1 = uniform)")
    random_fill: bool = Field(True, description="positions that are not pairs or queries hold random tokens "
                              "(Zoology's random_non_queries); False: token 0")

    @model_validator(mode="after")
    def _fits(self):
        if self.seq_len % 2:
            raise ValueError(f"seq_len: expected an even length (pairs and queries take two positions), got {self.seq_len}")
        if 4 * self.n_pairs > self.seq_len:
            raise ValueError(f"n_pairs: {self.n_pairs} pairs and their queries need {4 * self.n_pairs} positions, "
                             f"more than seq_len={self.seq_len}; lower n_pairs or raise seq_len")
        if self.n_pairs >= self.vocab_size // 2 - 1:
            raise ValueError(f"n_pairs: expected fewer than {self.vocab_size // 2 - 1} distinct keys for vocab_size "
                             f"{self.vocab_size}, got {self.n_pairs}")
        return self


class ForgettingMQARConfig(MQARConfig):
    n_updates: int = Field(2, ge=0, description="keys re-assigned a new value after the first pairs (per round)")
    n_rounds: int = Field(1, ge=1, description="rounds of re-assignment; each round re-assigns n_updates keys "
                          "drawn afresh, so a key can hold many stale values before its latest")

    @model_validator(mode="after")
    def _updates_fit(self):
        if self.n_updates > self.n_pairs:
            raise ValueError(f"n_updates: at most n_pairs ({self.n_pairs}) keys can be re-assigned, got {self.n_updates}")
        need = 2 * (2 * self.n_pairs + self.n_rounds * self.n_updates)
        if need > self.seq_len:
            raise ValueError(f"seq_len: {self.n_pairs} pairs, {self.n_rounds} x {self.n_updates} updates and their "
                             f"queries need {need} positions, got {self.seq_len}")
        return self


@RECALL_TASKS.register("mqar", summary="multi-query associative recall (Zoology)")
class MQAR(RecallTask):
    """Multi-query associative recall, Zoology's generator rewritten in torch (see the module docstring)."""

    name = "mqar"
    Config = MQARConfig

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def chance(self) -> float:
        return 1.0 / (self.config.vocab_size - self.config.vocab_size // 2)

    def _context(self, keys, values, gen):
        b, n = keys.shape
        kv = torch.empty(b, 2 * n, dtype=torch.long)
        kv[:, 0::2], kv[:, 1::2] = keys, values
        return kv

    def _build(self, kv: torch.Tensor, keys: torch.Tensor, answers: torch.Tensor, gen: torch.Generator) -> Batch:
        c = self.config
        b, n = keys.shape
        context = kv.shape[1]
        space = (c.seq_len - context) // 2
        p = c.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (c.power_a - 1)
        gaps = torch.multinomial((p / p.sum()).expand(b, space).float(), n, replacement=False, generator=gen)
        inputs = torch.zeros(b, c.seq_len, dtype=torch.long)
        labels = torch.full((b, c.seq_len), IGNORE, dtype=torch.long)
        inputs[:, :context] = kv
        positions = context + 2 * gaps
        inputs.scatter_(1, positions, keys)
        labels.scatter_(1, positions, answers)
        if c.random_fill:
            filled = torch.zeros(b, c.seq_len, dtype=torch.bool)
            filled[:, :context] = True
            filled.scatter_(1, positions, True)
            noise = torch.randint(c.vocab_size, (b, c.seq_len), generator=gen)
            inputs = torch.where(filled, inputs, noise)
        return Batch(input_ids=inputs, labels=labels)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        c = self.config
        half = c.vocab_size // 2
        keys = _distinct(batch_size, 1, half, c.n_pairs, generator)
        values = _distinct(batch_size, half, c.vocab_size, c.n_pairs, generator)
        return self._build(self._context(keys, values, generator), keys, values, generator)


@RECALL_TASKS.register("forgetting_mqar", summary="MQAR with keys re-assigned later: answer the latest value")
class ForgettingMQAR(MQAR):
    """Forgetting-MQAR (Zoology's forgetting_mqar): `n_updates` of the keys appear again with a new value
    after all the pairs, in each of `n_rounds` rounds (keys drawn afresh each round, the new value always
    differs from the key's current one); every key is queried and the answer is its latest value."""

    name = "forgetting_mqar"
    Config = ForgettingMQARConfig

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        c = self.config
        half = c.vocab_size // 2
        keys = _distinct(batch_size, 1, half, c.n_pairs, generator)
        values = _distinct(batch_size, half, c.vocab_size, c.n_pairs, generator)
        parts, final = [self._context(keys, values, generator)], values
        for _ in range(c.n_rounds):
            which = torch.rand(batch_size, c.n_pairs, generator=generator).argsort(1)[:, :c.n_updates]
            old = final.gather(1, which)
            # a new value that differs from the current one: shift by 1..(values-1) within the value range
            shift = torch.randint(1, c.vocab_size - half, old.shape, generator=generator)
            new = (old - half + shift) % (c.vocab_size - half) + half
            final = final.scatter(1, which, new)
            parts.append(self._context(keys.gather(1, which), new, generator))
        return self._build(torch.cat(parts, 1), keys, final, generator)


class PasskeyConfig(Settings):
    vocab_size: int = Field(256, ge=16)
    n_chunks: int = Field(64, ge=2)
    chunk_len: int = Field(16, ge=2)
    n_values: int = Field(32, ge=2, description="passkeys are drawn from this many tokens (chance = 1/n_values)")

    @model_validator(mode="after")
    def _fits(self):
        if 3 + self.n_values >= self.vocab_size:
            raise ValueError(f"n_values: {self.n_values} passkeys and 3 special tokens leave no filler tokens in "
                             f"vocab_size {self.vocab_size}; lower n_values or raise vocab_size")
        return self


@RECALL_TASKS.register("passkey", summary="a passkey hidden in one of many chunks, asked for at the end")
class Passkey(RecallTask):
    """Passkey retrieval over many chunks: `n_chunks` x `chunk_len` random filler tokens; in one chunk
    other than the last, a marker (token 1) is followed by the passkey; the last token (2) asks for it.
    Passkeys are tokens 3 .. 3 + n_values − 1; filler tokens are the rest of the vocabulary. A model that
    sees only the last chunk is at chance (1 / n_values)."""

    name = "passkey"
    Config = PasskeyConfig
    MARKER, QUERY, FIRST_VALUE = 1, 2, 3

    @property
    def seq_len(self) -> int:
        return self.config.n_chunks * self.config.chunk_len

    @property
    def chance(self) -> float:
        return 1.0 / self.config.n_values

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        c = self.config
        t = self.seq_len
        first_filler = self.FIRST_VALUE + c.n_values
        inputs = torch.randint(first_filler, c.vocab_size, (batch_size, t), generator=generator)
        # the marker may sit anywhere in the first n_chunks − 1 chunks, its passkey right after it
        where = torch.randint(0, (c.n_chunks - 1) * c.chunk_len - 1, (batch_size, 1), generator=generator)
        keys = torch.randint(0, c.n_values, (batch_size, 1), generator=generator) + self.FIRST_VALUE
        inputs.scatter_(1, where, torch.full_like(where, self.MARKER))
        inputs.scatter_(1, where + 1, keys)
        inputs[:, -1] = self.QUERY
        labels = torch.full((batch_size, t), IGNORE, dtype=torch.long)
        labels[:, -1] = keys[:, 0]
        return Batch(input_ids=inputs, labels=labels)


class SelectiveCopyConfig(Settings):
    vocab_size: int = Field(16, ge=4)
    region: int = Field(64, ge=2, description="length of the region the data tokens hide in")
    n_tokens: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _fits(self):
        if self.n_tokens > self.region:
            raise ValueError(f"n_tokens: {self.n_tokens} data tokens do not fit a region of {self.region}")
        return self


@RECALL_TASKS.register("selective_copy", summary="repeat the data tokens scattered among blanks, in order")
class SelectiveCopy(RecallTask):
    """Selective copying (Mamba, Gu and Dao 2023): `n_tokens` data tokens (3 .. vocab_size − 1) at random
    positions of a region of blanks (0), then a separator (1), then `n_tokens` prompts (2) at which the
    model answers the data tokens in order."""

    name = "selective_copy"
    Config = SelectiveCopyConfig
    BLANK, SEPARATOR, PROMPT = 0, 1, 2

    @property
    def seq_len(self) -> int:
        return self.config.region + 1 + self.config.n_tokens

    @property
    def chance(self) -> float:
        return 1.0 / (self.config.vocab_size - 3)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        c = self.config
        data = torch.randint(3, c.vocab_size, (batch_size, c.n_tokens), generator=generator)
        where = _distinct(batch_size, 0, c.region, c.n_tokens, generator).sort(1).values
        region = torch.zeros(batch_size, c.region, dtype=torch.long).scatter(1, where, data)
        inputs = torch.cat([region, torch.full((batch_size, 1), self.SEPARATOR),
                            torch.full((batch_size, c.n_tokens), self.PROMPT)], 1)
        labels = torch.full_like(inputs, IGNORE)
        labels[:, -c.n_tokens:] = data
        return Batch(input_ids=inputs, labels=labels)


def recall_task(name: str, **settings) -> RecallTask:
    """A registered recall task by name with its settings (bad names and settings raise clear errors)."""
    return RECALL_TASKS.create(name, **settings)


def recall_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, answered) over the positions with a label."""
    mask = labels != IGNORE
    if not mask.any():
        raise ConfigError("a recall batch has no labelled position", expected="labels other than -100",
                          got="all -100", fix="sample batches with the task's `sample`")
    return int((logits.argmax(-1)[mask] == labels[mask]).sum()), int(mask.sum())


__all__ = ["ForgettingMQAR", "IGNORE", "MQAR", "Passkey", "RECALL_TASKS", "RecallTask", "SelectiveCopy", "recall_accuracy",
           "recall_task"]
