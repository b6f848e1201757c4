"""What a learning experiment ran on and with: the contents of each experience and the settings
every strategy actually used. Two report parts; both read only what the store holds.

- `stream_contents`: per experience, its task id, classes (with names for built-in data sets),
  training and test examples. Streams drawn from the seed (shuffled class orders, recurring
  schedules) differ between seeds: the page shows the first seed's and says which seeds differ.
- `resolved_settings`: per strategy, every setting with its value as stored with the run and where
  it came from: the spec, a tuned default of learn/defaults.py, or the strategy's own default;
  plus the training settings where a strategy overrides the experiment's (GDumb's memory training,
  for instance, uses its own `epochs` and `batch_size`).
"""
from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence

import yaml

from ..core.registry import STRATEGIES
from ..data.datasets import KNOWN_CLASS_NAMES
from .page import PARTS

LONG_SCHEDULE = 25   # above this many training steps the schedule table is folded


def _spec(exp: dict) -> dict:
    try:
        data = yaml.safe_load(exp.get("spec_yaml") or "") or {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _runs(db, exp: dict, cache: dict) -> list[dict]:
    if "runs" not in cache:
        cache["runs"] = db.runs(exp["id"])
    return cache["runs"]


def _classes_text(classes: Sequence[int], names: Sequence[str] | None) -> str:
    if names and all(0 <= c < len(names) for c in classes):
        return ", ".join(f"{c} ({names[c]})" for c in classes)
    return ", ".join(str(c) for c in classes)


def _test_sizes(db, runs: list[dict], n_tasks: int) -> list[int] | None:
    finished = [r for r in runs if r["status"] == "finished"]
    if not finished:
        return None
    record = db.record(finished[0]["id"])
    if record.test_task is None:
        return None
    counts = Counter(int(t) for t in record.test_task)
    return [counts.get(t, 0) for t in range(n_tasks)]


def stream_contents_html(db, exp: dict, summary, cache: dict) -> str:
    runs = _runs(db, exp, cache)
    if not runs or not runs[0].get("stream_json"):
        return ""
    e = html.escape
    first_seed = min(int(r["seed"]) for r in runs)
    mine = [r for r in runs if int(r["seed"]) == first_seed]
    desc = json.loads(mine[0]["stream_json"])
    names = KNOWN_CLASS_NAMES.get(desc.get("dataset", ""))
    n_tasks = desc["n_tasks"]
    test_sizes = _test_sizes(db, mine, n_tasks) or [None] * n_tasks
    learned = desc.get("learned_task") or list(range(desc["n_train_steps"]))
    train_sizes = desc.get("train_sizes") or [None] * len(learned)
    scenario = desc.get("scenario", "?")
    parts = [f"<h2>Stream</h2><p>{e(desc.get('name', '?'))}: {e(scenario)}-incremental, {n_tasks} experiences "
             f"(tasks), {desc['n_train_steps']} training steps"
             + (f", online in mini-batches of {desc['online_batch_size']}" if desc.get("online_batch_size") else "")
             + (f"; seed {first_seed}'s stream" if len({r['seed'] for r in runs}) > 1 else "") + ".</p>"]
    rows = "".join(
        f"<tr><td class=\"num\">{t}</td><td>{e(_classes_text(desc['task_classes'][t], names))}</td>"
        f"<td class=\"num\">{'' if test_sizes[t] is None else test_sizes[t]}</td></tr>" for t in range(n_tasks))
    parts.append('<table class="summary settings"><thead><tr><th>Task</th><th>Classes</th><th>Test examples</th>'
                 f"</tr></thead><tbody>{rows}</tbody></table>")
    if desc.get("domains"):
        parts.append(f'<p class="meta">Domains: {e(json.dumps(desc["domains"]))[:400]}</p>')
    plain = learned == list(range(n_tasks))
    schedule = "".join(f"<tr><td class=\"num\">{s}</td><td class=\"num\">{learned[s]}</td>"
                       f"<td class=\"num\">{'' if train_sizes[s] is None else train_sizes[s]}</td></tr>"
                       for s in range(len(learned)))
    table = ('<table class="summary settings"><thead><tr><th>Training step</th><th>Task trained</th>'
             f"<th>Training examples</th></tr></thead><tbody>{schedule}</tbody></table>")
    if plain and len(learned) <= LONG_SCHEDULE:
        parts.append(table)
    else:
        parts.append(f"<details><summary>Training schedule ({len(learned)} steps)</summary>{table}</details>")
    digests = {}
    for r in runs:
        digests.setdefault(r["stream_digest"], set()).add(int(r["seed"]))
    if len(digests) > 1:
        others = sorted(s for d, seeds in digests.items() if d != mine[0]["stream_digest"] for s in seeds)
        parts.append(f'<p class="note">Seeds {", ".join(map(str, others))} ran on other streams (class order or '
                     "schedule drawn from the seed); their tables are not shown. Per-step averages over seeds "
                     "mix different experiences when the schedules differ.</p>")
    return "\n".join(parts)


def resolved_settings(exp: dict, runs: list[dict]) -> list[dict]:
    """Per strategy label (spec order), every setting: {"label", "strategy", "setting", "value",
    "source"}, source one of "spec", "tuned default (learn/defaults.py)", "default", and training
    settings that differ from the experiment's shared ones (source "spec: training override")."""
    spec = _spec(exp)
    entries = {}
    for s in spec.get("strategies") or []:
        s = {"name": s} if isinstance(s, str) else s
        if isinstance(s, dict):
            entries[s.get("label") or s.get("name")] = s
    shared = spec.get("training") or {}
    rows, seen = [], set()
    for r in runs:
        label = r["label"]
        if label in seen:
            continue
        seen.add(label)
        settings = json.loads(r.get("settings_json") or "{}")
        plus = settings.pop("plus", [])
        entry = entries.get(label, {})
        rows += _setting_rows(label, r["strategy"], settings, entry.get("settings") or {})
        for i, p in enumerate(plus):
            given = ((entry.get("plus") or [{}])[i:i + 1] or [{}])[0]
            given = {} if isinstance(given, str) else given.get("settings") or {}
            rows += _setting_rows(label, p["name"], p.get("settings") or {}, given, prefix=f"plus {p['name']}: ")
        training = json.loads(r.get("training_json") or "{}")
        for key, value in training.items():
            if key in (entry.get("training") or {}) or (key in shared and shared[key] != value):
                rows.append({"label": label, "strategy": r["strategy"], "setting": f"training.{key}",
                             "value": value, "source": "spec: training override"})
    return rows


def _setting_rows(label: str, name: str, settings: dict, given: dict, prefix: str = "") -> list[dict]:
    config = STRATEGIES.get(name).obj.Config if name in STRATEGIES else None
    fields = getattr(config, "model_fields", {})
    rows = []
    for key, value in settings.items():
        if key in given:
            source = "spec"
        elif key in fields and fields[key].default == value:
            source = "default"
        else:
            source = "tuned default (learn/defaults.py)"
        rows.append({"label": label, "strategy": name, "setting": prefix + key, "value": value, "source": source,
                     "description": (fields[key].description or "") if key in fields else ""})
    return rows


def resolved_settings_html(db, exp: dict, summary, cache: dict) -> str:
    rows = resolved_settings(exp, _runs(db, exp, cache))
    if not rows:
        return ""
    e = html.escape
    def row(r: dict) -> str:
        source_class = ' class="note"' if r["source"].startswith("tuned") else ""
        return (f'<tr><th>{e(r["label"])}</th><td title="{e(r.get("description", ""))}"><code>{e(r["setting"])}'
                f'</code></td><td><code>{e(json.dumps(r["value"]))}</code></td>'
                f'<td{source_class}>{e(r["source"])}</td></tr>')
    body = "".join(row(r) for r in rows)
    tuned = sorted({r["label"] for r in rows if r["source"].startswith("tuned")})
    note = (f'<p class="note">Tuned defaults filled in for: {e(", ".join(tuned))}. Write a setting in the spec to '
            "override it (`palimpsest ls strategies` lists every tuned default).</p>" if tuned else "")
    return ("<h2>Settings used</h2><p>Every setting of every strategy as it ran (stored with the run), and where "
            "it came from.</p>" + note +
            '<details open><summary>Settings per strategy</summary><table class="summary settings"><thead><tr>'
            "<th>Strategy</th><th>Setting</th><th>Value</th><th>Source</th></tr></thead>"
            f"<tbody>{body}</tbody></table></details>")


PARTS.register("stream_contents", summary="classes and sizes of each experience, the training schedule")(
    stream_contents_html)
PARTS.register("resolved_settings", summary="every strategy setting as run, and its source")(resolved_settings_html)

__all__ = ["resolved_settings", "resolved_settings_html", "stream_contents_html"]
