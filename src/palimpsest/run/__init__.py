from .db import ResultsDB
from .runner import Runner, build_stream, compute_experiment_metrics, load_model, run_experiment
from .spec import ExperimentSpec, load_spec, parse_spec

__all__ = ["ResultsDB", "Runner", "build_stream", "compute_experiment_metrics", "load_model", "run_experiment",
           "ExperimentSpec", "load_spec", "parse_spec"]
