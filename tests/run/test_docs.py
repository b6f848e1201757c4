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
    else:
        assert "int32" in out and "1 stream(s) for 2 runs" in out
