"""An outside package registers a strategy through the `palimpsest.plugins` entry point, and the CLI
lists it and runs it from a spec (a subprocess, with the package installed on its path as pip would)."""
import os
import subprocess
import sys
import textwrap

import yaml

from .conftest import tiny_spec

PLUGIN = '''
"""A package outside palimpsest: a strategy that trains like naive fine-tuning at half the learning rate."""
from palimpsest.core.registry import STRATEGIES
from palimpsest.learn import Strategy


@STRATEGIES.register("half_lr", summary="naive fine-tuning with every gradient halved (a plugin)")
class HalfLR(Strategy):
    name = "half_lr"

    def before_step(self, ctx, batch, values):
        for p in ctx.model.parameters():
            if p.grad is not None:
                p.grad.mul_(0.5)
'''


def install(site):
    """Write the package and its dist-info (with the entry point) into `site`, as pip would."""
    (site / "half_lr_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "half_lr_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: half-lr-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[palimpsest.plugins]\nhalf_lr = half_lr_plugin\n")
    (info / "RECORD").write_text("")


def test_an_installed_package_registers_a_strategy_that_runs_from_a_spec(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site)
    spec = tmp_path / "plugin.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategies=["half_lr", "naive"])))
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", PYTHONPATH=str(site))
    cli = lambda *args: subprocess.run([sys.executable, "-m", "palimpsest", *args], cwd=tmp_path, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    listed = cli("ls", "strategies")
    assert listed.returncode == 0 and "half_lr" in listed.stdout and "(a plugin)" in listed.stdout
    assert cli("validate", str(spec)).returncode == 0
    out = cli("run", str(spec), "--root", "res", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "half_lr" in out.stdout
    without = subprocess.run([sys.executable, "-m", "palimpsest", "validate", str(spec)], cwd=tmp_path,
                             env=dict(env, PYTHONPATH=""), capture_output=True, text=True, timeout=300)
    assert without.returncode == 2 and "unknown strategy 'half_lr'" in without.stderr
