"""One registry per kind of thing (strategies, models, datasets, metrics, unlearners, experiment kinds).

`@register("ewc")` adds an entry; `create("ewc", **overrides)` builds it; unknown names raise an
error that lists close matches; a duplicate name is an error, never a silent overwrite.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError, UnknownNameError, close_matches, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    obj: Any
    summary: str
    meta: dict = field(default_factory=dict)


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str | None = None, **meta: Any) -> Callable:
        def decorator(obj: Any) -> Any:
            if name in self._entries:
                raise ConfigError(
                    f"duplicate {self.kind} name {name!r}",
                    expected="each registered name used once",
                    got=f"{name!r} already registered by {self._entries[name].obj!r}",
                    fix="pick another name or remove the older registration")
            doc = summary or (obj.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = Entry(name, self.kind, obj, text, dict(meta))
            return obj
        return decorator

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = close_matches(name, self._entries, n=3)
            plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
            hint = did_you_mean(close) if close else \
                (f"run `palimpsest ls` to see the {plural}; one of your own loads with `--plugin FILE.py` or a "
                 f"`plugins: [FILE.py]` list in the spec")
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}",
                expected=f"one of: {', '.join(sorted(self._entries))}",
                got=name, fix=hint) from None

    def create(self, name: str, *args: Any, **overrides: Any) -> Any:
        return self.get(name).obj(*args, **overrides)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


STRATEGIES = Registry("strategy")
MODELS = Registry("model")
DATASETS = Registry("dataset")
SCENARIOS = Registry("scenario")
METRICS = Registry("metric")
UNLEARNERS = Registry("unlearner")
KINDS = Registry("experiment kind")
# token mixers of sequence models: attention and the test-time memories of palimpsest.memory (presets
# of the associative core, mixture-of-memories, HCAM), each `(dim, **settings) -> module` whose
# forward is `y, state = layer(x, state=None)`
MEMORY_LAYERS = Registry("memory layer")

_BY_KIND = {r.kind: r for r in (STRATEGIES, MODELS, DATASETS, SCENARIOS, METRICS, UNLEARNERS, MEMORY_LAYERS)}
_BY_KIND["kind"] = KINDS


def registry(kind: str) -> Registry:
    if kind not in _BY_KIND:
        raise UnknownNameError(f"unknown registry kind {kind!r}", expected=", ".join(_BY_KIND), got=kind)
    return _BY_KIND[kind]


def list_methods(pattern: str = "*", kind: str = "strategy") -> list[str]:
    """Names in one registry that match a glob pattern, e.g. `list_methods("*replay*")`."""
    return registry(kind).names(pattern)
