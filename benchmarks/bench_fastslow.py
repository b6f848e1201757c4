"""Fast/slow learning (memory/fastslow.py; Fernando et al. 2020): the plain neural memory network (an
LSTM controller with a content-read, LRUA-written memory, Santoro et al. 2016) against the same network
whose controller also adapts within each episode on synthetic gradients (Jaderberg et al. 2017).

Default (`SyntheticGradientMANN`): MANN-style digit episodes (5 classes drawn fresh, labels one step
late, 50 steps; classes = digit x rotation; training on digits 0-6, evaluated on the held-out digits
7-9), `--steps` optimizer steps of 16 episodes alternating balanced and rare-class episodes (2 of the 5
classes shown twice), then accuracy at the 1st/2nd/5th/10th presentation of a held-out class (256
balanced episodes) and at a rare held-out class's 2nd presentation (256 rare-class episodes).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fastslow.py                  # 3 seeds, one process
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fastslow.py --seed 1 --out r1.json   # one seed
    .venv/bin/python benchmarks/bench_fastslow.py --merge r0.json r1.json r2.json    # the table

`--simple`: the first, simple slot memory (`train_fast_slow`: synthetic rare-class episodes, 300 steps
of 32 episodes, accuracy at a rare class's second exposure).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from palimpsest.evaluate.aggregate import stat
from palimpsest.memory.fastslow import train_fast_slow, train_nmn

NMN_KEYS = ("instance_1", "instance_2", "instance_5", "instance_10", "rare_instance_2", "frequent_instance_2",
            "train_classes_instance_2", "train_classes_rare_instance_2", "sg_relative_error_last50",
            "train_seconds")
SIMPLE_KEYS = ("rare_second_exposure", "frequent_second_exposure", "all_seen")


def summarise(rows: list[dict], keys) -> None:
    for variant in sorted({(r["fast"], r.get("fast_source"), r.get("fast_lr")) for r in rows}, key=str):
        mine = [r for r in rows if (r["fast"], r.get("fast_source"), r.get("fast_lr")) == variant]
        summary = {k: stat([r.get(k) for r in mine]) for k in keys}
        name = f"NMN + fast updates ({variant[1] or 'synthetic'} gradient, lr {variant[2]})" if variant[0] else "plain NMN"
        print(name, f"({len(mine)} seeds)",
              json.dumps({k: f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary.items() if v["n"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, action="append", help="seeds to run (default 0 1 2)")
    parser.add_argument("--fast-lr", type=float, default=0.1)
    parser.add_argument("--fast-source", choices=("synthetic", "local"), default="synthetic",
                        help="local: the ablation whose fast step uses the exact gradient of the step's own loss")
    parser.add_argument("--fast-only", action="store_true", help="skip the plain NMN")
    parser.add_argument("--out", type=Path, help="write the rows here (default benchmarks/results/fastslow_nmn.json)")
    parser.add_argument("--merge", type=Path, nargs="+", help="summarise rows written by earlier runs")
    parser.add_argument("--simple", action="store_true", help="the simple slot memory instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = Path(__file__).parent / "results"
    if args.merge:
        rows = [r for path in args.merge for r in json.loads(path.read_text())]
        summarise(rows, NMN_KEYS)
        (args.out or results / "fastslow_nmn.json").write_text(json.dumps(rows, indent=1))
        return
    seeds = args.seed or [0, 1, 2]
    if args.simple:
        rows = [train_fast_slow(fast, steps=300, seed=seed) for fast in (False, True) for seed in seeds]
        summarise(rows, SIMPLE_KEYS)
        (args.out or results / "fastslow.json").write_text(json.dumps(rows, indent=1))
        return
    rows = []
    for seed in seeds:
        for fast in ((True,) if args.fast_only else (False, True)):
            rows.append(train_nmn(fast, steps=args.steps, seed=seed, fast_lr=args.fast_lr, fast_source=args.fast_source))
            print(json.dumps(rows[-1]), flush=True)
    summarise(rows, NMN_KEYS)
    (args.out or results / "fastslow_nmn.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
