"""The worked examples in docs/ run as written (each in an empty working directory)."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["KINDS.md", "STORE.md", "MEMORY.md"])
def test_worked_examples_run(name, tmp_path, monkeypatch, capsys):
    from palimpsest.core.registry import KINDS
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(name)
    assert blocks, f"{name} has no worked example"
    try:
        for block in blocks:
            exec(compile(block, name, "exec"), {"__name__": f"docs_{name}"})
    finally:
        KINDS._entries.pop("lr_sweep", None)
    out = capsys.readouterr().out
    assert out.strip()
    if name == "KINDS.md":
        accuracies = [float(line.split()[-1]) for line in out.strip().splitlines()]
        assert len(accuracies) == 2 and max(accuracies) > 0.8
    elif name == "MEMORY.md":
        assert "two calls equal one: True" in out and "paths agree: True" in out and "chunk size does not divide" in out
        assert all(f"{n} (2, 32, 32) two calls equal one: True" in out for n in ("titans_mac", "titans_mag", "titans_mal"))
    else:
        assert "int32" in out and "1 stream(s) for 2 runs" in out


def test_the_compare_guide_runs(tmp_path, monkeypatch, capsys):
    """docs/COMPARE.md: the Python example, then its `palimpsest compare` line, in an empty folder."""
    import shlex

    from typer.testing import CliRunner

    from palimpsest.cli import app
    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks("COMPARE.md")
    exec(compile(block, "COMPARE.md", "exec"), {"__name__": "docs_compare"})
    out = capsys.readouterr().out
    assert "Paired differences, B − A" in out and "strategies.er.settings.buffer_size" in out
    line = next(line for line in out.splitlines() if line.startswith("er final accuracy"))
    assert line.endswith("pairs: [0, 1, 2]")
    assert (tmp_path / out.strip().splitlines()[-1]).is_file()            # the page
    commands = [shlex.split(c)[1:] for c in re.findall(r"```bash\n(.*?)```", (DOCS / "COMPARE.md").read_text(), re.S)[-1]
                .splitlines() if c.startswith("palimpsest compare")]
    assert commands
    for args in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        assert "page: " in result.stdout
