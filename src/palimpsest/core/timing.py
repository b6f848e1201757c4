"""Wall-clock and CPU time of a block, measured together.

Speed-ups against retraining are reported both ways: wall time is what a user waits, CPU time
(`time.process_time`, this process's user + system time) does not move when a neighbour shares the
cores, so it is the steadier ratio on a busy machine. With one torch thread the two agree when the
machine is idle.
"""
from __future__ import annotations

import time


class Stopwatch:
    """`with Stopwatch() as clock: ...` then `clock.wall` and `clock.cpu`, in seconds."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


__all__ = ["Stopwatch"]
