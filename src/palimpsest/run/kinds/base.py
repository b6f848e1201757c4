"""The experiment-kind protocol. A kind turns a spec into jobs and runs one job at a time:

    parse(data, source) -> spec            validate (every problem at once)
    jobs(spec) -> [Job]                    pure and enumerable: resume, sweeps and distributed
                                           executors all walk the same list
    pending(spec, exp_id, job, db)         None when the job is done, else what it needs from the
                                           store (finished steps, cached models): the runner reads
    run_job(spec, exp_id, job, state, outbox)
                                           does the work; never touches the database: it writes
                                           files into its folder and records through the outbox
    finish(spec, exp_id, db, emit)         experiment-level results once every job is done
    summarize(db, exp_id)                  rows (per method, mean ± std over seeds) for tables
    metrics / tables / figures             names of the registered metrics it computes and of the
                                           report parts it shows

A kind is registered (`@KINDS.register("learn")`) and found by the spec's `kind:`; a new kind
(language models, memory, federated) is one more module here, touching none of the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..spec import SpecBase, validate_spec
from ..store.db import ResultsDB
from ..store.writer import Outbox


@dataclass(frozen=True)
class Job:
    """One unit of work of an experiment: `key` is its id within the experiment (the job's id is
    `<experiment id>/<key>`), `info` what the kind needs to run it (JSON-able), `after` the keys of
    jobs whose outputs it reads."""

    key: str
    seed: int
    info: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()


class ExperimentKind:
    name: ClassVar[str] = "kind"
    Spec: ClassVar[type[SpecBase]] = SpecBase
    # names of registered metrics it computes, and of the report parts (report/page.py) its report shows
    metrics: ClassVar[tuple[str, ...]] = ()
    tables: ClassVar[tuple[str, ...]] = ()
    figures: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def report_parts(cls, exp: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The table and figure parts of this stored experiment's report, in page order (default:
        the kind's `tables` and `figures`; a kind may choose by the experiment's spec)."""
        return cls.tables, cls.figures

    def parse(self, data: dict, source: str = "spec") -> SpecBase:
        return validate_spec(self.Spec, data, source, self.problems)

    def problems(self, data: dict) -> list[str]:
        """Checks that need the registries, on the raw mapping (run even when other fields fail)."""
        return []

    def describe(self, spec) -> str:
        """One line for `palimpsest validate`."""
        return f"{self.name} spec {spec.name!r} ({len(self.jobs(spec))} jobs)"

    def notes(self, spec) -> list[str]:
        """Lines `validate` and `run` print before anything runs: what the spec leaves to the
        library (e.g. tuned defaults filled in), so nothing is chosen silently (default: none)."""
        return []

    def jobs(self, spec) -> list[Job]:
        raise NotImplementedError

    def preflight(self, spec, db: ResultsDB) -> None:
        """Checks that need data or the store, run before an experiment is recorded, so a spec that
        cannot run fails with its error and leaves nothing behind (default: none)."""

    def pending(self, spec, exp_id: str, job: Job, db: ResultsDB) -> dict | None:
        raise NotImplementedError

    def run_job(self, spec, exp_id: str, job: Job, state: dict, outbox: Outbox) -> None:
        raise NotImplementedError

    def finish(self, spec, exp_id: str, db: ResultsDB, emit: Callable[[dict], None]) -> None:
        pass

    def summarize(self, db: ResultsDB, exp_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def load_stored(self, db: ResultsDB, model_id: str):
        """(model, info) of a model this kind stored under `model_id` (e.g. an unlearning ledger
        entry); what `load_model` calls for an id that is not a run's."""
        from ...core.errors import PalimpsestError
        raise PalimpsestError(f"{self.name} experiments keep no models by id", expected="a run id", got=model_id,
                              fix="list runs with `palimpsest runs`")


def job_id(exp_id: str, job: Job) -> str:
    return f"{exp_id}/{job.key}"


__all__ = ["ExperimentKind", "Job", "job_id"]
