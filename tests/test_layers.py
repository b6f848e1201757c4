"""Data flows one way: core -> data -> models -> train -> learn / forget / memory -> evaluate -> run
-> report -> cli. A module never imports a layer above its own (checked on the source, so a
violation fails here even where no test happens to import both)."""
import ast
from pathlib import Path

import palimpsest

SRC = Path(palimpsest.__file__).parent
ORDER = {"core": 0, "data": 1, "models": 2, "train": 3, "memory": 4, "learn": 4, "forget": 4, "evaluate": 5,
         "run": 6, "report": 7, "cli": 8}
# learn and forget are siblings: neither imports the other
SIBLINGS = {("learn", "forget"), ("forget", "learn")}


def layer(path: Path) -> str | None:
    rel = path.relative_to(SRC).parts
    name = rel[0].removesuffix(".py")
    return name if name in ORDER else None


def imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC).parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("palimpsest."):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts and parts[0] in ORDER:
                out.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "palimpsest" and len(parts) > 1 and parts[1] in ORDER:
                    out.add(parts[1])
    return out


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for path in SRC.rglob("*.py"):
        own = layer(path)
        if own is None:
            continue
        for other in imported_layers(path):
            if ORDER[other] > ORDER[own] or (own, other) in SIBLINGS:
                wrong.append(f"{path.relative_to(SRC)} imports {other}")
    assert not wrong, "\n".join(sorted(wrong))


def test_run_does_not_import_report():
    """A job or the runner never needs the report: importing palimpsest.run loads no report module."""
    import subprocess
    import sys
    code = ("import sys, palimpsest.run, palimpsest.run.runner, palimpsest.run.kinds\n"
            "from palimpsest.core.plugins import load_plugins; load_plugins()\n"
            "assert not [m for m in sys.modules if m.startswith('palimpsest.report')], sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
