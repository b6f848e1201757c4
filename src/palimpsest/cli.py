"""The `palimpsest` command."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .core.errors import PalimpsestError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="palimpsest: how neural networks learn, forget and remember.")
console = Console()
err_console = Console(stderr=True)
ROOT_OPTION = typer.Option("palimpsest-results", "--root", help="folder of the results database")


def quickstart_path() -> Path:
    return Path(str(resources.files("palimpsest") / "recipes" / "quickstart.yaml"))


def _fail(err: Exception) -> None:
    err_console.print(f"error: {err}", style="red", highlight=False, markup=False)
    raise typer.Exit(2)


PLUGIN_OPTION = typer.Option([], "--plugin", help="a Python file that registers strategies, unlearners, ... "
                             "(repeatable)")


def _load(spec: Optional[Path], plugins: list[Path] | None = None):
    from .run.spec import load_spec
    path = spec or quickstart_path()
    if spec is None:
        console.print(f"No spec given: running the built-in quickstart ({path.name}).")
    return load_spec(path, [str(p) for p in plugins or []])


def _report(root: Path, exp_id: str, show_table: bool = True) -> Path:
    """The kind's tables in the terminal, the HTML report and the CSV files: one path for every kind."""
    from . import report as rp
    from .run.store.db import ResultsDB
    with ResultsDB(root, create=False) as db:
        out = root / "reports" / exp_id
        if show_table:
            rp.render_summary(db, exp_id, console)
        return rp.write_report(db, exp_id, out / "report.html")   # with its CSV files beside it


