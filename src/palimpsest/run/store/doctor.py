"""`palimpsest doctor`: check a results folder and repair what can be repaired without guessing.

Checks: SQLite's full integrity check; every file the database names exists (checkpoints, resume
states, predictions, stream test labels, shared models, stored outputs), and with `deep` loads;
experiments whose process died (stale heartbeat); job folders no record names (left by a job
killed before its first record). `reset_run` removes one run's records and files, so
`palimpsest run SPEC --resume` trains it again from its first step.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import PalimpsestError
from .db import ResultsDB
from .files import load_arrays, load_state


@dataclass
class Checkup:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def _paths(db: ResultsDB) -> list[tuple[str, str]]:
    """(what, stored path) of every file the database names."""
    out = []
    for run_id, step, model, state, preds in db.conn.execute(
            "SELECT run_id, step, model_path, state_path, predictions_path FROM steps"):
        out += [(f"run {run_id} step {step} {kind}", p) for kind, p in
                (("model", model), ("resume state", state), ("predictions", preds)) if p]
    out += [(f"stream {d} test labels", p) for d, p in db.conn.execute("SELECT digest, test_path FROM streams") if p]
    out += [(f"model {m}", p) for m, p in db.conn.execute("SELECT id, path FROM models")]
    out += [(f"ledger {e} outputs", p) for e, p in db.conn.execute("SELECT id, outputs_path FROM ledger") if p]
    return out


def check(root: str | Path, deep: bool = False) -> Checkup:
    """Everything `palimpsest doctor` reports for the folder `root`."""
    report = Checkup()
    if not (Path(root) / "results.sqlite").is_file():
        ResultsDB(root, create=False)   # raises the clear "no results database" error
    try:
        db = ResultsDB(root, create=False, check=False)
    except PalimpsestError as err:   # SQLite cannot even open it: the finding
        report.problems.append(err.what + (f" ({err.fix})" if err.fix else ""))
        return report
    with db:
        try:
            db.check_integrity(quick=False)
        except PalimpsestError as err:
            report.problems.append(f"{err.what}: {err.fix}")
            return report
        named = set()
        for what, stored in _paths(db):
            path = db.file(stored)
            named.add(Path(stored).parts[0:2])
            if not path.is_file():
                report.problems.append(f"{what}: missing file {stored}")
            elif deep:
                try:
                    load_arrays(path) if path.suffix == ".npz" else load_state(path)
                except Exception as err:  # noqa: BLE001  (any unreadable file is the finding)
                    report.problems.append(f"{what}: unreadable file {stored} ({type(err).__name__})")
        for e in db.experiments():
            if e["status"] == "crashed":
                report.notes.append(f"experiment {e['id']} crashed (its process stopped); `palimpsest run SPEC "
                                    "--resume` continues it")
        folders = {r[0] for r in db.conn.execute("SELECT folder FROM runs")}
        jobs = db.root / "jobs"
        for folder in sorted(jobs.iterdir()) if jobs.is_dir() else []:
            rel = f"jobs/{folder.name}"
            if rel not in folders and ("jobs", folder.name) not in named:
                report.notes.append(f"{rel}: no record names this folder (a job stopped before its first record); "
                                    "safe to delete")
    return report


def reset_run(root: str | Path, run_id: str) -> list[str]:
    """Remove run `run_id`'s records and its folder; return what was removed. A finished experiment
    becomes "incomplete", so `palimpsest run SPEC --resume` trains the run again."""
    with ResultsDB(root, create=False) as db:
        run = db.run(run_id)
        if run is None:
            db.record(run_id)   # the clear not-found error
        with db.transaction() as c:
            for table in ("steps", "accuracy", "metrics"):
                c.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM runs WHERE id=?", (run_id,))
            # a finished experiment missing a run is no longer finished: `run SPEC --resume` continues it
            c.execute("UPDATE experiments SET status='incomplete' WHERE id=? AND status='finished'",
                      (run["experiment_id"],))
        folder = db.root / run["folder"]
        if folder.is_dir():
            shutil.rmtree(folder)
        return [f"records of {run_id}", str(folder)]


__all__ = ["Checkup", "check", "reset_run"]
