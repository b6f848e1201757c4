"""Errors that say what was wrong, what was expected, what was given and how to fix it."""
from __future__ import annotations

import difflib


class PalimpsestError(Exception):
    """Base error. Built from four parts so every message reads the same way."""

    def __init__(self, what: str, expected: str | None = None, got: object = None,
                 fix: str | None = None) -> None:
        self.what, self.expected, self.got, self.fix = what, expected, got, fix
        parts = [what]
        if expected is not None:
            parts.append(f"expected: {expected}")
        if got is not None:
            parts.append(f"got: {got!r}" if not isinstance(got, str) else f"got: {got}")
        if fix is not None:
            parts.append(f"fix: {fix}")
        super().__init__("\n  ".join(parts))


class ConfigError(PalimpsestError, ValueError):
    """A bad setting for a method, a model, a dataset or a spec field."""


class UnknownNameError(PalimpsestError, KeyError):
    """A name that is not in a registry; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0] if self.args else ""


class DataError(PalimpsestError, ValueError):
    """Missing or malformed data files."""


class LeakageError(PalimpsestError, PermissionError):
    """A method read data it did not declare (a split it may not see, labels it may not use)."""


class SpecError(PalimpsestError, ValueError):
    """An experiment spec with one or more bad fields; every problem is listed at once."""

    def __init__(self, problems: list[str], source: str = "spec") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        Exception.__init__(self, f"{source} has {len(self.problems)} problem(s):\n{lines}")


def close_matches(name: object, choices, n: int = 2) -> list[str]:
    """The names among `choices` that `name` was probably meant to be (a misspelling)."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)


def did_you_mean(close: list[str]) -> str:
    """"did you mean 'a' or 'b'?" for the close matches of a misspelt name (the fix part of an error)."""
    return f"did you mean {' or '.join(repr(c) for c in close)}?"
