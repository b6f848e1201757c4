"""The guides in docs/guides/ run as written, in an empty folder, block by block.

A guide's fenced blocks say what they are in their info string:

    ```python file=my_strategy.py```   a file to write (any language; the path is relative to the folder)
    ```bash```                         commands to run, each must succeed
    ```bash fails```                   commands to run, each must fail with a clear error (no traceback)
    ```python```                       a snippet to execute
    ```text output```                  what the commands (or snippet) just before it print; every
                                       line must appear in that output (spacing and wrapping aside)
    ```text```, ```markdown```         shown only

Every command runs as a fresh `palimpsest` process would: the registries are reset to the built-in
entries and no plugin file or package is loaded yet. `palimpsest` runs in this process (typer's
CliRunner), `pip install` installs into a folder of the test (`--target`, offline), `pytest` runs
in this process too. The strategy guide's test is issue 10's done-when: someone who has never seen
palimpsest writes a strategy and runs it from the CLI by following the guide alone.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).parents[1]
GUIDES = ROOT / "docs" / "guides"
SHOWN = {"text", "markdown", "console"}


@dataclass
class Block:
    lang: str
    flags: set[str]
    attrs: dict[str, str]
    text: str
    line: int


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with their info strings parsed."""
    out, current, body = [], None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```") and current is None:
            words = line[3:].split()
            current = Block(words[0] if words else "", {w for w in words[1:] if "=" not in w},
                            dict(w.split("=", 1) for w in words[1:] if "=" in w), "", number)
            body = []
        elif line.startswith("```"):
            current.text = "\n".join(body) + "\n"
            out.append(current)
            current = None
        elif current is not None:
            body.append(line)
    assert current is None, f"{path.name}: a block opened at line {current.line} is not closed"
    return out


def squash(text: str) -> str:
    return "".join(text.split())


def registries():
    spec = importlib.util.spec_from_file_location("spec_reference", ROOT / "scripts" / "spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load_everything()
    return [r for r, _ in module.registries()]


@dataclass
class Guide:
    """Runs one guide's blocks in `folder`; `outputs` keeps what each command block printed."""

    folder: Path
    monkeypatch: pytest.MonkeyPatch
    site: Path = None
    outputs: list[str] = field(default_factory=list)

    def __post_init__(self):
        from palimpsest.core import plugins
        self.site = self.folder / "site-packages"
        self.registries = registries()
        self.baseline = {id(r): dict(r._entries) for r in self.registries}
        self.plugins = plugins
        self.monkeypatch.chdir(self.folder)
        self.monkeypatch.syspath_prepend(str(self.folder))
        self.monkeypatch.setenv("COLUMNS", "200")

    # -- a fresh process -----------------------------------------------------------------------
    def fresh(self) -> None:
        for r in self.registries:
            r._entries.clear()
            r._entries.update(self.baseline[id(r)])
        self.plugins._files.clear()
        self.plugins._loaded = None
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if origin and Path(origin).resolve().is_relative_to(self.folder.resolve()):
                del sys.modules[name]
        importlib.invalidate_caches()

    def close(self) -> None:
        self.fresh()

    # -- commands ------------------------------------------------------------------------------
    def command(self, line: str) -> tuple[int, str]:
        args = shlex.split(line)
        program, args = args[0], args[1:]
        if program == "palimpsest":
            from palimpsest.cli import app
            self.fresh()
            result = CliRunner().invoke(app, args)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            return result.exit_code, result.output
        if program == "pip":
            assert args[0] == "install", line
            out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                  "--no-index", "--target", str(self.site), *args[1:]], capture_output=True, text=True,
                                 timeout=120)
            self.monkeypatch.syspath_prepend(str(self.site))
            self.fresh()
            return out.returncode, out.stdout + out.stderr
        if program == "python":
            self.fresh()
            buffer = io.StringIO()
            self.monkeypatch.setattr(sys, "argv", args)
            code = 0
            with contextlib.redirect_stdout(buffer):
                try:
                    runpy.run_path(args[0], run_name="__main__")
                except SystemExit as stop:
                    code = stop.code or 0
            return code, buffer.getvalue()
        if program == "pytest":   # in this process (a fresh interpreter would spend seconds importing torch)
            self.fresh()
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                code = pytest.main(["-p", "no:cacheprovider", "--rootdir", str(self.folder), *args])
            return int(code), buffer.getvalue()
        if program == "mkdir":
            for d in (a for a in args if a != "-p"):
                Path(d).mkdir(parents=True, exist_ok=True)
            return 0, ""
        if program == "cp":
            shutil.copy(args[0], args[1])
            return 0, ""
        raise AssertionError(f"the guides' commands are palimpsest, pip, python, pytest, mkdir and cp; got {line!r}")

    def run(self, block: Block, where: str) -> None:
        lines, pending = [], ""
        for raw in block.text.splitlines():
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            raw, pending = pending + raw, ""
            if raw.strip() and not raw.strip().startswith("#"):
                lines.append(raw.strip())
        printed = []
        for line in lines:
            code, out = self.command(line)
            printed.append(out)
            if "fails" in block.flags:
                assert code != 0, f"{where}: `{line}` was expected to fail but succeeded:\n{out}"
                assert "error" in out and "Traceback" not in out, f"{where}: `{line}` failed unclearly:\n{out}"
            else:
                assert code == 0, f"{where}: `{line}` failed with exit code {code}:\n{out}"
        self.outputs.append("\n".join(printed))

    def execute(self, block: Block, where: str) -> None:
        self.fresh()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(block.text, where, "exec"), {"__name__": "__main__"})
        self.outputs.append(buffer.getvalue())

    def follow(self, guide: Path) -> "Guide":
        for block in blocks(guide):
            where = f"{guide.name}:{block.line}"
            if "file" in block.attrs:
                path = self.folder / block.attrs["file"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.text, encoding="utf-8")
            elif block.lang == "bash":
                self.run(block, where)
            elif block.lang == "python":
                self.execute(block, where)
            elif block.lang in SHOWN and "output" in block.flags:
                assert self.outputs, f"{where}: an output block before any command"
                printed = squash(self.outputs[-1])
                for expected in block.text.splitlines():
                    if expected.strip() and expected.strip() != "...":
                        assert squash(expected) in printed, \
                            f"{where}: {expected.strip()!r} is not in what was printed:\n{self.outputs[-1]}"
            else:
                assert block.lang in SHOWN, f"{where}: a ```{block.lang}``` block is neither run nor written"
        return self


