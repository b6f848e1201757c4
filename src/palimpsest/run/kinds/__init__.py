"""Experiment kinds (one module each); importing this package registers the built-in ones."""
from . import adapt, learn, unlearn  # noqa: F401
from . import lifecycle  # noqa: F401  (after learn and unlearn, whose pieces it reuses)
from .base import ExperimentKind, Job, job_id

__all__ = ["ExperimentKind", "Job", "job_id"]
