"""Generate docs/SPEC.md, the spec reference, from the pydantic spec models and the registries.

    python scripts/spec_reference.py              print the reference
    python scripts/spec_reference.py --write      write docs/SPEC.md
    python scripts/spec_reference.py --check      exit 1 when docs/SPEC.md is not what would be written

Nothing here is written by hand about a field: every experiment kind registered in `KINDS` is
walked through its spec model (`Kind.Spec`) and every nested settings model, and every registry
defined in palimpsest (datasets, models, strategies, unlearners, metrics, and any registry added
later) is listed with what a spec can say of its entries (loader options, model settings, strategy
and unlearner settings with their tuned defaults from learn/defaults.py). A new kind, field or
registered name appears in the reference when it is regenerated; tests/test_spec_reference.py
fails while docs/SPEC.md is stale.

Only palimpsest's own registrations are listed (installed plugins are not loaded, and entries
registered from outside the package are skipped), so the file is the same on every machine.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
SPEC_MD = ROOT / "docs" / "SPEC.md"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))   # document this checkout, whichever palimpsest is installed
# registries listed first, in this order, with the spec fields that name their entries
KNOWN = {
    "experiment kind": ("Experiment kinds", "`kind`"),
    "dataset": ("Datasets", "`benchmark.dataset` (learn), `train.dataset` (unlearn), `source.dataset` (adapt)"),
    "model": ("Models", "`model.name` (learn), `train.model.name` (unlearn), `source.model.name` (adapt)"),
    "strategy": ("Strategies", "`strategies` and their `plus` (learn), `methods` (adapt)"),
    "unlearner": ("Unlearners", "`methods` (unlearn), `palimpsest forget --method`"),
    "metric": ("Metrics", None),
}


# -- loading -----------------------------------------------------------------------------------

def load_everything() -> None:
    """Import every palimpsest module, so every built-in registration has run (installed plugins
    are not loaded: the reference documents palimpsest itself)."""
    import palimpsest
    for info in pkgutil.walk_packages(palimpsest.__path__, "palimpsest."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def registries() -> list[tuple[Any, str]]:
    """(registry, "NAME in palimpsest.module") for every Registry a palimpsest module defines at its
    top level (`NAME = Registry(...)`), the KNOWN ones first."""
    import palimpsest
    from palimpsest.core.registry import Registry
    found: dict[int, tuple[Registry, str]] = {}
    for info in pkgutil.walk_packages(palimpsest.__path__, "palimpsest."):
        module = sys.modules.get(info.name)
        source = inspect.getsource(module) if module is not None else ""
        for name, value in vars(module).items() if module is not None else ():
            if isinstance(value, Registry) and re.search(rf"^{name}\s*=\s*Registry\(", source, flags=re.M):
                found.setdefault(id(value), (value, f"`{name}` in `{info.name}`"))
    order = list(KNOWN)
    return sorted(found.values(), key=lambda r: (order.index(r[0].kind) if r[0].kind in order else len(order),
                                                 r[0].kind))


def builtin(entry) -> bool:
    """True for entries registered by palimpsest itself (not by a test, a plugin file or a package)."""
    return (getattr(entry.obj, "__module__", "") or "").startswith("palimpsest.")


# -- rendering pieces ----------------------------------------------------------------------------

def cell(text: str) -> str:
    """Text fit for a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def flow(value: Any) -> str:
    """A value as it is written in YAML (flow style)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and value.strip() == value and value[0] not in "[{&*!|>'\"%@`#,?:-" and ": " not in value
        return value if plain and yaml.safe_load(value) == value else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    return repr(value)


def type_text(annotation: Any) -> str:
    """A field's type in words: `integer`, `one of `class`, `task``, `list of integer or null`."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return f"`{flow(args[0])}`" if len(args) == 1 else "one of " + ", ".join(f"`{flow(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        inner = [a for a in args if a is not Ellipsis]
        return "list" + (f" of {type_text(inner[0])}" if inner else "")
    if origin is dict:
        return "mapping" + (f" of {type_text(args[1])}" if len(args) == 2 and args[1] is not Any else "")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{anchor(annotation)})"
    names = {int: "integer", float: "number", str: "text", bool: "true / false"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def constraint_text(field) -> str:
    """The allowed range of a field: `≥ 1`, `in [0, 1)`, `1 to 1000 items`, `matching ...`."""
    from palimpsest.core.config import LABEL_PATTERN
    bounds = {}
    for meta in field.metadata:
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, key, None)
            if value is not None:
                bounds[key] = value
    out = []
    lower = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    upper = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lower and upper:
        out.append(f"in {lower[0]}{flow(lower[1])}, {flow(upper[0])}{upper[1]}")
    elif lower:
        out.append(f"{'≥' if lower[0] == '[' else '>'} {flow(lower[1])}")
    elif upper:
        out.append(f"{'≤' if upper[1] == ']' else '<'} {flow(upper[0])}")
    text = field.annotation is str or typing.get_origin(field.annotation) in (Union, types.UnionType) and \
        str in typing.get_args(field.annotation)
    unit = "characters" if text else "items"
    if "min_length" in bounds and "max_length" in bounds:
        out.append(f"{bounds['min_length']} to {bounds['max_length']} {unit}")
    elif "min_length" in bounds:
        out.append(f"at least {bounds['min_length']} {unit[:-1] if bounds['min_length'] == 1 else unit}")
    elif "max_length" in bounds:
        out.append(f"at most {bounds['max_length']} {unit}")
    if "pattern" in bounds:
        out.append("printable, without `/`" if bounds["pattern"] == LABEL_PATTERN else f"matching `{bounds['pattern']}`")
    return ", ".join(out)


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]