@pytest.fixture
def follow(tmp_path, monkeypatch):
    runs = []

    def go(name: str) -> Guide:
        guide = Guide(tmp_path, monkeypatch)
        runs.append(guide)
        return guide.follow(GUIDES / name)

    yield go
    for guide in runs:
        guide.close()


def summary(root: Path, name: str) -> dict[str, dict]:
    """{strategy label: metrics (mean over seeds)} of the experiment called `name` in `root`."""
    from palimpsest.run.store.db import ResultsDB
    from palimpsest.run.summary import summarize_runs
    with ResultsDB(root, create=False) as db:
        exp = next(e for e in db.experiments() if e["id"].startswith(name + "-"))
        return {row["strategy"]: row for row in summarize_runs(db, exp["id"])}


def test_the_strategy_guide_runs_a_new_strategy_from_the_cli(follow):
    guide = follow("strategy.md")
    rows = summary(guide.folder / "results", "lfl_digits")
    assert set(rows) == {"naive", "lfl"} and all(r["n_seeds"] == 2 for r in rows.values())
    forgetting = {k: r["metrics"]["forgetting/class"]["mean"] for k, r in rows.items()}
    assert forgetting["lfl"] < forgetting["naive"] - 0.03, forgetting   # the paper's claim, on permuted digits
    guide.close()
    from palimpsest.core.registry import STRATEGIES
    assert "lfl" not in STRATEGIES   # registrations end with their command, as with a process
    print(guide.outputs[2])


