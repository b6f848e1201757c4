from ..core.registry import STRATEGIES
from .strategy import Strategy


@STRATEGIES.register("cumulative", summary="at each step, keep training on everything seen so far")
class Cumulative(Strategy):
    """At step i, continue training the current model on the union of experiences 0..i."""

    name = "cumulative"

    def schedule(self, stream):
        return [list(range(i + 1)) for i in range(len(stream.train))]
