from ..core.registry import STRATEGIES
from .strategy import Strategy


@STRATEGIES.register("naive", summary="plain fine-tuning on each experience in turn (the lower bound)")
class Naive(Strategy):
    """Fine-tune on each new experience with cross-entropy and nothing else."""

    name = "naive"
