"""Sparsey on digits: one mac vs the two-level hierarchy, single-pass storage (no gradients): exact
recall, recognition, a capacity curve, similarity preservation and semantic classification by code
overlap, with pixel nearest-neighbour references on the same images.

The 8x8 digits (sklearn's, 1,437 training and 360 test images, raw intensities) are coded as sparse
binary patterns (`memory.sparsey.binarize`: pixels above the image's mean, one-hot in 3 intensity bins:
192 inputs, about 24 active). For each number n of stored images (the first n of a shuffled training
set) a fresh model stores them in one trial each:

    mac         one mac of 16 CMs x 128 cells over all 192 inputs (G⁻ = 0.7, sigmoid inflection 0.8)
    hierarchy   9 level-1 macs of 8 CMs x 16 cells on 4x4-pixel RFs every 2 pixels (G⁻ = 0.7, inflection
                0.6, critical period over at 20 % of set weights), one level-2 mac of 16 CMs x 128 cells
                over the 9 x 128 level-1 cells with the one mac's CSA; its code is the hierarchy's code

and then:

    recall          share of the stored images whose code comes back exactly from the image
    reinstated      share of CMs whose winner comes back
    recognition     balanced accuracy of telling the n stored images from n test images by familiarity G
                    (threshold: midpoint of the two groups' median G)
    complete_s      mean share of CMs reinstated when retrieving a stored image with a share s = 10 / 25 /
                    50 % of its active units moved to random inactive ones (pattern completion)
    learn_s         the same for the code the CSA gives such a variant when it is stored (in a copy of the
                    model, after the n images): similar inputs, similar codes
    sisc r          correlation, over pairs of stored images, of input overlap (Dice) and code overlap
    class gap       mean code overlap of same-class minus different-class pairs of stored images
    nearest code    a test image takes the label of the stored code its own code overlaps most (chance 10 %)
    knn codes       the same with an overlap-weighted vote of the 5 most-overlapping stored codes
    pixel 1-nn      reference: Euclidean nearest stored image on raw pixels; binary 1-nn: largest Dice
                    overlap on the binary patterns the models see

CSA settings were chosen on held-out training images (never on the test images).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparsey.py [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from palimpsest.data.datasets import load_dataset
from palimpsest.evaluate.aggregate import stat
from palimpsest.memory.sparsey import SparseyHierarchy, SparseyMac, binarize, code_overlap

SIZES = [25, 50, 100, 200, 400, 800]
NOISE = (0.1, 0.25, 0.5)
TOP = dict(g_floor=0.7, inflection=0.8)          # the CSA of the one mac and of the level-2 mac


def build(name: str, seed: int):
    if name == "mac":
        return SparseyMac(192, 16, 128, **TOP, seed=seed)
    return SparseyHierarchy((8, 8, 3), field=4, stride=2, level1=(8, 16), level2=(16, 128),
                            csa1=dict(g_floor=0.7, freeze_at=0.2), csa2=TOP, seed=seed)


def top(codes):
    """The model's code: the level-2 code of a hierarchy, the mac's code of a mac."""
    return codes[1] if isinstance(codes, tuple) else codes


def moved(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Each pattern with `share` of its active units moved to random inactive units."""
    out = x.clone()
    for row in out:
        on, off = row.nonzero().flatten(), (row == 0).nonzero().flatten()
        k = round(share * len(on))
        row[on[torch.randperm(len(on), generator=generator)[:k]]] = 0
        row[off[torch.randperm(len(off), generator=generator)[:k]]] = 1
    return out


def dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.float(), b.float()
    return 2 * a @ b.T / (a.sum(1)[:, None] + b.sum(1)[None]).clamp_min(1)


def measure(model, x, y, test, test_y, seed: int) -> dict:
    start = time.perf_counter()
    stored = top(model.store(x))
    seconds = time.perf_counter() - start
    again = top(model.retrieve(x))
    n = len(x)
    g_old, g_new = model.familiarity(x), model.familiarity(test[:n])
    threshold = (g_old.median() + g_new.median()) / 2
    recognition = float(((g_old > threshold).float().mean() + (g_new <= threshold).float().mean()) / 2)
    generator = torch.Generator().manual_seed(seed)
    noisy = {}
    for share in NOISE:
        variants = moved(x, share, generator)
        noisy[f"complete_{share}"] = float(code_overlap(top(model.retrieve(variants)), stored).diag().mean())
        noisy[f"learn_{share}"] = float(code_overlap(top(copy.deepcopy(model).store(variants)), stored).diag().mean())
    pairs = ~torch.eye(n, dtype=torch.bool)
    codes = code_overlap(stored, stored)
    r = float(torch.corrcoef(torch.stack([dice(x, x)[pairs], codes[pairs]]))[0, 1])
    same = (y[:, None] == y[None]) & pairs
    gap = float(codes[same].mean() - codes[(y[:, None] != y[None])].mean())
    probe = code_overlap(top(model.retrieve(test)), stored)
    best = probe.topk(min(5, n), 1)
    votes = torch.zeros(len(test), 10).scatter_add_(1, y[best.indices], best.values)
    return {"recall": float((again == stored).all(1).float().mean()),
            "reinstated": float((again == stored).float().mean()), "recognition": recognition,
            "familiarity_stored": float(g_old.mean()), "familiarity_new": float(g_new.mean()), **noisy,
            "sisc_r": r, "class_gap": gap,
            "nearest_code": float((y[probe.argmax(1)] == test_y).float().mean()),
            "knn_codes": float((votes.argmax(1) == test_y).float().mean()), "store_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparsey.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    data = load_dataset("digits", standardize=False)
    pixels, y_all = torch.from_numpy(data.x_train).flatten(1), torch.from_numpy(data.y_train)
    test_pixels, test_y = torch.from_numpy(data.x_test).flatten(1), torch.from_numpy(data.y_test)
    x_all, test = binarize(pixels), binarize(test_pixels)
    runs: dict = {"mac": {}, "hierarchy": {}, "reference": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
        for name in ("mac", "hierarchy"):
            runs[name][seed] = [measure(build(name, seed), x_all[perm[:n]], y_all[perm[:n]], test, test_y, seed)
                                for n in sizes]
        runs["reference"][seed] = [
            {"pixel_1nn": float((y_all[perm[:n]][torch.cdist(test_pixels, pixels[perm[:n]]).argmin(1)] == test_y)
                                .float().mean()),
             "binary_1nn": float((y_all[perm[:n]][dice(test, x_all[perm[:n]]).argmax(1)] == test_y).float().mean())}
            for n in sizes]
    table = {}
    for name, rows in runs.items():
        keys = list(next(iter(rows.values()))[0])
        table[name] = [{"stored": n, **{k: stat([rows[s][i][k] for s in rows], ddof=1) for k in keys}}
                       for i, n in enumerate(sizes)]
        print(f"\n{name}\n{'stored':>6} " + " ".join(f"{k:>16}" for k in keys))
        for row in table[name]:
            print(f"{row['stored']:6d} " + " ".join(f"{row[k]['mean']:>9.3f} ± {row[k]['std']:.3f}" for k in keys))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "sizes": sizes, "table": table, "runs": runs},
                                         indent=1))


if __name__ == "__main__":
    main()
