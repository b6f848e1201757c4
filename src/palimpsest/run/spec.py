"""Experiment specs: one format for every experiment kind, told apart by `kind:`.

    kind: learn      (the default when `kind` is left out) continual learning: a benchmark stream,
                     a model, strategies x seeds                         run/kinds/learn.py
    kind: unlearn    train (or take) a model, forget with several methods, audit against retraining
                                                                         run/kinds/unlearn.py
    kind: adapt      label-free test-time adaptation of a source model on shifted data
                                                                         run/kinds/adapt.py

YAML -> validated pydantic models; every bad field is reported at once, with its path. The kind
is never guessed from the keys present: a spec without `kind` is a learning spec, and an
unlearning spec that forgot its `kind: unlearn` is told so.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..core.config import LABEL_PATTERN, Settings, identity, pydantic_problems, since
from ..core.errors import PalimpsestError, SpecError
from ..core.registry import KINDS, MODELS, STRATEGIES


MAX_SEED = 2 ** 63 - 1   # seeds are stored as SQLite integers


def names_to_entries(v):
    """`- naive` is short for `- {name: naive}` in a list of strategies or methods."""
    return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v


def check_labels_and_seeds(field: str, labels: list[str], seeds: list[int]) -> None:
    """Raise a ValueError (reported by the spec's validation) for a repeated label or seed, or a seed
    outside [0, 2^63)."""
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seeds: {bad} out of range; use integers in [0, 2^63)")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"{field}: labels {dupes} appear twice; give each a distinct `label`")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {seeds} repeats a seed; list each seed once")


class CheckpointPolicy(Settings):
    """What a run keeps on disk. The resume state (optimizer, strategy, random generators) of the
    last finished step is always kept while a run is unfinished (with the one before it, as a
    fall-back) and released when it finishes. A model whose parameters are partly frozen (a
    pretrained encoder, a base under LoRA adapters) is stored as its trainable part plus a digest
    of the frozen base."""

    models: Literal["last", "all", "none"] = Field(
        "last", description="models kept after a run: the last step's (default; what `load_model` and "
        "`palimpsest forget` read), every step's, or none")
    seeds: Literal["all", "first"] = Field(
        "all", description="whose models are kept: every seed's runs (default), or only the runs of the first "
        "seed listed (enough to inspect or forget from; every seed's numbers are stored either way)")

    def keeps_models(self, seed: int, seeds: list[int]) -> bool:
        return self.models != "none" and (self.seeds == "all" or seed == seeds[0])


class ModelSpec(Settings):
    name: str = Field("mlp", description="a registered model (`palimpsest ls models`): mlp, cnn, resnet18_slim, ...")
    head: Literal["single", "multi"] = Field(
        "single", description="single: one output layer over every class; multi: one output layer per task "
        "over that task's classes (task-incremental scenarios)")
    settings: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's factory, "
                                     "e.g. {hidden: [256, 256]} for mlp (listed per model below)")
    freeze: list[str] = Field(default_factory=list, json_schema_extra=since("0.2"), description="parameter-name prefixes to freeze, e.g. "
                              "[backbone] for a frozen encoder")
    mask_unseen: bool = Field(True, json_schema_extra=since("0.2"), description="single head: classes the model has "
                              "not been shown get no probability (a growing head); false: a plain fixed head over "
                              "every class from the start")
    weights: str | None = Field(None, json_schema_extra=since("0.2"), description="a safetensors file of initial weights (e.g. a pretrained "
                                "encoder); the entries it holds replace the initialised ones")


class PluginSpec(Settings):
    name: str = Field(..., description="a registered strategy composed as a plug-in (its hooks and extra loss terms)")
    settings: dict[str, Any] = Field(default_factory=dict, description="the plug-in strategy's settings")


class StrategySpec(Settings):
    name: str = Field(..., description="a registered strategy (`palimpsest ls strategies`)")
    label: str | None = Field(None, pattern=LABEL_PATTERN, max_length=100,
                              description="name shown in tables; defaults to the strategy name "
                              "(joined with its plug-ins' names)")
    settings: dict[str, Any] = Field(default_factory=dict, description="the strategy's settings (listed per "
                                     "strategy below); unset ones take the tuned defaults for the benchmark, then "
                                     "the strategy's own defaults")
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of the shared training settings")
    plus: list[PluginSpec] = Field(default_factory=list, json_schema_extra=since("0.2"), description="strategies composed as plug-ins: their hooks "
                                   "run after this one's and their extra loss terms are added (e.g. [lwf])")

    @field_validator("plus", mode="before")
    @classmethod
    def _plus_shorthand(cls, v):
        return names_to_entries(v)

    @property
    def display(self) -> str:
        return self.label or "+".join([self.name, *(p.name for p in self.plus)])



class SpecBase(Settings):
    """Fields every kind has."""

    kind: str = Field(..., description="which experiment kind this spec is (`palimpsest ls kinds`)")
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="names the experiment: its id is <name>-<date>-<time>")
    description: str = Field("", description="free text kept with the experiment")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=1000,
                             description="one run per seed; integers in [0, 2^63)")
    checkpoints: CheckpointPolicy = Field(default_factory=CheckpointPolicy, json_schema_extra=since("0.2"),
                                          description="which models each run keeps on disk")
    plugins: list[str] = Field(default_factory=list, json_schema_extra=since("0.2"),
                               description="Python files of one's own that register strategies, unlearners, ... "
                                           "(relative to the spec's folder); loaded before the spec is checked")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        """Identifies the spec (resume finds an unfinished experiment by it); fields added after 0.1.0
        count only when set (core/config.py `identity`), so older specs keep their digests."""
        return hashlib.sha256(json.dumps(identity(self), sort_keys=True).encode()).hexdigest()[:16]


class EntriesSpec(SpecBase):
    """A spec with a list of named entries (strategies, methods): `- naive` is short for
    `- {name: naive}`, and labels and seeds must be unique."""

    entries_field: ClassVar[str] = "strategies"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, dict) and cls.entries_field in data:
            data = {**data, cls.entries_field: names_to_entries(data[cls.entries_field])}
        return data

    @model_validator(mode="after")
    def _labels_unique(self):
        check_labels_and_seeds(self.entries_field, [e.display for e in getattr(self, self.entries_field)], self.seeds)
        return self


def known(registry, name: Any, path: str, problems: list[str]) -> bool:
    """True when `name` is registered; otherwise add the registry's hint to `problems`."""
    if not isinstance(name, str):
        return False
    try:
        registry.get(name)
        return True
    except PalimpsestError as err:
        problems.append(f"{path}: {err.what}; {err.fix}")
        return False


def validate_spec(model: type[SpecBase], data: dict, source: str, semantic) -> SpecBase:
    """Build `model` from `data`, adding `semantic(data)` problems (registry names, settings that
    need the registries), and raise one SpecError listing every problem."""
    problems: list[str] = []
    spec = None
    try:
        spec = model(**data)
    except ValidationError as err:
        problems = pydantic_problems(err, model=model)
    problems += [p for p in semantic(data) if p not in problems]
    if problems:
        raise SpecError(problems, source)
    return spec


def strategy_problems(entries: Any, path: str, dataset: str, scenario: str) -> list[str]:
    """Names and settings of strategies (and their plug-ins) in a spec's raw mapping."""
    from ..learn.defaults import defaults_for
    problems: list[str] = []
    for i, s in enumerate(entries if isinstance(entries, list) else []):
        s = {"name": s} if isinstance(s, str) else s
        if not isinstance(s, dict):
            continue
        parts = [(f"{path}.{i}", s)] + [(f"{path}.{i}.plus.{j}", {"name": p} if isinstance(p, str) else p)
                                         for j, p in enumerate(s.get("plus") or []) if isinstance(p, (str, dict))]
        for where, entry in parts:
            if known(STRATEGIES, entry.get("name"), f"{where}.name", problems) and \
                    isinstance(entry.get("settings", {}), dict):
                tuned = defaults_for(entry["name"], str(dataset), str(scenario))
                config = STRATEGIES.get(entry["name"]).obj.Config
                try:
                    config(**{**tuned, **entry.get("settings", {})})
                except ValidationError as err:
                    problems += pydantic_problems(err, f"{where}.settings", config)
    return problems


def model_problems(model: Any, path: str) -> list[str]:
    problems: list[str] = []
    model = model if isinstance(model, dict) else {}
    name = model.get("name", "mlp")
    settings = model.get("settings")
    if known(MODELS, name, f"{path}.name", problems) and isinstance(settings, dict):
        import inspect

        from ..core.errors import close_matches, did_you_mean
        params = inspect.signature(MODELS.get(name).obj).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            accepted = [p for p in params if p != "input_shape"]   # the data decides the input shape
            for key in settings:
                if key not in accepted:
                    close = close_matches(key, accepted)
                    hint = (f"; {did_you_mean(close)}" if close else
                            f"; model {name!r} takes {', '.join(accepted) or 'no settings'}")
                    problems.append(f"{path}.settings.{key}: expected no such setting of model {name!r}{hint}")
    weights = model.get("weights")
    if isinstance(weights, str) and not Path(weights).expanduser().is_file():
        problems.append(f"{path}.weights: expected an existing safetensors file, got {weights!r}")
    return problems


def _kinds():
    from ..core.plugins import load_plugins
    load_plugins()   # built-in registrations and installed plugins: their names validate like any other
    return KINDS


def load_spec_plugins(data: dict, base: Path | None, extra: list[str] | tuple = ()) -> dict:
    """Load the plugin files a spec names (relative to `base`, the spec's folder) and those given on
    the command line; return the spec with their absolute paths, so the stored spec reloads them."""
    from ..core.plugins import load_plugin_file
    listed = data.get("plugins", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise SpecError([f"plugins: expected a list of Python file paths, got {listed!r}"], "spec")
    paths = []
    for p in [*listed, *extra]:
        path = Path(p).expanduser()
        if not path.is_absolute() and base is not None and p in listed:
            path = base / path
        load_plugin_file(path)
        paths.append(str(path.resolve()))
    return {**data, "plugins": list(dict.fromkeys(paths))} if paths else data


def parse_spec(data: Any, source: str = "spec", base: Path | None = None, plugins: list[str] | tuple = ()) -> SpecBase:
    """Validate a spec given as a dict (any kind); raise SpecError listing every problem. Plugin files
    (the spec's `plugins:` relative to `base`, and `plugins`) are loaded first."""
    kinds = _kinds()
    if not isinstance(data, dict):
        raise SpecError([f"top level: expected a mapping of fields (kind, name, ..., seeds), got "
                         f"{type(data).__name__}: {data!r}"], source)
    if data.get("plugins") or plugins:
        data = load_spec_plugins(data, base, plugins)
    kind = data.get("kind", "learn")
    if not isinstance(kind, str) or kind not in kinds:
        problems: list[str] = []
        known(kinds, kind, "kind", problems)
        raise SpecError(problems or [f"kind: expected one of {', '.join(kinds.names())}, got {kind!r}"], source)
    if "kind" not in data and "forget" in data:
        raise SpecError(["kind: this spec has `forget:` requests but no `kind`, and a spec without `kind` is a "
                         "learning spec; add `kind: unlearn`"], source)
    return kinds.get(kind).obj().parse(data, source)


MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000   # values in a spec once YAML aliases are expanded (an alias bomb stops here)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (the plain
    loader keeps the last value silently: a duplicated `strategies:` would drop the first list)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(obj: Any, limit: int) -> int:
    """Number of values in `obj` counting each reference (aliases expanded), stopping past `limit`."""
    count, stack = 0, [obj]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            break
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def read_spec_file(path: str | Path) -> Any:
    """The mapping in a YAML spec file, or a SpecError that says what is wrong with the file."""
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise SpecError([f"file: expected an existing YAML spec, got {source!r}; check the path "
                         f"(recipes/ has examples)"], source)
    if p.is_dir():
        raise SpecError([f"file: expected a YAML spec file, got the directory {source!r}; name a .yaml file in it"],
                        source)
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError([f"file: expected a spec of at most {MAX_SPEC_BYTES // 1000} kB, got {size // 1000} kB; "
                         "a spec names data, it does not hold it"], source)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError([f"file: expected UTF-8 text, got a byte {err.object[err.start]:#04x} at offset {err.start} "
                         "that is not UTF-8 (a Latin-1 or binary file?); re-save the spec as UTF-8"], source) from None
    except OSError as err:
        raise SpecError([f"file: cannot be read ({err.strerror}); check its permissions"], source) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([f"YAML syntax at {where}: {getattr(err, 'problem', err)}; fix the indentation or "
                         f"quoting there"], source) from None
    except RecursionError:
        raise SpecError(["YAML: nested too deeply to read; a spec is a few levels of mappings"], source) from None
    if _expanded_size(data, MAX_SPEC_NODES) > MAX_SPEC_NODES:
        raise SpecError([f"YAML: more than {MAX_SPEC_NODES} values once aliases are expanded (an alias bomb?); "
                         "write the spec without nested aliases"], source)
    return data


def load_spec(path: str | Path, plugins: list[str] | tuple = ()) -> SpecBase:
    """Read and validate a YAML spec file of any kind (loading its plugin files and `plugins` first)."""
    return parse_spec(read_spec_file(path), str(path), Path(path).parent, plugins)


__all__ = ["CheckpointPolicy", "EntriesSpec", "ModelSpec", "PluginSpec", "SpecBase", "StrategySpec", "check_labels_and_seeds",
           "load_spec", "model_problems", "read_spec_file", "names_to_entries", "parse_spec", "strategy_problems", "validate_spec"]
