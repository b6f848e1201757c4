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
    from .report import export_csv, render_table, summarize, write_html_report
    from .run.db import ResultsDB
    db = ResultsDB(root)
    try:
        out = root / "reports" / exp_id
        if show_table:
            render_table(summarize(db, exp_id), console=console)
        html = write_html_report(db, exp_id, out / "report.html")
        export_csv(db, exp_id, out)
        return html
    finally:
        db.close()


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
        if seeds:
            try:
                seed_list = [int(x) for x in seeds.split(",") if x.strip()]
            except ValueError:
                raise PalimpsestError("bad --seeds", expected="integers separated by commas, e.g. 0,1,2",
                                      got=seeds) from None
            s = s.model_copy(update={"seeds": seed_list})
        configure_torch()
        exp_id = run_experiment(s, root=root, resume=resume, progress=not no_progress)
        html = _report(root, exp_id)
        console.print(f"experiment [bold]{exp_id}[/] stored in {root / 'results.sqlite'}")
        console.print(f"report: {html}")
    except PalimpsestError as err:
        _fail(err)


@app.command()
def validate(spec: Path = typer.Argument(..., help="experiment spec (YAML)")) -> None:
    """Check a spec without running it; every problem is listed at once."""
    try:
        s = _load(spec)
    except PalimpsestError as err:
        _fail(err)
    console.print(f"{spec}: valid ({len(s.strategies)} strategies x {len(s.seeds)} seeds on "
                  f"{s.benchmark.dataset}, {s.benchmark.scenario}-incremental)")


@app.command()
def ls(kind: Optional[str] = typer.Argument(None, help="benchmarks, models, strategies or metrics")) -> None:
    """List what palimpsest knows: benchmarks, models, strategies and metrics, one line each."""
    import palimpsest.data.datasets  # noqa: F401
    import palimpsest.evaluate.metrics  # noqa: F401
    import palimpsest.learn  # noqa: F401
    import palimpsest.models  # noqa: F401
    from .core.registry import DATASETS, METRICS, MODELS, STRATEGIES
    sections = {"benchmarks": DATASETS, "models": MODELS, "strategies": STRATEGIES, "metrics": METRICS}
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
    from .run.db import ResultsDB
    if not (root / "results.sqlite").exists():
        console.print(f"no results database in {root}")
        return
    db = ResultsDB(root)
    for e in db.experiments():
        n = len(db.runs(e["id"]))
        console.print(f"{e['id']:<40} {e['status']:<10} {n} runs")
    db.close()


@app.command()
def report(run_id: Optional[str] = typer.Argument(None, help="experiment id (or prefix); default: the latest"),
           root: Path = ROOT_OPTION) -> None:
    """Print the table and write the HTML report of a stored experiment."""
    try:
        from .run.db import ResultsDB
        db = ResultsDB(root)
        exp_id = db.experiment(run_id)["id"]
        db.close()
        html = _report(root, exp_id)
        console.print(f"report: {html}")
    except PalimpsestError as err:
        _fail(err)


@app.command()
def export(run_id: Optional[str] = typer.Argument(None, help="experiment id (or prefix); default: the latest"),
           root: Path = ROOT_OPTION, out: Optional[Path] = typer.Option(None, help="output folder")) -> None:
    """Write a stored experiment's metrics, accuracy matrices and summary as CSV files."""
    try:
        from .report import export_csv
        from .run.db import ResultsDB
        db = ResultsDB(root)
        exp_id = db.experiment(run_id)["id"]
        paths = export_csv(db, exp_id, out or root / "reports" / exp_id)
        db.close()
        for p in paths:
            console.print(str(p))
    except PalimpsestError as err:
        _fail(err)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted: finished steps are stored; continue with --resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
