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


def _load(spec: Optional[Path]):
    from .run.spec import load_spec
    path = spec or quickstart_path()
    if spec is None:
        console.print(f"No spec given: running the built-in quickstart ({path.name}).")
    return load_spec(path)


def _report(root: Path, exp_id: str, show_table: bool = True) -> Path:
    """The kind's tables in the terminal, the HTML report and the CSV files: one path for every kind."""
    from . import report as rp
    from .run.store.db import ResultsDB
    with ResultsDB(root, create=False) as db:
        out = root / "reports" / exp_id
        if show_table:
            rp.render_summary(db, exp_id, console)
        html = rp.write_report(db, exp_id, out / "report.html")
        rp.export(db, exp_id, out)
        return html


@app.command()
def run(spec: Optional[Path] = typer.Argument(None, help="experiment spec (YAML); default: the quickstart"),
        root: Path = ROOT_OPTION,
        resume: bool = typer.Option(False, "--resume", help="continue the latest unfinished experiment of this spec"),
        seeds: Optional[str] = typer.Option(None, help="override the spec's seeds, e.g. 0,1,2"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars")) -> None:
    """Run an experiment: train every strategy x seed, store results, print a table, write a report."""
    try:
        from .core.seeding import configure_torch
        from .run.runner import run_experiment
        s = _load(spec)
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
            s = parse_spec({**s.model_dump(mode="json"), "seeds": seed_list}, f"{spec or 'quickstart'} with --seeds")
        configure_torch()
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
def validate(spec: Path = typer.Argument(..., help="experiment spec (YAML)"), root: Path = ROOT_OPTION) -> None:
    """Check a spec without running it: every field (all problems at once), then what only the data can
    tell (the stream builds, strategies support it, models build, forget requests resolve)."""
    from .core.registry import KINDS
    try:
        s = _load(spec)
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


@app.command()
def ls(kind: Optional[str] = typer.Argument(None, help="kinds, benchmarks, models, strategies, unlearners, "
                                                          "metrics or memory")) -> None:
    """List what palimpsest knows: experiment kinds, benchmarks, models, strategies, unlearners, metrics and
    memory layers."""
    from .core.plugins import load_plugins
    load_plugins()
    from . import memory  # noqa: F401  (registers the memory layers)
    from .core.registry import DATASETS, KINDS, MEMORY_LAYERS, METRICS, MODELS, STRATEGIES, UNLEARNERS
    sections = {"kinds": KINDS, "benchmarks": DATASETS, "models": MODELS, "strategies": STRATEGIES,
                "unlearners": UNLEARNERS, "metrics": METRICS, "memory": MEMORY_LAYERS}
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
    """Print the ledger of an unlearning experiment: every request, method, status and audit."""
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
            rp.render_unlearning_table(rp.summarize_unlearning(db, exp_id), console=console)
            for e in db.ledger(exp_id):
                if e["status"] != "finished":
                    console.print(f"{e['id']}: {e['status']}" + (f" ({e['error'].splitlines()[-1]})"
                                                                  if e["error"] else ""))
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
