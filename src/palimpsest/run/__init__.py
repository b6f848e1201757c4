"""Specs, experiment kinds, the one runner and the results store."""
from .kinds.learn import ExperimentSpec, LearnSpec, build_stream, load_model
from .runner import Runner, run_experiment
from .spec import load_spec, parse_spec
from .store.db import ResultsDB

__all__ = ["ExperimentSpec", "LearnSpec", "ResultsDB", "Runner", "build_stream", "load_model", "load_spec",
           "parse_spec", "run_experiment"]
