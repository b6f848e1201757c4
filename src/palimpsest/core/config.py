"""Validated settings (pydantic). Every bad field is reported at once: path, expected form, value."""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import SpecError

M = TypeVar("M", bound=BaseModel)


class Settings(BaseModel):
    """Base for every config: unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _expected(err: dict) -> str:
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "no such field (check the spelling)"
    if kind == "missing":
        return "a value (the field is required)"
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    for key, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if key in ctx:
            bound = ctx[key]
            if isinstance(bound, float) and bound.is_integer():
                bound = int(bound)
            return f"a number {word} {bound}"
    if "min_length" in ctx:
        return f"at least {ctx['min_length']} item(s)"
    return err.get("msg", "a valid value").replace("Input should be ", "").replace("Value error, ", "")


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One readable line per pydantic error: `path: expected ..., got ...`."""
    problems = []
    for err in error.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        got = "nothing" if err.get("type") == "missing" else repr(err.get("input"))
        msg = err.get("msg", "")
        if err.get("type") == "value_error":
            problems.append(f"{path}: {msg.replace('Value error, ', '')}")
        else:
            problems.append(f"{path}: expected {_expected(err)}, got {got}")
    return problems


def validate(model: type[M], values: dict[str, Any] | None, where: str) -> M:
    """Build `model` from `values` or raise SpecError listing every bad field under `where`."""
    try:
        return model(**(values or {}))
    except ValidationError as err:
        raise SpecError(pydantic_problems(err, where), source=where) from None
