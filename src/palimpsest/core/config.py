"""Validated settings (pydantic). Every bad field is reported at once: path, expected form, value."""
from __future__ import annotations

import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import SpecError, close_matches, did_you_mean  # noqa: F401  (re-exported)

M = TypeVar("M", bound=BaseModel)

# Labels appear in run ids (`<experiment>/<label>/seed<k>`), tables and export file names.
LABEL_PATTERN = r"^[^/\x00-\x1f\x7f]+$"


class Settings(BaseModel):
    """Base for every config: unknown fields are errors (a typo must not be silently ignored), and
    so are infinite and NaN numbers unless a field says it takes them (`allow_inf_nan=True`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def since(version: str) -> dict:
    """Mark a field added after palimpsest 0.1.0: `Field(..., json_schema_extra=since("0.2"))`. While
    such a field keeps its default it is left out of `identity`, so specs that do not use it keep the
    digests (and the cache keys of their models) they had before it existed."""
    return {"since": version}


def identity(model: BaseModel) -> dict[str, Any]:
    """The JSON form of a settings model for digests: every field, except fields marked with `since`
    that still hold their default (recursively)."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "since" in extra and not info.is_required() and value == info.get_default(call_default_factory=True):
            continue
        out[name] = _identity_value(value)
    return out


def _identity_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return identity(value)
    if isinstance(value, (list, tuple)):
        return [_identity_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _identity_value(v) for k, v in value.items()}
    return value


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
    if "max_length" in ctx:
        return f"at most {ctx['max_length']} item(s) / characters"
    if ctx.get("pattern") == LABEL_PATTERN:
        return "printable text without '/'"
    if "pattern" in ctx:
        return f"text matching {ctx['pattern']}"
    if kind == "finite_number":
        return "a finite number (not inf or nan)"
    return err.get("msg", "a valid value").replace("Input should be ", "").replace("Value error, ", "")


# Names other libraries use for our settings (Avalanche, Mammoth, PyTorch habits): suggested when
# one of them is given for a field that exists here under our name.
SYNONYMS = {"learning_rate": "lr", "lr_rate": "lr", "n_epochs": "epochs", "num_epochs": "epochs",
            "train_epochs": "epochs", "train_mb_size": "batch_size", "mb_size": "batch_size", "wd": "weight_decay",
            "optim": "optimizer", "mem_size": "buffer_size", "memory_size": "buffer_size",
            "minibatch_size": "replay_batch_size", "e_lambda": "ewc_lambda", "lambda": "ewc_lambda",
            "si_lambda": "si_c", "seed": "seeds", "n_tasks": "n_experiences", "num_tasks": "n_experiences"}

# Synonyms whose VALUE does not carry over unchanged (or whose field depends on the strategy): the hint
# says so, so that a renamed setting is not taken for a converted one (docs/PARITY.md).
_MEMORY_NOTE = ("the memory's size is buffer_size for replay strategies (er, der, derpp, agem, ...) but "
                "memory_size for gdumb and icarl")
SYNONYM_NOTES = {
    "si_lambda": "the value changes: si_c = si_lambda / 2 (Avalanche's SI penalty has a 1/2, ours does not; "
                 "Mammoth's c is si_c unchanged)",
    "e_lambda": "the value changes: ewc_lambda = 2 x e_lambda x a Fisher ratio (~0.3; Mammoth weights each "
                "example's squared gradient by p(y|x)); see docs/PARITY.md",
    "lambda": "for Avalanche's EWC lambda the value changes: ewc_lambda = 2 x theirs, exactly with "
              "fisher_estimator: batch (Mammoth's e_lambda: also times a Fisher ratio); see docs/PARITY.md",
    "mem_size": _MEMORY_NOTE, "memory_size": _MEMORY_NOTE,
}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (X, X | None, list[X], dict[str, X]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None



def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the (nested) model that holds the value at `loc`."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else []


def pydantic_problems(error: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> list[str]:
    """One readable line per pydantic error: `path: expected ..., got ...`; with `model`, an unknown
    field gets the close matches among the fields it meant ("did you mean 'lr'?")."""
    problems = []
    for err in error.errors():
        if err.get("type") == "extra_forbidden" and model is not None:
            name, fields = str(err["loc"][-1]), _fields_at(model, tuple(err["loc"][:-1]))
            close = close_matches(name, fields)
            if SYNONYMS.get(name) in fields and SYNONYMS[name] not in close:
                close = [SYNONYMS[name], *close][:2]
            if close:
                path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
                note = f"; note: {SYNONYM_NOTES[name]}" if name in SYNONYM_NOTES else ""
                problems.append(f"{path}: expected no such field; {did_you_mean(close)}{note}")
                continue
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        got = "nothing" if err.get("type") == "missing" else repr(err.get("input"))
        if len(got) > 80:
            got = got[:77] + "..."
        msg = err.get("msg", "")
        if err.get("type") == "value_error":
            text = msg.replace("Value error, ", "")
            problems.append(f"{path}: {text}" if path else text)
        else:
            problems.append(f"{path or 'top level'}: expected {_expected(err)}, got {got}")
    return problems


def validate(model: type[M], values: dict[str, Any] | None, where: str) -> M:
    """Build `model` from `values` or raise SpecError listing every bad field under `where`."""
    try:
        return model(**(values or {}))
    except ValidationError as err:
        raise SpecError(pydantic_problems(err, where, model), source=where) from None
