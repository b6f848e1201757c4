"""Clocks for the agent-memory store: the system's, and a simulated one so that forgetting can be tested
and benchmarked over simulated days in seconds.

Times are seconds since an epoch (the system clock's is the Unix epoch; a simulated clock starts where
it is told to). Policies speak in days: `DAY` seconds.
"""
from __future__ import annotations

import math
import time

from ..core.errors import ConfigError

DAY = 86400.0


class SystemClock:
    """The wall clock (`time.time()`)."""

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class SimulatedClock:
    """A clock that moves only when told to: `clock.advance(days=3)`. Never goes backwards."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = _finite(start, "start")

    def now(self) -> float:
        return self._now

    def advance(self, days: float = 0.0, hours: float = 0.0, seconds: float = 0.0) -> float:
        step = _finite(days, "days") * DAY + _finite(hours, "hours") * 3600.0 + _finite(seconds, "seconds")
        if step < 0:
            raise ConfigError("a simulated clock never goes backwards", expected="a step >= 0",
                              got=f"{step} seconds", fix="advance by a positive amount (or make a new clock)")
        self._now += step
        return self._now

    def set(self, when: float) -> float:
        """Move to an absolute time (not earlier than now)."""
        return self.advance(seconds=_finite(when, "when") - self._now)

    def __repr__(self) -> str:
        return f"SimulatedClock(now={self._now})"


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"bad clock value for {name}", expected="a finite number", got=repr(value))
    return float(value)


__all__ = ["DAY", "SimulatedClock", "SystemClock"]
