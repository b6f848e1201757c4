"""The one place that loads plugins.

Built-in registrations (strategies, unlearners, datasets, models, metrics, experiment kinds, report
parts) happen when their packages are imported; `load_plugins()` imports them all and then every
installed plugin: a package declares, in its pyproject.toml,

    [project.entry-points."palimpsest.plugins"]
    my_methods = "my_package.palimpsest_plugin"

and the named module is imported (its `@STRATEGIES.register(...)` decorators run) or, when the entry
point names a callable, the callable is called once. Specs, the runner and `palimpsest ls` call
`load_plugins()`, so a plugin's names work everywhere a built-in's do. Code of one's own that is not
a package loads from a file: `palimpsest run SPEC --plugin my_methods.py`, or `plugins:
[my_methods.py]` in the spec (`load_plugin_file`).
"""
from __future__ import annotations

import importlib
import types
from pathlib import Path
from importlib.metadata import entry_points

from .errors import PalimpsestError

GROUP = "palimpsest.plugins"
_files: dict[str, types.ModuleType] = {}
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


def load_plugin_file(path: str | Path) -> types.ModuleType:
    """Import a Python file of one's own (its `@STRATEGIES.register(...)` etc. run), once per process:
    what `palimpsest run SPEC --plugin my_methods.py` and a spec's `plugins:` list do."""
    import importlib.util
    import hashlib
    file = Path(path).expanduser().resolve()
    key = str(file)
    if key in _files:
        return _files[key]
    if not file.is_file():
        raise PalimpsestError(f"plugin file not found: {path}", expected="a Python file that registers components",
                              got=str(file), fix="check the path (a spec's plugins are relative to the spec's folder)")
    load_plugins()   # the built-ins first: a plugin may extend or compose them
    name = f"palimpsest_plugin_{file.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except PalimpsestError:
        raise
    except SyntaxError as err:
        raise PalimpsestError(f"plugin {path} has a syntax error", expected="valid Python",
                              got=f"line {err.lineno}: {err.msg}", fix="fix that line") from None
    except Exception as err:
        raise PalimpsestError(f"plugin {path} failed to load", expected="a module that imports and registers cleanly",
                              got=f"{type(err).__name__}: {err}", fix="run `python " + str(path) + "` to see the "
                              "full error") from err
    _files[key] = module
    return module


__all__ = ["GROUP", "load_builtins", "load_plugin_file", "load_plugins"]
