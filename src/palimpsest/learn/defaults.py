"""Default hyperparameters per strategy and benchmark, kept in one place.

Keys are "<dataset>/<scenario>" with "*" wildcards (fnmatch); the most specific matching key wins
(more literal characters), then the strategy's own Config defaults fill the rest. A spec's
`settings` always override these. `palimpsest ls strategies` prints this table.
"""
from __future__ import annotations

import fnmatch
from typing import Any

# strategy -> {"dataset/scenario" pattern -> settings}
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # validation sweep on permuted Fashion-MNIST (seeds 100-101): alpha 0.3 -> 83.4, 1 -> 83.0
    "der": {"*/domain": {"alpha": 0.3}},
    # GDumb trains offline on its memory: batch 16, 30 epochs (class-IL validation sweep at memory
    # 200: 10 -> 72.3, 30 -> 74.6, 100 -> 74.7); in domain-IL balance (task, class) pairs, or no
    # later domain ever enters a full memory.
    "gdumb": {"*/*": {"epochs": 30, "batch_size": 16}, "*/domain": {"balance": "task_class"}},
    # Regularisers: sweeps on split Fashion-MNIST task-IL (single head) and permuted Fashion-MNIST,
    # seed 0 (see docs/FEATURES.md). Larger values diverge with plain SGD at lr 0.05.
    "ewc": {"*/task": {"ewc_lambda": 100.0}, "*/domain": {"ewc_lambda": 10.0, "max_examples": 1000}},
    "online_ewc": {"*/task": {"ewc_lambda": 100.0, "gamma": 1.0}, "*/domain": {"ewc_lambda": 30.0, "gamma": 0.9}},
    "si": {"*/task": {"si_c": 10.0, "xi": 0.1}, "*/domain": {"si_c": 1.0}},
    "mas": {"*/task": {"mas_lambda": 0.1}, "*/domain": {"mas_lambda": 0.01}},
    "l2": {"*/task": {"l2_lambda": 1.0}, "*/domain": {"l2_lambda": 0.1}},
}


def defaults_for(strategy: str, dataset: str, scenario: str) -> dict[str, Any]:
    """The tuned defaults of `strategy` on `dataset` in `scenario` ("class", "task", "domain")."""
    table = DEFAULTS.get(strategy, {})
    key = f"{dataset}/{scenario}"
    matches = [p for p in table if fnmatch.fnmatchcase(key, p)]
    out: dict[str, Any] = {}
    for pattern in sorted(matches, key=lambda p: len(p.replace("*", ""))):
        out.update(table[pattern])
    return out
