"""MEM1-style bounded working memory: a budget in items or tokens, consolidated at every turn.

"MEM1: Learning to Synergize Memory and Reasoning for Efficient Long-Horizon Agents", Zhou et al. (2025):
instead of appending every turn to a growing context, the agent rewrites one internal state at each
turn from the previous state and the new observation, keeping memory use constant.

Here the state is the scope's memories. After each add that leaves the scope over its budget
(`budget_items` memories and / or `budget_tokens` words; with `every_turn`, after every add) the store
calls the consolidate hook with the current memories and applies the new state it returns, in the same
transaction: dropped memories are removed (event CONSOLIDATE), rewritten ones keep their ids, new ones
are added. The default hook is rule-based (`RuleConsolidator`): for each `supersede_key` value keep the
newest memory, then drop the least useful (fewest recalls, then least recently recalled, then oldest;
`pinned: true` in metadata goes last) until the budget holds. `LMConsolidator(generate)` asks a language
model to rewrite the state (one memory per line); an answer that is empty or over budget is refused and
the rule-based hook is used instead, recorded in the history's details (small local models break
free-form extraction often enough that this must not lose the state).

Where we depart from the paper: MEM1 learns its consolidation end to end with reinforcement learning
inside the model; here consolidation is an explicit, pluggable function of the stored texts.
"""
from __future__ import annotations

from typing import Callable, Protocol

from pydantic import Field, model_validator

from ...core.errors import ConfigError
from ..registries import MEMORY_POLICIES
from ..text import count_tokens
from .base import CapacityConfig, Memory, MemoryPolicy, Plan


class Consolidator(Protocol):
    def __call__(self, memories: list[Memory], budget_items: int | None, budget_tokens: int | None,
                 key: str | None) -> Plan: ...


def _fits(memories: list[Memory], budget_items: int | None, budget_tokens: int | None) -> bool:
    return ((budget_items is None or len(memories) <= budget_items)
            and (budget_tokens is None or sum(m.tokens for m in memories) <= budget_tokens))


class RuleConsolidator:
    """Keep the newest memory per key, then drop the least useful until the budget holds."""

    def __call__(self, memories, budget_items, budget_tokens, key) -> Plan:
        drop: list[int] = []
        newest: dict[object, Memory] = {}
        for m in sorted(memories, key=lambda m: (m.updated, m.n)):
            value = m.metadata.get(key) if key else None
            if value is not None:
                if value in newest:
                    drop.append(newest[value].n)
                newest[value] = m
        state = [m for m in memories if m.n not in drop]
        by_use = sorted(state, key=lambda m: (bool(m.metadata.get("pinned")), m.recalls, m.last_recalled,
                                              m.created, m.n))
        while by_use and not _fits(state, budget_items, budget_tokens):
            out = by_use.pop(0)
            drop.append(out.n)
            state = [m for m in state if m.n != out.n]
        return Plan(delete=drop, event="CONSOLIDATE", details={"consolidator": "rule"})


class LMConsolidator:
    """Consolidation by a language model: `generate(prompt) -> text`, one memory per line of the answer.
    Lines equal to a current memory keep it; other lines become new memories; memories not named are
    dropped. An empty or over-budget answer falls back to `fallback` (the rule-based hook)."""

    PROMPT = ("You keep an agent's working memory within a budget of {budget}. Rewrite the memory below into "
              "the new memory: merge what belongs together, drop what is outdated or no longer useful, keep "
              "facts exact. Answer with one memory per line and nothing else.\n\nMemory:\n{lines}\n")

    def __init__(self, generate: Callable[[str], str], fallback: Consolidator | None = None) -> None:
        if not callable(generate):
            raise ConfigError("LMConsolidator needs a callable", expected="generate(prompt: str) -> str",
                              got=repr(generate))
        self.generate, self.fallback = generate, fallback or RuleConsolidator()

    def __call__(self, memories, budget_items, budget_tokens, key) -> Plan:
        budget = " and ".join(p for p in (f"{budget_items} items" if budget_items else "",
                                           f"{budget_tokens} words" if budget_tokens else "") if p)
        prompt = self.PROMPT.format(budget=budget, lines="\n".join(f"- {m.text}" for m in memories))
        why = ""
        try:
            answer = self.generate(prompt)
        except Exception as err:    # a model that fails must not lose the state
            answer, why = "", f"the model raised {type(err).__name__}: {err}"
        lines = [line.strip().lstrip("-*• ").strip() for line in str(answer or "").splitlines()]
        lines = list(dict.fromkeys(line for line in lines if line))
        tokens = sum(count_tokens(line) for line in lines)
        if not why and not lines:
            why = "the model answered nothing"
        elif not why and ((budget_items and len(lines) > budget_items) or (budget_tokens and tokens > budget_tokens)):
            why = f"the answer ({len(lines)} items, {tokens} words) is over the budget ({budget})"
        if why:
            plan = self.fallback(memories, budget_items, budget_tokens, key)
            plan.details = {**plan.details, "fallback": why}
            return plan
        current = {m.text: m for m in memories}
        return Plan(delete=[m.n for m in memories if m.text not in lines],
                    add=[line for line in lines if line not in current], event="CONSOLIDATE",
                    details={"consolidator": "lm"})


class Mem1Config(CapacityConfig):
    supersede_key: str | None = Field("key", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    budget_items: int | None = Field(None, ge=1, description="most memories in the working state of a scope")
    budget_tokens: int | None = Field(None, ge=1, description="most words in the working state of a scope")
    every_turn: bool = Field(False, description="consolidate after every add, not only when over budget")

    @model_validator(mode="after")
    def _a_budget(self):
        if self.budget_items is None and self.budget_tokens is None:
            raise ValueError("MEM1 needs a budget: set budget_items and/or budget_tokens")
        if self.capacity is not None:
            raise ValueError("MEM1 takes budget_items instead of capacity")
        return self


@MEMORY_POLICIES.register("mem1", summary="MEM1 bounded working memory: item/token budget, consolidated each turn "
                                           "(rule-based or a pluggable LM)")
class Mem1(MemoryPolicy):
    name = "mem1"
    Config = Mem1Config

    def __init__(self, consolidate: Consolidator | None = None, **settings) -> None:
        super().__init__(**settings)
        self.consolidate = consolidate or RuleConsolidator()

    @property
    def bounded(self) -> bool:
        return True

    def over_budget(self, count: int, tokens: int) -> bool:
        c = self.config
        return c.every_turn or (c.budget_items is not None and count > c.budget_items) or \
            (c.budget_tokens is not None and tokens > c.budget_tokens)

    def after_add(self, memories: list[Memory], new: int, now: float) -> Plan:
        c = self.config
        if not c.every_turn and _fits(memories, c.budget_items, c.budget_tokens):
            return Plan()
        return self.consolidate(memories, c.budget_items, c.budget_tokens, c.supersede_key)


__all__ = ["LMConsolidator", "Mem1", "RuleConsolidator"]
