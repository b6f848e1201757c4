"""The one place that loads plugins.

Built-in registrations (strategies, unlearners, datasets, models, metrics, experiment kinds, report
parts) happen when their packages are imported; `load_plugins()` imports them all and then every
installed plugin: a package declares, in its pyproject.toml,

    [project.entry-points."palimpsest.plugins"]
    my_methods = "my_package.palimpsest_plugin"

and the named module is imported (its `@STRATEGIES.register(...)` decorators run) or, when the entry
point names a callable, the callable is called once. Specs, the runner and `palimpsest ls` call
`load_plugins()`, so a plugin's names work everywhere a built-in's do.
"""
from __future__ import annotations

import importlib
import types
from importlib.metadata import entry_points

from .errors import PalimpsestError

GROUP = "palimpsest.plugins"
BUILTINS = ("palimpsest.data.datasets", "palimpsest.models", "palimpsest.learn", "palimpsest.forget",
            "palimpsest.memory", "palimpsest.evaluate", "palimpsest.run.kinds")  # report parts register when report/ is imported
_loaded: list[str] | None = None


def load_builtins() -> None:
    for name in BUILTINS:
        importlib.import_module(name)


def load_plugins(reload: bool = False) -> list[str]:
    """Import the built-in registrations and every installed plugin (once per process); return the
    names of the plugins loaded."""
    global _loaded
    if _loaded is not None and not reload:
        return _loaded
    load_builtins()
    names = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, types.ModuleType):
                obj()
        except PalimpsestError:
            raise
        except Exception as err:
            raise PalimpsestError(f"plugin {ep.name!r} ({ep.value}) failed to load",
                                  expected="a module or callable that registers palimpsest components",
                                  got=f"{type(err).__name__}: {err}",
                                  fix=f"fix or uninstall the package that declares the {GROUP!r} entry point "
                                      f"{ep.name!r}") from err
        names.append(ep.name)
    _loaded = names
    return names


__all__ = ["GROUP", "load_builtins", "load_plugins"]