def default_text(field) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        changed = value.model_dump(mode="json", exclude_defaults=True)
        return f"`{flow(changed)}`, the rest as below" if changed else "as below"
    return f"`{flow(value)}`"


def fields_table(model: type[BaseModel], defaults: dict[str, str] | None = None) -> list[str]:
    """One row per field: name, type (with its allowed range), default (or `defaults[name]`), description."""
    if not model.model_fields:
        return ["No settings."]
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        limits = constraint_text(field)
        if limits:
            kind += f", {limits}"
        default = (defaults or {}).get(name) or default_text(field)
        rows.append(f"| `{name}` | {cell(kind)} | {cell(default)} | {cell(field.description or '—')} |")
    return rows


def paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


def docstring_block(doc: str | None) -> list[str]:
    """Paragraphs of a docstring: prose reflowed on one line, indented parts (formulas, lists) kept
    as written in a code block."""
    out: list[str] = []
    for part in inspect.cleandoc(doc or "").split("\n\n"):
        if any(line.startswith(" ") for line in part.splitlines()):
            out += ["", textwrap.indent(textwrap.dedent(part), "    ")]
        elif part.strip():
            out += ["", " ".join(part.split())]
    return out


# -- sections ------------------------------------------------------------------------------------

def kind_sections(kinds) -> tuple[list[str], list[type[BaseModel]], dict]:
    """The spec of every kind, and the nested models met (in the order met, with where)."""
    lines: list[str] = []
    models: list[type[BaseModel]] = []
    used_at: dict[type[BaseModel], list[str]] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            for sub in nested_models(field.annotation):
                used_at.setdefault(sub, []).append(f"{path}{name}")
                if sub not in models:
                    models.append(sub)
                    visit(sub, f"{path}{name}.")

    entries = sorted((e for e in kinds.entries() if builtin(e)), key=lambda e: (e.name != "learn", e.name))
    for entry in entries:
        spec = entry.obj.Spec
        summary = entry.summary[:1].upper() + entry.summary[1:]
        lines += ["", f"## kind: {entry.name}", "", f"{summary}. Spec model `{spec.__module__}.{spec.__name__}`"
                  f"{' (the default: a spec without `kind`)' if entry.name == 'learn' else ''}.", ""]
        # a spec without `kind` is a learning spec, whatever default another kind's model declares
        lines += fields_table(spec, {"kind": "`learn`" if entry.name == "learn" else "**required**"})
        visit(spec, f"{entry.name}: ")
    return lines, models, used_at


def block_sections(models: list[type[BaseModel]], used_at: dict) -> list[str]:
    lines = ["", "## Settings blocks", "", "The nested mappings of the specs above, each once."]
    for model in models:
        where = ", ".join(f"`{p}`" for p in dict.fromkeys(used_at[model]))
        lines += ["", f"### {model.__name__}", "", f"Used at {where}."]
        doc = paragraph(model.__doc__) if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
        if doc and "Base for every config" not in doc:
            lines += ["", doc]
        lines += [""] + fields_table(model)
    return lines


