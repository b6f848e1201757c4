"""The README's unlearning example runs as written (digits: seconds)."""
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_unlearning_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "SSD()" in b)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    alpha, accuracy = capsys.readouterr().out.split()[:2]
    assert float(alpha) > 0 and float(accuracy) <= 0.05
