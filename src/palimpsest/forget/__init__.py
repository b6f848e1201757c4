"""Machine unlearning: forget requests, unlearners (one module each), the guarded data they read."""
from . import (finetune, gradient_ascent, iau, neggrad_plus, random_labels, retrain, salun,  # noqa: F401
               scrub, sisa, ssd)
from . import dp2unlearning, fisher, gs_lora, linear_head  # noqa: F401
from .base import LeakageError, LossUnlearner, Pair, Split, UnlearnContext, Unlearned, Unlearner, UnlearningData
from .request import ForgetRequest, ForgetSplit, resolve

__all__ = ["LeakageError", "LossUnlearner", "Pair", "Unlearned", "Split", "UnlearnContext", "Unlearner", "UnlearningData", "ForgetRequest",
           "ForgetSplit", "resolve"]