def signature_rows(func, skip: int = 0) -> list[str]:
    params = [p for p in inspect.signature(func).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][skip:]
    if not params:
        return ["No options."]
    rows = ["| option | type | default |", "|---|---|---|"]
    for p in params:
        kind = p.annotation if isinstance(p.annotation, str) else type_text(p.annotation)
        kind = "—" if p.annotation is inspect.Parameter.empty else kind
        default = "**required**" if p.default is inspect.Parameter.empty else f"`{flow(p.default)}`"
        rows.append(f"| `{p.name}` | {cell(str(kind).replace(' | ', ' or '))} | {cell(default)} |")
    return rows


def builtin_entries(registry) -> list:
    """The registry's entries that palimpsest itself registers, in order."""
    return [e for e in registry.entries() if builtin(e)]


def heading(entry) -> list[str]:
    """The lines that open an entry's subsection."""
    return ["", f"### {entry.name}", ""]


def dataset_section(registry) -> list[str]:
    lines = ["", "`root` and `standardize` are the benchmark's own fields (`benchmark.root`, `benchmark.standardize`); "
             "every other option goes in `benchmark.options` (learn specs), e.g. "
             "`benchmark: {dataset: npz, root: my_data.npz, options: {remap_labels: true}}`. "
             "Your own loader: [docs/guides/dataset.md](guides/dataset.md)."]
    for e in builtin_entries(registry):
        shape = e.meta.get("input_shape")
        form = f" Registered as {e.meta['n_classes']} classes, inputs shaped {tuple(shape)}." \
            if e.meta.get("n_classes") else " Classes and input shape come from the data."
        lines += heading(e) + [f"{paragraph(e.obj.__doc__)}{form}", ""]
        lines += signature_rows(e.obj)
        lines += docstring_block("\n\n".join(inspect.cleandoc(e.obj.__doc__ or "").split("\n\n")[1:]))
    return lines


def model_section(registry) -> list[str]:
    lines = ["", "`model.settings` holds the options below; `model.head`, `model.mask_unseen`, `model.weights` and "
             "`model.freeze` apply to every model ([ModelSpec](#modelspec))."]
    for e in builtin_entries(registry):
        inputs = f" Inputs: {e.meta['inputs']}." if e.meta.get("inputs") else ""
        lines += heading(e) + [f"{paragraph(e.obj.__doc__)}{inputs}", ""]
        lines += signature_rows(e.obj, skip=1)
    return lines


def strategy_section(registry) -> list[str]:
    from palimpsest.learn.defaults import DEFAULTS
    lines = ["", "`settings` of a strategy entry; a setting left out takes the tuned default for the benchmark "
             "(`<dataset>/<scenario>` patterns, from `learn/defaults.py`, the most specific match first), then the "
             "strategy's own default. `plus: [...]` composes strategies as plug-ins. Your own strategy: "
             "[docs/guides/strategy.md](guides/strategy.md)."]
    for e in builtin_entries(registry):
        cls = e.obj
        lines += heading(e) + [paragraph(cls.__doc__) or e.summary]
        notes = []
        if getattr(cls, "unsupported", None):
            notes.append("does not run in " + ", ".join(f"`{s}`" for s in sorted(cls.unsupported)) + " scenarios")
        if getattr(cls, "label_free", False):
            notes.append("label-free (runs in `kind: adapt`)")
        if not getattr(cls, "accumulation_safe", True):
            notes.append("refuses `training.accumulation` > 1")
        if getattr(cls, "model_requirements", None):
            notes.append("needs a model with " + ", ".join(sorted(cls.model_requirements)))
        if notes:
            lines += ["", "Note: " + "; ".join(notes) + "."]
        lines += [""] + fields_table(cls.Config)
        tuned = DEFAULTS.get(e.name, {})
        if tuned:
            lines += ["", "Tuned defaults (`learn/defaults.py`):", ""]
            lines += [f"- on `{pattern}`: " + ", ".join(f"`{k}: {flow(v)}`" for k, v in values.items())
                      for pattern, values in tuned.items()]
    return lines


def unlearner_section(registry) -> list[str]:
    lines = ["", "`settings` of a method entry. *Reads* is what the method is handed (a split it did not "
             "declare raises a LeakageError). Your own unlearner: [docs/guides/unlearner.md](guides/unlearner.md)."]
    for e in builtin_entries(registry):
        cls = e.obj
        reads = ", ".join(f"{split}: {level}" for split, level in cls.declared().items()) or "nothing"
        lines += heading(e) + [paragraph(cls.__doc__) or e.summary, "",
                  f"Reads: {reads}." + (" Exact: the result is a retrained model." if getattr(cls, "exact", False) else ""),
                  ""]
        lines += fields_table(cls.Config)
    return lines


