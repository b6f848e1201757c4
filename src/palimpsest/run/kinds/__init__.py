"""Experiment kinds (one module each); importing this package registers the built-in ones."""
from . import adapt, learn, memory, unlearn  # noqa: F401
from .base import ExperimentKind, Job, job_id

__all__ = ["ExperimentKind", "Job", "job_id"]
