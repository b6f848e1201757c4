"""Aggregation over seeds: the one place a table's "mean ± std" comes from.

`stat` summarises the values of one quantity over seeds: mean, standard deviation and the number of
seeds with a defined value. The standard deviation is the POPULATION one by default (ddof=0,
numpy's default; with 3 seeds it is sqrt(2/3) of the sample std: the learning tables); with ddof=1
it is the SAMPLE one and the stat also carries `ci95`, the half-width of Student's t 95 % interval
of the mean, t(0.975, n−1)·s/√n (the unlearning tables). Pure functions, used by the run
summaries, the regression check and reports.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

STD = "population"  # which standard deviation `stat` reports (ddof=0)


def stat(values: Sequence[float | None], ddof: int = 0) -> dict:
    """{"mean", "std", "n"} over the defined (non-NaN, non-None) values; NaN mean and std when none.
    ddof=1: the sample std (0 for a single value) and "ci95" (NaN for a single value)."""
    defined = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if defined.size == 0:
        out = {"mean": float("nan"), "std": float("nan"), "n": 0}
        return dict(out, ci95=float("nan")) if ddof else out
    std = float(defined.std(ddof=ddof)) if defined.size > ddof else 0.0
    out = {"mean": float(defined.mean()), "std": std, "n": int(defined.size)}
    if ddof:
        from scipy.stats import t
        out["ci95"] = float(t.ppf(0.975, defined.size - 1) * std / math.sqrt(defined.size)) if defined.size > 1 \
            else float("nan")
    return out


def aggregate(per_seed: Iterable[Mapping[str, float | None]], keys: Iterable[str] | None = None,
              ddof: int = 0) -> dict[str, dict]:
    """{key: stat(values of key over the seeds, ddof)} for every numeric key (or the given ones)."""
    per_seed = list(per_seed)
    keys = list(keys) if keys is not None else sorted({k for row in per_seed for k, v in row.items()
                                                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: stat([row.get(k) if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
                      else float("nan") for row in per_seed], ddof) for k in keys}


__all__ = ["STD", "aggregate", "stat"]
