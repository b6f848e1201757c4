from ..core.registry import STRATEGIES
from .strategy import Strategy


@STRATEGIES.register("joint", summary="one model trained on all experiences at once (offline upper bound)")
class Joint(Strategy):
    """Offline upper bound: a single training step on the union of the whole stream, so its
    accuracy matrix has one row."""

    name = "joint"

    def schedule(self, stream):
        return [list(range(len(stream.train)))]
