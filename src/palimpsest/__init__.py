"""palimpsest: how neural networks learn, forget and remember.

    from palimpsest import load_spec, run_experiment
    exp_id = run_experiment(load_spec("recipes/split_fmnist_class.yaml"))
"""
__version__ = "0.1.0"

from .core.errors import ConfigError, DataError, PalimpsestError, SpecError, UnknownNameError  # noqa: E402
from .core.registry import list_methods  # noqa: E402
from . import learn  # noqa: E402,F401  (registers strategies)
from .data.datasets import load_dataset  # noqa: E402
from .models import create_model  # noqa: E402
from .run import ExperimentSpec, ResultsDB, load_model, load_spec, parse_spec, run_experiment  # noqa: E402
from .run.kinds.unlearn import run_unlearning  # noqa: E402


def create(name: str, **settings):
    """Create a registered strategy by name: `create("naive")`."""
    from .core.registry import STRATEGIES
    return STRATEGIES.create(name, **settings)


__all__ = ["__version__", "ConfigError", "DataError", "PalimpsestError", "SpecError", "UnknownNameError",
           "list_methods", "load_dataset", "create_model", "ExperimentSpec", "ResultsDB", "load_model", "load_spec",
           "parse_spec", "run_experiment", "run_unlearning", "create"]
