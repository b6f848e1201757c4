"""Fast/slow memory (memory/fastslow.py): one-shot recall of rare classes with and without the fast,
synthetic-gradient updates of the controller. 300 training steps of 32 episodes (20 steps, 5 classes,
2 of them rare: shown twice), 3 seeds, accuracy on 512 held-out episodes at each class's second
exposure.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fastslow.py
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from palimpsest.evaluate.aggregate import stat
from palimpsest.memory.fastslow import train_fast_slow


def main() -> None:
    torch.set_num_threads(1)
    rows = [train_fast_slow(fast, steps=300, seed=seed) for fast in (False, True) for seed in (0, 1, 2)]
    for fast in (False, True):
        mine = [r for r in rows if r["fast"] == fast]
        summary = {k: stat([r[k] for r in mine]) for k in ("rare_second_exposure", "frequent_second_exposure",
                                                               "all_seen")}
        print(("fast (synthetic gradients)" if fast else "slow only"), json.dumps(
            {k: f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary.items()}))
    (Path(__file__).parent / "results" / "fastslow.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