def test_the_unlearner_guide_forgets_with_a_new_method(follow):
    guide = follow("unlearner.md")
    from palimpsest.run.store.db import ResultsDB
    with ResultsDB(guide.folder / "results", create=False) as db:
        ledgers = [(e["name"], {x["label"]: x for x in db.ledger(e["id"])})
                   for e in db.experiments() if e["kind"] == "unlearn"]
    assert [name for name, _ in ledgers] == ["forget", "forget", "forget_digits"]   # two commands, one spec
    assert "l1_sparse" in ledgers[1][1] and "finetune" in ledgers[0][1]
    spec = ledgers[2][1]
    assert all(e["status"] == "finished" for e in spec.values()), spec
    audit = {label: e["audit"] for label, e in spec.items()}
    # the paper's claim on digits: the l1 penalty takes fine-tuning to the retrained model
    assert audit["retrain"]["forget_accuracy"] < 0.05
    assert audit["l1_sparse"]["forget_accuracy"] < audit["finetune"]["forget_accuracy"] - 0.5, audit
    assert audit["l1_sparse"]["avg_gap"] < audit["finetune"]["avg_gap"] / 3, audit


def test_the_metric_guide_adds_a_metric_to_every_run(follow):
    guide = follow("metric.md")
    rows = summary(guide.folder / "results", "min_acc_digits")
    value = {k: r["metrics"]["min_accuracy/class"]["mean"] for k, r in rows.items()}
    final = {k: r["metrics"]["final_average_accuracy/class"]["mean"] for k, r in rows.items()}
    assert value["naive"] < 0.05 and 0.5 < value["er"] < final["er"] + 0.1, (value, final)
    csv = next((guide.folder / "results" / "reports").glob("min_acc_digits-*/metrics.csv")).read_text()
    assert "min_accuracy/class" in csv


def test_a_metric_that_needs_what_runs_do_not_store_is_a_clear_error():
    from palimpsest.core.errors import ConfigError
    from palimpsest.core.registry import METRICS
    from palimpsest.evaluate.metrics import registered_metrics
    from palimpsest.evaluate.records import RunRecord
    record = RunRecord("naive", 0, {"class": np.eye(2)}, [[0], [1]])
    METRICS.register("guide_typo_metric", needs=("accuracy",))(lambda acc: 0.0)
    try:
        with pytest.raises(ConfigError, match="did you mean 'acc'"):
            registered_metrics(record, "class", record.acc["class"])
    finally:
        METRICS._entries.pop("guide_typo_metric")


def test_the_dataset_guide_loads_a_new_format(follow):
    guide = follow("dataset.md")
    rows = summary(guide.folder / "results", "optdigits")
    assert set(rows) == {"naive", "er"} and all(r["n_seeds"] == 1 for r in rows.values())
    final = {k: r["metrics"]["final_average_accuracy/class"]["mean"] for k, r in rows.items()}
    assert final["er"] > final["naive"] + 0.2, final   # the loaded data makes a real class-incremental stream


def test_every_guide_is_tested_and_linked():
    names = sorted(p.name for p in GUIDES.glob("*.md"))
    assert names == ["continual.md", "dataset.md", "metric.md", "strategy.md", "unlearner.md"]
    readme = (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for name in names:
        assert f"docs/guides/{name}" in readme and f"guides/{name}" in architecture, name


def test_the_continual_guide_runs_compares_and_resumes(follow):
    guide = follow("continual.md")
    root = guide.folder / "results"
    from palimpsest.run.store.db import ResultsDB
    with ResultsDB(root, create=False) as db:
        experiments = [e for e in db.experiments() if e["name"] == "split_digits"]
        assert len(experiments) == 1 and experiments[0]["status"] == "finished"   # resumed, not started again
    rows = summary(root, "split_digits")
    final = {k: r["metrics"]["final_average_accuracy/class"]["mean"] for k, r in rows.items()}
    assert final["naive"] < 0.3 and final["er"] > final["naive"] + 0.3 and final["joint"] > final["er"], final
    import csv
    compared = next((root / "reports").glob("compare-split_digits-*-vs-split_digits_b200-*/compare.csv"))
    before = next(r for r in csv.DictReader(compared.open()) if r["metric"] == "final_average_accuracy/class")
    assert float(before["mean_a"]) == pytest.approx(final["er"], abs=1e-12)   # retrained after the reset: the same


def test_the_guides_links_lead_somewhere():
    import re
    for guide in GUIDES.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", guide.read_text(encoding="utf-8")):
            assert (guide.parent / target).exists(), f"{guide.name}: a link to {target}, which does not exist"