def metric_section(registry) -> list[str]:
    lines = ["", "Formulas: [docs/METRICS.md](METRICS.md). Stored per run as `<metric>/<view>` (view `class`: "
             "class-IL, `task`: task-IL). Your own metric: [docs/guides/metric.md](guides/metric.md).", "",
             "| metric | better | reads | what it is |", "|---|---|---|---|"]
    for e in builtin_entries(registry):
        higher = e.meta.get("higher_is_better")
        better = "higher" if higher else "lower" if higher is not None else "—"
        reads = ", ".join(e.meta.get("needs", ())) or "—"
        if e.meta.get("kind"):
            reads += f" ({e.meta['kind']} experiments)"
        lines.append(f"| `{e.name}` | {better} | {cell(reads)} | {cell(e.summary)} |")
    return lines


def generic_section(registry, where: str) -> list[str]:
    entries = builtin_entries(registry)
    lines = ["", f"### {title(registry.kind)}", "", f"Entries of {where}.", "", "| name | what it is |", "|---|---|"]
    lines += [f"| `{e.name}` | {cell(e.summary)} |" for e in entries]
    for e in entries:
        config = getattr(e.obj, "Config", None)
        if isinstance(config, type) and issubclass(config, BaseModel) and config.model_fields:
            lines += ["", f"#### {registry.kind}: {e.name}", ""] + fields_table(config)
    return lines


def title(kind: str) -> str:
    """The heading of a registry: "Memory policies" for the registry of kind "memory policy"."""
    if kind in KNOWN:
        return KNOWN[kind][0]
    if kind.endswith("y") and kind[-2:-1] not in "aeiou":
        plural = kind[:-1] + "ies"
    else:
        plural = kind + ("es" if kind.endswith(("x", "s", "ch", "sh")) else "s")
    return plural[0].upper() + plural[1:]


def render() -> str:
    load_everything()
    from palimpsest.core.registry import KINDS
    kind_lines, models, used_at = kind_sections(KINDS)
    regs = [(r, where) for r, where in registries() if any(builtin(e) for e in r.entries())]
    known = [(r, where) for r, where in regs if r.kind in KNOWN and r.kind != "experiment kind"]
    others = [(r, where) for r, where in regs if r.kind not in KNOWN]
    lines = [
        "# Spec reference",
        "",
        "<!-- Generated by `python scripts/spec_reference.py --write` from the spec models and the registries; "
        "do not edit by hand (tests/test_spec_reference.py fails when this file is stale). -->",
        "",
        "A spec is a YAML file that describes one experiment; `kind:` says which kind (`learn` when left out). "
        "`palimpsest validate SPEC` checks every field below at once: an unknown field is an error that names the "
        "closest one, a value out of range says what was expected. Examples: [recipes/](../recipes/); the kinds: "
        "[KINDS.md](KINDS.md).",
        "",
        "Contents: " + ", ".join(f"[kind: {e.name}](#kind-{e.name})" for e in
                                 sorted((e for e in KINDS.entries() if builtin(e)),
                                        key=lambda e: (e.name != "learn", e.name)))
        + ", [settings blocks](#settings-blocks), registered names: "
        + ", ".join(f"[{title(r.kind).lower()}](#{title(r.kind).lower().replace(' ', '-')})" for r, _ in known)
        + (", [other registries](#other-registries)" if others else "") + ".",
    ]
    lines += kind_lines
    lines += block_sections(models, used_at)
    sections = {"dataset": dataset_section, "model": model_section, "strategy": strategy_section,
                "unlearner": unlearner_section, "metric": metric_section}
    for registry, where in known:
        named = KNOWN[registry.kind][1]
        lines += ["", f"## {title(registry.kind)}", "", f"Entries of {where}" + (f"; named in {named}." if named else ".")]
        lines += sections[registry.kind](registry)
    if others:
        lines += ["", "## Other registries", "", "Names registered for other parts of palimpsest (the agent-memory "
                  "store, report pages, ...), with their settings where they have any."]
        for registry, where in others:
            lines += generic_section(registry, where)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the reference file")
    mode.add_argument("--check", action="store_true", help="exit 1 when the reference file is stale")
    parser.add_argument("--path", type=Path, default=SPEC_MD, help="the reference file (default docs/SPEC.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.path.write_text(text, encoding="utf-8")
        print(f"wrote {args.path}")
    elif args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} is stale: run `python scripts/spec_reference.py --write`", file=sys.stderr)
            return 1
        print(f"{args.path} is current")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
