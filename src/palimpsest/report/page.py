"""One HTML page skeleton for every experiment kind, and the registry of report parts.

A kind names the tables and figures its report shows (`ExperimentKind.tables` / `.figures`); each
name is a registered part here. A table part renders in the terminal, as an HTML section and as
CSV files; a figure part renders an HTML section. `write_report` builds the page of any stored
experiment from its kind's parts: there is one report path, whatever the kind.

The page is self-contained (PNG figures embedded as base64, no external CSS, JS, fonts or
images), so it can be mailed, archived or opened offline. `write_report` also writes every figure
as PNG and SVG files into `figures/` beside the page (linked from each caption, for papers and
slides) and every table as CSV: the page reads alone, the folder carries the files.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.registry import KINDS, Registry
from ..run.store.db import ResultsDB

DPI = 90
PARTS = Registry("report part")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; }
table.summary { border-collapse: collapse; font-size: 0.92em; margin: 0.5em 0; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
table.summary th { background: #f3f3f3; }
table.summary td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.summary caption { caption-side: bottom; text-align: left; color: #555; font-size: 0.9em;
                        padding-top: 0.4em; max-width: 1100px; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #8a5a00; }
.downloads { white-space: nowrap; margin-left: 0.5em; }
.downloads a { color: #1a5fb4; }
table.settings td, table.settings th { text-align: left; }
div.wide { max-width: 100%; overflow-x: auto; }
"""


@dataclass
class TablePart:
    """A table of a kind's report: in the terminal, in HTML, as CSV files."""

    summarize: Callable[[ResultsDB, str], list[dict]]
    terminal: Callable          # (summary, console) -> rich Table, printed
    text: Callable              # (summary) -> plain text
    html: Callable              # (db, exp, summary, cache) -> HTML section
    csv: Callable               # (db, exp_id, out_dir) -> [paths]


# Where `figure_html` writes figure files while `write_report` builds a page (None: links left out).
_FIGURE_DIR: ContextVar[Path | None] = ContextVar("palimpsest_figure_dir", default=None)


def _bytes(fig: Figure, fmt: str) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI)
    return buffer.getvalue()


def png(fig: Figure) -> str:
    return base64.b64encode(_bytes(fig, "png")).decode("ascii")


def slug(text: str) -> str:
    """A file name from a title: "Class-IL accuracy matrices" -> "class-il-accuracy-matrices"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def figure_html(fig: Figure | None, alt: str, caption: str) -> str:
    """The figure as an embedded PNG with its caption. Inside `write_report`, the figure is also
    written as `figures/<name>.png` and `.svg` beside the page, and the caption links both."""
    e = html.escape
    if fig is None:
        return f'<p class="note">{e(alt)}: no data to plot.</p>'
    image = _bytes(fig, "png")
    links = ""
    folder = _FIGURE_DIR.get()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        name, n = slug(alt), 2
        while (folder / f"{name}.png").exists():   # two figures with one title: name-2, name-3, ...
            name, n = f"{slug(alt)}-{n}", n + 1
        (folder / f"{name}.png").write_bytes(image)
        (folder / f"{name}.svg").write_bytes(_bytes(fig, "svg"))
        href = f"{folder.name}/{name}"
        links = (f' <span class="downloads">Download: <a href="{e(href)}.png">PNG</a> · '
                 f'<a href="{e(href)}.svg">SVG</a></span>')
    return (f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(image).decode("ascii")}">'
            f'<figcaption>{e(caption)}{links}</figcaption></figure>')


def page(title: str, meta: str, sections: list[str], spec_yaml: str = "", files: list[Path] | None = None) -> str:
    """The page: a title, a line of facts (HTML), the sections, links to the data files written
    beside it (relative, so the folder can be moved), then the spec that made it. Every table
    scrolls sideways inside its own box when the window is narrower than it: the page never does."""
    e = html.escape
    sections = [re.sub(r"</table>", "</table></div>", re.sub(r"<table\b", '<div class="wide"><table', s))
                for s in sections]
    data = []
    if files:
        items = "".join(f'<li><a href="{e(f.name)}">{e(f.name)}</a></li>' for f in files)
        data = ["<h2>Data</h2>", "<p>Every number on this page, as CSV files written next to it:</p>",
                f"<ul>{items}</ul>"]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>", f'<p class="meta">{meta}</p>', *sections, *data,
        "<h2>Spec</h2>", "<details><summary>The spec as run (every default filled in)</summary>",
        f"<pre>{e(spec_yaml)}</pre></details>", "</body></html>"])


def kind_of(exp: dict):
    import palimpsest.run.kinds  # noqa: F401  (registers the kinds)
    return KINDS.get(exp.get("kind") or "learn").obj


def parts_of(exp: dict) -> tuple[list[TablePart], list[Callable]]:
    """The kind's table and figure parts for this experiment (a kind may order them by its spec,
    e.g. task-IL first in a task-incremental experiment)."""
    import palimpsest.report  # noqa: F401  (registers the parts)
    tables, figures = kind_of(exp).report_parts(exp)
    return [PARTS.get(n).obj for n in tables], [PARTS.get(n).obj for n in figures]


def write_report(db: ResultsDB, exp_id: str | None, path: str | Path) -> Path:
    """Write the self-contained HTML report of a stored experiment (any kind), with its tables as
    CSV files beside it (linked from the page), and return the page's path."""
    exp = db.experiment(exp_id)
    tables, figures = parts_of(exp)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [p for t in tables for p in t.csv(db, exp["id"], out.parent)]
    cache: dict = {}
    folder = out.parent / "figures"
    for old in [*folder.glob("*.png"), *folder.glob("*.svg")]:   # a rewritten report: no stale figures
        old.unlink()
    token = _FIGURE_DIR.set(folder)
    try:
        sections = [t.html(db, exp, t.summarize(db, exp["id"]), cache) for t in tables]
        summary = tables[0].summarize(db, exp["id"]) if tables else []
        sections += [f(db, exp, summary, cache) for f in figures]
    finally:
        _FIGURE_DIR.reset(token)
    created = datetime.datetime.fromtimestamp(exp["created"]).strftime("%Y-%m-%d %H:%M") if exp.get("created") else "?"
    e = html.escape
    meta = (f"{e(exp['kind'])} experiment <code>{e(exp['id'])}</code> · status {e(str(exp['status']))} · "
            f"created {e(created)}")
    out.write_text(page(f"palimpsest report: {exp['name']}", meta, sections, exp.get("spec_yaml") or "", files),
                   encoding="utf-8")
    return out


def render_summary(db: ResultsDB, exp_id: str, console=None):
    """Print the kind's tables of a stored experiment in the terminal."""
    exp = db.experiment(exp_id)
    tables, _ = parts_of(exp)
    for t in tables:
        t.terminal(t.summarize(db, exp["id"]), console)


def export(db: ResultsDB, exp_id: str, out_dir: str | Path) -> list[Path]:
    """Every table of the kind as CSV files in `out_dir`."""
    exp = db.experiment(exp_id)
    tables, _ = parts_of(exp)
    return [p for t in tables for p in t.csv(db, exp["id"], out_dir)]


__all__ = ["PARTS", "STYLE", "TablePart", "export", "figure_html", "page", "png", "render_summary", "slug", "write_report"]
