"""The HTML report in a real browser (headless Chromium): every figure decodes and is drawn, and
the page is never wider than the window (figures shrink, wide tables scroll in their own box),
at a laptop's and a narrow width.

Chromium comes from Debian (`scripts/setup.sh --dev` installs it); without it these tests skip and
say so. The check runs a few lines of JavaScript in a copy of the page (the report itself has none)
and reads the answer back from the DOM Chromium prints."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
import yaml

from palimpsest.report import write_html_report
from palimpsest.run import ResultsDB, parse_spec, run_experiment

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="Chromium not installed (Debian: apt-get install chromium; "
                                                        "scripts/setup.sh --dev does it)")

PROBE = """<script>
window.addEventListener("load", () => {
  const doc = document.documentElement;
  const wide = [...document.querySelectorAll("table, figure, img, pre, h1, h2, p")]
    .filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1 && !e.closest("div.wide, pre, details:not([open])"))
    .map(e => e.tagName + ":" + (e.getAttribute("alt") || e.textContent.slice(0, 40)));
  const images = [...document.images].map(i => ({alt: i.alt, natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, wide, scroll: doc.scrollWidth, client: doc.clientWidth});
  document.body.appendChild(out);
});
</script>"""


def _probe(page, tmp_path, width: int) -> dict:
    copy = tmp_path / f"probe-{width}.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom",
                           copy.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium printed no probe (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def _check(page, tmp_path, n_figures: int):
    for width in (1280, 800):
        seen = _probe(page, tmp_path, width)
        assert len(seen["images"]) == n_figures, seen["images"]
        for image in seen["images"]:
            assert image["natural"] > 100 and image["shown"] > 100, f"figure not drawn at {width}px: {image}"
        assert seen["scroll"] <= seen["client"], f"page wider than a {width}px window: {seen}"
        assert not seen["wide"], f"clipped at {width}px: {seen['wide']}"


def test_quickstart_report_draws_every_figure_and_fits(tmp_path):
    """The built-in quickstart (every strategy, from_scratch included) on a subset, two seeds."""
    from palimpsest.cli import quickstart_path
    data = yaml.safe_load(quickstart_path().read_text(encoding="utf-8"))
    data["benchmark"].update(train_subset=1000, test_subset=300)
    data.update(seeds=[0, 1], model={"name": "mlp", "settings": {"hidden": [32]}})
    spec = parse_spec(data)
    exp_id = run_experiment(spec, root=tmp_path / "r", progress=False)
    with ResultsDB(tmp_path / "r") as db:
        page = write_html_report(db, exp_id, tmp_path / "out" / "report.html")
    _check(page, tmp_path, n_figures=5)


def test_unlearning_report_draws_every_figure_and_fits(tmp_path):
    spec = parse_spec({"kind": "unlearn", "name": "browser-unlearn",
                       "train": {"dataset": "digits", "model": {"name": "mlp", "settings": {"hidden": [32]}},
                                 "training": {"epochs": 2, "batch_size": 32, "lr": 0.05}},
                       "forget": [{"kind": "classes", "classes": [3]}],
                       "methods": ["retrain", "finetune"], "seeds": [0],
                       "audits": {"relearn": {"n_examples": 5, "steps": 5}}})
    exp_id = run_experiment(spec, root=tmp_path / "r", progress=False)
    with ResultsDB(tmp_path / "r") as db:
        page = write_html_report(db, exp_id, tmp_path / "out" / "report.html")
    _check(page, tmp_path, n_figures=page.read_text(encoding="utf-8").count("<img "))
    assert "<img " in page.read_text(encoding="utf-8")


def test_recurring_report_draws_its_sequence_plots_and_fits(tmp_path):
    spec = parse_spec({"name": "browser-recurring-with-a-long-name-for-titles",
                       "benchmark": {"dataset": "digits", "scenario": "domain", "n_experiences": 3,
                                     "recurrence": {"length": 8, "distribution": "power_law"}},
                       "model": {"name": "mlp", "settings": {"hidden": [32]}}, "training": {"epochs": 1},
                       "strategies": ["naive", {"name": "er", "settings": {"buffer_size": 50}}], "seeds": [0, 1]})
    exp_id = run_experiment(spec, root=tmp_path / "r", progress=False)
    with ResultsDB(tmp_path / "r") as db:
        page = write_html_report(db, exp_id, tmp_path / "out" / "report.html")
    text = page.read_text(encoding="utf-8")
    assert "Accuracy of each task when it returns" in text and "along the sequence" in text
    _check(page, tmp_path, n_figures=text.count("<img "))
