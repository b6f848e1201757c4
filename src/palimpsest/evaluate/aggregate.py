"""Aggregation over seeds: the one place a table's "mean ± std" comes from.

`stat` summarises the values of one quantity over seeds: mean, POPULATION standard deviation
(ddof=0, numpy's default; with 3 seeds it is sqrt(2/3) of the sample std) and the number of seeds
with a defined value. Pure functions, used by the run summaries, the regression check and reports.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

STD = "population"  # which standard deviation `stat` reports (ddof=0)


def stat(values: Sequence[float | None]) -> dict:
    """{"mean", "std", "n"} over the defined (non-NaN, non-None) values; NaN mean and std when none."""
    defined = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if defined.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(defined.mean()), "std": float(defined.std()), "n": int(defined.size)}


def aggregate(per_seed: Iterable[Mapping[str, float | None]], keys: Iterable[str] | None = None) -> dict[str, dict]:
    """{key: stat(values of key over the seeds)} for every numeric key (or the given ones)."""
    per_seed = list(per_seed)
    keys = list(keys) if keys is not None else sorted({k for row in per_seed for k, v in row.items()
                                                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: stat([row.get(k) if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
                      else float("nan") for row in per_seed]) for k in keys}


__all__ = ["STD", "aggregate", "stat"]
