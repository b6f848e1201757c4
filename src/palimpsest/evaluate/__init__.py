from . import metrics  # noqa: F401  (registers the metrics)
from .evaluator import Evaluation, evaluate_stream
from .metrics import compute_metrics
from .records import RunRecord

__all__ = ["Evaluation", "evaluate_stream", "compute_metrics", "RunRecord"]
