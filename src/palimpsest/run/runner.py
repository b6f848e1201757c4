"""The one runner, for every experiment kind: enumerate the kind's jobs, skip the finished ones,
run the rest in order with an outbox each, and let the single writer store what they send.

    exp_id = Runner(spec, root).run(resume=False)

Resume: `resume=True` continues the latest unfinished experiment with the same spec digest (or
starts a new one); a job that finished is skipped, a job that stopped halfway continues from its
last stored step. A heartbeat marks the experiment alive; a process that dies leaves it "running"
with a stale heartbeat, which every reader shows as "crashed".
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..core.registry import KINDS
from ..core.seeding import configure_torch
from .kinds.base import ExperimentKind, job_id
from .kinds.learn import Diverged
from .spec import SpecBase
from .store.db import ResultsDB
from .store.writer import Heartbeat, Outbox, Writer, job_folder

StepCallback = Callable[[str, int], None]


class Runner:
    def __init__(self, spec: SpecBase, root: str | Path = "palimpsest-results", progress: bool = True,
                 on_step: StepCallback | None = None, on_job: Callable[[str], None] | None = None) -> None:
        from ..core.plugins import load_plugins
        load_plugins()
        self.spec, self.root, self.show_progress = spec, Path(root), progress
        self.on_step, self.on_job = on_step, on_job
        self.kind: ExperimentKind = KINDS.get(spec.kind).obj()
        self.diverged: list = []
        self.db = ResultsDB(self.root)
        self.writer = Writer(self.db)

    def close(self) -> None:
        self.db.close()

    def start(self, resume: bool | str = False) -> str:
        spec = self.spec
        if isinstance(resume, str):
            return self.db.experiment(resume)["id"]
        if resume:
            found = self.db.latest_unfinished(spec.digest())
            if found:
                self.writer.experiment_status(found, "running")
                return found
        return self.writer.new_experiment(spec.kind, spec.name, spec.to_yaml(), spec.digest(), __version__)

    def run(self, resume: bool | str = False) -> str:
        configure_torch()
        self.kind.preflight(self.spec, self.db)
        exp_id = self.start(resume)
        jobs = self.kind.jobs(self.spec)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Heartbeat(self.root, exp_id), \
                Progress(*columns, disable=not self.show_progress, transient=False) as progress:
            overall = progress.add_task(exp_id, total=len(jobs))
            try:
                for job in jobs:
                    try:
                        self.run_job(exp_id, job, progress)
                    except Diverged as err:   # stored as diverged; the other jobs still run
                        self.diverged.append(err)
                    progress.advance(overall)
                self.kind.finish(self.spec, exp_id, self.db, self.writer.apply)
            except BaseException:
                self.writer.experiment_status(exp_id, "failed")
                raise
        self.writer.experiment_status(exp_id, "finished")
        return exp_id

    def run_job(self, exp_id: str, job, progress=None) -> None:
        jid = job_id(exp_id, job)
        state = self.kind.pending(self.spec, exp_id, job, self.db)
        if state is None:
            return
        bar = {}

        def events(name: str, payload: dict) -> None:
            if progress is not None and name == "start":
                bar["task"] = progress.add_task(payload["label"], total=payload["total"], completed=payload["completed"])
            elif progress is not None and name == "step" and "task" in bar:
                progress.advance(bar["task"])
            if name == "step" and self.on_step:
                self.on_step(payload["run_id"], payload["step"])

        outbox = Outbox(self.root, jid, state.get("folder") or job_folder(jid), self.writer.apply, events)
        self.kind.run_job(self.spec, exp_id, job, state, outbox)
        done = getattr(self.kind, "job_done", None)
        if done is not None:
            done(self.spec, exp_id, job, self.db, self.writer.apply)
        if self.on_job:
            self.on_job(jid)


def run_experiment(spec: SpecBase, root: str | Path = "palimpsest-results", resume: bool | str = False,
                   progress: bool = True, on_step: StepCallback | None = None) -> str:
    """Run every job of `spec` (any kind), store everything under `root`, return the experiment id."""
    runner = Runner(spec, root, progress=progress, on_step=on_step)
    try:
        return runner.run(resume)
    finally:
        runner.close()


__all__ = ["Runner", "run_experiment"]
