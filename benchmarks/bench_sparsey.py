"""Sparsey on digits: single-pass storage, recall, recognition and a capacity curve (no gradients).

The 8x8 digits (sklearn's, 1,437 training and 360 test images) are coded as sparse binary patterns
(`memory.sparsey.binarize`: features above the image's mean, one-hot in 3 intensity bins: 192 inputs,
about 24 active). For each number of stored images n (the first n of a shuffled training set), a
fresh mac of 16 competitive modules x 32 cells stores them in one trial each, then:

    recall          share of the stored images whose code comes back exactly from the image
    code overlap    share of competitive modules reinstated
    recognition     telling the n stored images from n test images by familiarity G
    classification  the label of the stored code that a test image's code overlaps most (semantic memory)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparsey.py [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from palimpsest.data.datasets import load_dataset
from palimpsest.evaluate.aggregate import stat
from palimpsest.memory.sparsey import binarize, capacity_curve

SIZES = [25, 50, 100, 200, 400, 800]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--floor", type=float, default=0.8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparsey.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits")
    x_all, y_all = binarize(torch.from_numpy(data.x_train)), torch.from_numpy(data.y_train)
    test, test_y = binarize(torch.from_numpy(data.x_test)), torch.from_numpy(data.y_test)
    runs = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
        runs[seed] = capacity_curve(x_all[perm], y_all[perm], test, test_y, SIZES, modules=16, cells=32,
                                    floor=args.floor, seed=seed)
    keys = ("recall", "code_overlap", "recognition", "classification", "familiarity_novel")
    print(f"{'stored':>6} " + " ".join(f"{k:>20}" for k in keys))
    table = []
    for i, n in enumerate(SIZES):
        row = {"stored": n, **{k: stat([runs[s][i][k] for s in runs]) for k in keys}}
        table.append(row)
        print(f"{n:6d} " + " ".join(f"{row[k]['mean']:>12.3f} ± {row[k]['std']:.3f}" for k in keys))
    Path(args.out).write_text(json.dumps({"settings": vars(args), "sizes": SIZES, "table": table, "runs": runs},
                                         indent=1))


if __name__ == "__main__":
    main()
