"""Machine unlearning: forget requests, unlearners (one module each), the guarded data they read."""
from . import retrain  # noqa: F401  (registers unlearners)
from .base import LeakageError, Split, UnlearnContext, Unlearner, UnlearningData
from .request import ForgetRequest, ForgetSplit, resolve

__all__ = ["LeakageError", "Split", "UnlearnContext", "Unlearner", "UnlearningData", "ForgetRequest",
           "ForgetSplit", "resolve"]