@app.command()
def run(spec: Optional[Path] = typer.Argument(None, help="experiment spec (YAML); default: the quickstart"),
        root: Path = ROOT_OPTION,
        resume: bool = typer.Option(False, "--resume", help="continue the latest unfinished experiment of this spec"),
        seeds: Optional[str] = typer.Option(None, help="override the spec's seeds, e.g. 0,1,2"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
        plugin: list[Path] = PLUGIN_OPTION) -> None:
    """Run an experiment: train every strategy x seed, store results, print a table, write a report."""
    try:
        from .core.seeding import configure_torch
        from .run.runner import run_experiment
        s = _load(spec, plugin)
        if seeds is not None:
            try:
                seed_list = [int(x) for x in seeds.split(",") if x.strip()]
            except ValueError:
                raise PalimpsestError("bad --seeds", expected="integers separated by commas, e.g. 0,1,2",
                                      got=seeds) from None
            if not seed_list:
                raise PalimpsestError("bad --seeds: no seed given", expected="integers separated by commas, "
                                      "e.g. 0,1,2", got=seeds, fix="list at least one seed, or leave --seeds out")
            from .run.spec import parse_spec
            s = parse_spec({**s.model_dump(mode="json"), "seeds": seed_list}, f"{spec or 'quickstart'} with --seeds",
                           plugins=[str(p) for p in plugin])
        configure_torch()
        from .core.registry import KINDS
        for line in KINDS.get(s.kind).obj().notes(s):
            console.print(line, highlight=False, markup=False)
        exp_id = run_experiment(s, root=root, resume=resume, progress=not no_progress)
        html = _report(root, exp_id)
        console.print(f"experiment [bold]{exp_id}[/] stored in {root / 'results.sqlite'}")
        console.print(f"report: {html}")
        from .run.store.db import ResultsDB
        with ResultsDB(root, create=False) as db:
            diverged = [r for r in db.runs(exp_id) if r["status"] == "diverged"]
        for r in diverged:
            err_console.print(f"error: {r['error']}", style="red", highlight=False, markup=False)
        if diverged:
            raise typer.Exit(1)
    except PalimpsestError as err:
        _fail(err)


@app.command()
def validate(spec: Path = typer.Argument(..., help="experiment spec (YAML)"), root: Path = ROOT_OPTION,
             plugin: list[Path] = PLUGIN_OPTION) -> None:
    """Check a spec without running it: every field (all problems at once), then what only the data can
    tell (the stream builds, strategies support it, models build, forget requests resolve)."""
    from .core.registry import KINDS
    try:
        s = _load(spec, plugin)
        kind = KINDS.get(s.kind).obj()
        from .run.store.db import ResultsDB
        db = ResultsDB(root, create=False) if (root / "results.sqlite").is_file() else None
        try:
            kind.preflight(s, db)
        finally:
            if db is not None:
                db.close()
    except PalimpsestError as err:
        _fail(err)
    console.print(f"{spec}: valid {s.kind} spec: {kind.describe(s)}")
    for line in kind.notes(s):
        console.print(line, highlight=False, markup=False)


@app.command()
def ls(kind: Optional[str] = typer.Argument(None, help="kinds, benchmarks, models, strategies, unlearners, "
                                                          "metrics, memory-policies, indexes, embedders or retrievers"),
       plugin: list[Path] = PLUGIN_OPTION) -> None:
    """List what palimpsest knows: experiment kinds, benchmarks, models, strategies, unlearners, metrics, and
    the agent-memory store's policies, vector indexes, embedders and retrievers."""
    from .core.plugins import load_plugin_file, load_plugins
    try:
        load_plugins()
        for p in plugin:
            load_plugin_file(p)
    except PalimpsestError as err:
        _fail(err)
    from .core.registry import DATASETS, KINDS, METRICS, MODELS, STRATEGIES, UNLEARNERS
    from .memory.registries import EMBEDDERS, MEMORY_POLICIES, RETRIEVERS, VECTOR_INDEXES
    sections = {"kinds": KINDS, "benchmarks": DATASETS, "models": MODELS, "strategies": STRATEGIES,
                "unlearners": UNLEARNERS, "metrics": METRICS, "memory-policies": MEMORY_POLICIES,
                "indexes": VECTOR_INDEXES, "embedders": EMBEDDERS, "retrievers": RETRIEVERS}
    if kind and kind not in sections:
        _fail(PalimpsestError(f"unknown listing {kind!r}", expected=", ".join(sections), got=kind))
    for name, reg in sections.items():
        if kind and kind != name:
            continue
        console.print(f"[bold]{name}[/]")
        for e in reg.entries():
            extra = ""
            if name == "benchmarks" and e.meta.get("n_classes"):
                extra = f" [dim]({e.meta['n_classes']} classes, input {tuple(e.meta.get('input_shape', ()))})[/]"
            console.print(f"  {e.name:<28} {e.summary}{extra}", highlight=False)
            if name == "strategies":
                _print_defaults(e)
    if not kind:
        console.print("[bold]scenarios[/]\n  class, task, domain (permutation | rotation); online_batch_size for "
                      "single-pass; recurrence {uniform | power_law}", highlight=False)


def _print_defaults(entry) -> None:
    from .learn.defaults import DEFAULTS
    fields = entry.obj.Config.model_fields
    if fields:
        base = ", ".join(f"{k}={v.default!r}" for k, v in fields.items())
        console.print(f"  {'':<28} [dim]defaults: {base}[/]", highlight=False)
    for pattern, values in DEFAULTS.get(entry.name, {}).items():
        tuned = ", ".join(f"{k}={v!r}" for k, v in values.items())
        console.print(f"  {'':<28} [dim]on {pattern}: {tuned}[/]", highlight=False)


@app.command()
def runs(root: Path = ROOT_OPTION) -> None:
    """List stored experiments."""
    from .run.store.db import ResultsDB
    if not (root / "results.sqlite").exists():
        console.print(f"no results database in {root}")
        return
    with ResultsDB(root, create=False) as db:
        for e in db.experiments():
            n = len(db.runs(e["id"])) if e["kind"] != "unlearn" else len(db.ledger(e["id"]))
            what = "ledger entries" if e["kind"] == "unlearn" else "runs"
            console.print(f"{e['id']:<40} {e['kind']:<8} {e['status']:<10} {n} {what}")


@app.command()
def report(run_id: Optional[str] = typer.Argument(None, help="experiment id (or prefix); default: the latest"),
           root: Path = ROOT_OPTION) -> None:
    """Print the table and write the HTML report of a stored experiment."""
    try:
        from .run.store.db import ResultsDB
        with ResultsDB(root, create=False) as db:
            exp_id = db.experiment(run_id)["id"]
        html = _report(root, exp_id)
        console.print(f"report: {html}")
    except PalimpsestError as err:
        _fail(err)


@app.command()
def export(run_id: Optional[str] = typer.Argument(None, help="experiment id (or prefix); default: the latest"),
           root: Path = ROOT_OPTION, out: Optional[Path] = typer.Option(None, help="output folder")) -> None:
    """Write a stored experiment's metrics, accuracy matrices and summary as CSV files."""
    try:
        from .report import export as export_tables
        from .run.store.db import ResultsDB
        with ResultsDB(root, create=False) as db:
            exp_id = db.experiment(run_id)["id"]
            paths = export_tables(db, exp_id, out or root / "reports" / exp_id)
        for p in paths:
            console.print(str(p))
    except PalimpsestError as err:
        _fail(err)


@app.command()
def forget(run_id: str = typer.Argument(..., help="a learning run: EXPERIMENT/STRATEGY/seedN (see `palimpsest runs`)"),
           classes: Optional[str] = typer.Option(None, help="forget these classes, e.g. 3 or 3,5"),
           fraction: Optional[float] = typer.Option(None, help="forget a random fraction of the training data"),
           indices: Optional[str] = typer.Option(None, help="forget these training-set indices, e.g. 1,5,9"),
           method: list[str] = typer.Option(["retrain"], "--method", help="unlearning method (repeatable)"),
           step: Optional[int] = typer.Option(None, help="the model after this training step (default: last)"),
           seed: int = typer.Option(0, help="seed of a random forget set"),
           root: Path = ROOT_OPTION) -> None:
    """Forget data from a stored model with one or more methods, audited against retraining."""
    try:
        from .forget.request import ForgetRequest
        from .run.kinds.unlearn import forget_from_run
        given = [k for k, v in (("classes", classes), ("fraction", fraction), ("indices", indices)) if v is not None]
        if len(given) != 1:
            raise PalimpsestError("say what to forget", expected="exactly one of --classes, --fraction, --indices",
                                  got=", ".join(given) or "none")
        ints = lambda text: [int(v) for v in text.split(",") if v.strip()]  # noqa: E731
        try:
            if classes is not None:
                request = ForgetRequest(kind="classes", classes=ints(classes))
            elif indices is not None:
                request = ForgetRequest(kind="indices", indices=ints(indices))
            else:
                request = ForgetRequest(kind="random", fraction=fraction, seed=seed)
        except ValueError as err:
            raise PalimpsestError("bad forget request", expected="integers separated by commas, or a fraction "
                                  "in (0, 1]", got=str(err).splitlines()[0]) from None
        from .core.registry import UNLEARNERS
        import palimpsest.forget  # noqa: F401
        for name in method:
            UNLEARNERS.get(name)
        from .run.store.db import ResultsDB
        ResultsDB(root, create=False).close()
        exp_id = forget_from_run(root, run_id, [request], [(m, m, {}) for m in method], step=step)
        html = _report(root, exp_id)
        console.print(f"ledger: experiment [bold]{exp_id}[/] in {root / 'results.sqlite'}")
        console.print(f"report: {html}")
    except PalimpsestError as err:
        _fail(err)


@app.command()
def audit(run_id: Optional[str] = typer.Argument(None, help="unlearning experiment id (or prefix); default: latest"),
          root: Path = ROOT_OPTION) -> None:
    """Print the ledger of an unlearning experiment (every entry: request, seed, method, status, audit
    numbers and verdict, or the error that ended it), then its summary over seeds."""
    try:
        from . import report as rp
        from .run.store.db import ResultsDB
        with ResultsDB(root, create=False) as db:
            exp = db.experiment(run_id)
            exp_id = exp["id"]
            if exp["kind"] != "unlearn":
                raise PalimpsestError(f"experiment {exp_id} is not an unlearning experiment",
                                      expected="an experiment made by `palimpsest forget` or an unlearning spec",
                                      got=exp_id, fix="use `palimpsest report` for learning experiments")
            from .report.unlearning import ledger_table
            console.print(ledger_table(db.ledger(exp_id), f"Ledger of {exp_id}"))
            rp.render_unlearning_table(rp.summarize_unlearning(db, exp_id), console=console)
    except PalimpsestError as err:
        _fail(err)


@app.command()
def doctor(root: Path = ROOT_OPTION, deep: bool = typer.Option(False, "--deep", help="also load every stored file"),
           reset_run: Optional[str] = typer.Option(None, "--reset-run", help="remove this run's records and files, so "
                                                  "`run SPEC --resume` trains it again")) -> None:
    """Check a results folder: database integrity, every stored file, crashed experiments, stray folders."""
    try:
        from .run.store.doctor import check
        from .run.store.doctor import reset_run as reset
        if reset_run:
            for item in reset(root, reset_run):
                console.print(f"removed {item}", highlight=False)
            return
        report = check(root, deep)
    except PalimpsestError as err:
        _fail(err)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    for problem in report.problems:
        err_console.print(f"problem: {problem}", style="red", highlight=False, markup=False)
    console.print(f"{root}: {'healthy' if report.healthy else f'{len(report.problems)} problem(s)'}")
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
def regress(full: bool = typer.Option(False, "--full", help="the full table (real data, minutes) instead of CI rows"),
            table: Path = typer.Option(Path("recipes/expected_results.csv"), help="expected results CSV"),
            root: Path = typer.Option(Path("palimpsest-results/regression"), "--root")) -> None:
    """Re-run recipes and compare with the expected-results table (two-sided bands)."""
    try:
        from .run.regression import check, outcome_lines, read_expectations
        if not table.is_file():
            raise PalimpsestError(f"no expected-results table at {table}", expected="a CSV file (recipes/"
                                  "expected_results.csv)", got=str(table), fix="pass --table with the file's path, or run "
                                  "from the repository root")
        rows = read_expectations(table)
        outcomes = check(rows, table.parent, root, budget="full" if full else "ci")
    except PalimpsestError as err:
        _fail(err)
    for line in outcome_lines(outcomes):
        console.print(line, highlight=False)
    failed = sum(not o.passed for o in outcomes)
    console.print(f"{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


# ---- palimpsest memory ...: the agent-memory store ------------------------------------------------

memory_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="An agent-memory store that forgets on purpose (docs/AGENT_MEMORY.md).")
app.add_typer(memory_app, name="memory")
STORE_OPTION = typer.Option(Path("palimpsest-memory.sqlite"), "--store", help="the memory store file")
USER_OPTION = typer.Option(None, "--user", help="user id (scope)")
AGENT_OPTION = typer.Option(None, "--agent", help="agent id (scope)")
RUN_OPTION = typer.Option(None, "--run", help="run id (scope)")
JSON_OPTION = typer.Option(False, "--json", help="print JSON instead of lines")


def _pairs(items: Optional[list[str]], option: str) -> dict:
    """`key=value` options as a dict; values that read as JSON numbers, true/false or null become those."""
    import json
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PalimpsestError(f"bad {option} {item!r}", expected="key=value", got=item,
                                  fix=f"e.g. {option} topic=food")
        try:
            parsed = json.loads(value)
            out[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value
        except ValueError:
            out[key.strip()] = value
    return out


def _store(path: Path, create: bool = False, **kwargs):
    from .memory.store import MemoryStore
    return MemoryStore(path, create=create, **kwargs)


def _show(memories, as_json: bool) -> None:
    import json
    if as_json:
        console.print_json(json.dumps([m.to_dict() for m in memories]))
        return
    for m in memories:
        scope = " ".join(f"{k}={v}" for k, v in (("user", m.user_id), ("agent", m.agent_id), ("run", m.run_id)) if v)
        score = f"{m.score:.4f}  " if m.score is not None else ""
        console.print(f"{m.id}  {score}{m.text}  [dim]{scope} strength={m.strength:g} recalls={m.recalls}"
                      f"{' ' + str(m.metadata) if m.metadata else ''}[/]", highlight=False)


@memory_app.command("add")
def memory_add(text: str = typer.Argument(..., help="the memory's text"), user: Optional[str] = USER_OPTION,
               agent: Optional[str] = AGENT_OPTION, run: Optional[str] = RUN_OPTION,
               meta: Optional[list[str]] = typer.Option(None, "--meta", help="metadata key=value (repeatable)"),
               policy: Optional[str] = typer.Option(None, help="forgetting policy (remembered by the store)"),
               setting: Optional[list[str]] = typer.Option(None, "--setting", help="policy setting key=value"),
               embedder: Optional[str] = typer.Option(None, help="embedder of a new store (default hashing)"),
               store: Path = STORE_OPTION) -> None:
    """Add a memory (identical text in the same scope reinforces the stored one)."""
    try:
        settings = _pairs(setting, "--setting") if setting else None
        with _store(store, create=True, policy=policy, policy_settings=settings, embedder=embedder) as s:
            m = s.add(text, user_id=user, agent_id=agent, run_id=run, metadata=_pairs(meta, "--meta"))
        console.print(f"{m.event} {m.id}", highlight=False)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("search")
def memory_search(query: str = typer.Argument(..., help="what to look for"), user: Optional[str] = USER_OPTION,
                  agent: Optional[str] = AGENT_OPTION, run: Optional[str] = RUN_OPTION,
                  filter: Optional[list[str]] = typer.Option(None, "--filter", help="metadata key=value (repeatable)"),
                  limit: int = typer.Option(5, help="how many memories"),
                  retriever: Optional[str] = typer.Option(None, help="hybrid (default), dense or bm25"),
                  no_reinforce: bool = typer.Option(False, "--no-reinforce", help="do not strengthen what is found"),
                  as_json: bool = JSON_OPTION, store: Path = STORE_OPTION) -> None:
    """Search memories, best first (what is found is reinforced unless --no-reinforce)."""
    try:
        with _store(store) as s:
            found = s.search(query, user_id=user, agent_id=agent, run_id=run, filters=_pairs(filter, "--filter") or None,
                             limit=limit, retriever=retriever, reinforce=not no_reinforce)
        _show(found, as_json)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("get")
def memory_get(memory_id: str = typer.Argument(..., help="memory id"), as_json: bool = JSON_OPTION,
               store: Path = STORE_OPTION) -> None:
    """Show one memory."""
    try:
        with _store(store) as s:
            _show([s.get(memory_id)], as_json)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("list")
def memory_list(user: Optional[str] = USER_OPTION, agent: Optional[str] = AGENT_OPTION, run: Optional[str] = RUN_OPTION,
                filter: Optional[list[str]] = typer.Option(None, "--filter", help="metadata key=value (repeatable)"),
                as_json: bool = JSON_OPTION, store: Path = STORE_OPTION) -> None:
    """List memories (of a scope), oldest first."""
    try:
        with _store(store) as s:
            _show(s.get_all(user_id=user, agent_id=agent, run_id=run, filters=_pairs(filter, "--filter") or None),
                  as_json)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("update")
def memory_update(memory_id: str = typer.Argument(..., help="memory id"),
                  text: str = typer.Argument(..., help="the new text"),
                  meta: Optional[list[str]] = typer.Option(None, "--meta", help="metadata key=value (repeatable)"),
                  store: Path = STORE_OPTION) -> None:
    """Replace a memory's text (its id stays; the history keeps the old text)."""
    try:
        with _store(store) as s:
            m = s.update(memory_id, text, metadata=_pairs(meta, "--meta") or None)
        console.print(f"UPDATE {m.id}", highlight=False)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("delete")
def memory_delete(memory_id: Optional[str] = typer.Argument(None, help="memory id"),
                  all_: bool = typer.Option(False, "--all", help="delete every memory of the scope given"),
                  user: Optional[str] = USER_OPTION, agent: Optional[str] = AGENT_OPTION,
                  run: Optional[str] = RUN_OPTION, store: Path = STORE_OPTION) -> None:
    """Delete one memory, or with --all every memory of a scope (--user/--agent/--run)."""
    try:
        if (memory_id is None) == (not all_):
            raise PalimpsestError("say what to delete", expected="a memory id, or --all with --user/--agent/--run",
                                  got=f"id {memory_id!r}, --all {all_}")
        with _store(store) as s:
            if all_:
                console.print(f"DELETE {s.delete_all(user_id=user, agent_id=agent, run_id=run)} memories")
            else:
                s.delete(memory_id)
                console.print(f"DELETE {memory_id}", highlight=False)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("history")
def memory_history(memory_id: str = typer.Argument(..., help="memory id"), as_json: bool = JSON_OPTION,
                   store: Path = STORE_OPTION) -> None:
    """Every change of one memory, oldest first."""
    import json
    try:
        with _store(store) as s:
            rows = s.history(memory_id)
        if as_json:
            console.print_json(json.dumps(rows))
        for r in [] if as_json else rows:
            change = r["new_text"] if r["old_text"] is None else (
                f"{r['old_text']} -> {r['new_text']}" if r["new_text"] not in (None, r["old_text"]) else r["old_text"])
            console.print(f"{r['seq']:>6} {r['event']:<11} at {r['at']:.0f}  {change or ''}", highlight=False)
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("forget")
def memory_forget(user: Optional[str] = USER_OPTION, agent: Optional[str] = AGENT_OPTION,
                  run: Optional[str] = RUN_OPTION, store: Path = STORE_OPTION) -> None:
    """Run the store policy's forgetting pass now (e.g. daily from cron)."""
    try:
        with _store(store) as s:
            gone = s.forget(user_id=user, agent_id=agent, run_id=run)
        console.print(f"FORGET {len(gone)} memories ({s.policy.name})")
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("reset")
def memory_reset(yes: bool = typer.Option(False, "--yes", help="really remove every memory"),
                 store: Path = STORE_OPTION) -> None:
    """Remove every memory of the store (the history keeps them)."""
    try:
        if not yes:
            raise PalimpsestError("reset removes every memory of the store", expected="--yes to confirm",
                                  got="no --yes", fix=f"palimpsest memory reset --yes --store {store}")
        with _store(store) as s:
            console.print(f"RESET {s.reset()} memories")
    except PalimpsestError as err:
        _fail(err)


@memory_app.command("curves")
def memory_curves(out: Path = typer.Option(Path("memory-curves.html"), "--out", help="HTML page to write")) -> None:
    """Write a page with MemoryBank's forgetting curve as published and as corrected, side by side."""
    from .report.agent_memory import write_memory_page
    console.print(f"page: {write_memory_page(out)}")


@app.command()
def compare(experiments: list[str] = typer.Argument(..., help="experiments to compare: id, unique id prefix or name "
                                                    "(the latest of that name); ROOT:ID for another results folder. "
                                                    "The first is the baseline A"),
            root: Path = ROOT_OPTION,
            metric: list[str] = typer.Option([], "--metric", help="metric to compare (repeatable), e.g. forgetting or "
                                             "forgetting/task; default: final average accuracy, final example "
                                             "accuracy and forgetting (unlearning: forget, retain and test accuracy, "
                                             "avg gap)"),
            confidence: float = typer.Option(0.95, "--confidence", help="level of the t interval"),
            out: Optional[Path] = typer.Option(None, "--out", help="the HTML page (or its folder); the CSVs go beside "
                                               "it; default: ROOT/reports/compare-A-vs-B/compare.html")) -> None:
    """Compare experiments strategy by strategy: paired per-seed differences against the first, with a t
    interval and an exact sign test, and the settings that differ. Reads the store, writes only the page
    and its CSVs (docs/COMPARE.md)."""
    try:
        from .report.compare import compare_experiments, render_comparison, write_comparison
        comparison = compare_experiments(experiments, root, metric, confidence)
        render_comparison(comparison, console)
        page, table, settings = write_comparison(comparison, out)
    except PalimpsestError as err:
        _fail(err)
    console.print(f"page: {page}\ncsv: {table}, {settings}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted: finished steps are stored; continue with --resume")
        sys.exit(130)
    except PalimpsestError as err:   # raised outside a command's own handling
        err_console.print(f"error: {err}", style="red", highlight=False, markup=False)
        sys.exit(2)
    except OSError as err:           # the disk, not palimpsest: say which file and why
        err_console.print(f"error: {err.strerror or err} ({err.filename or 'no file named'})", style="red",
                          highlight=False, markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
