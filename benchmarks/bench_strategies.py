"""Training cost of every registered strategy relative to naive, on the same data and batches.

Split Fashion-MNIST class-incremental (5 x 2), MLP 784-256-256-10, SGD lr 0.05, batch 128, one epoch
per experience, one CPU thread, denormals flushed. Each strategy runs with its tuned defaults for
fashion_mnist/class (learn/defaults.py), built as the runner builds it (`prepare`, `parameters`) and
with the training it declares it needs (`training_requirements`: NAPA-VQ's Adam). The strategies
take turns repetition by repetition, so a busy neighbour slows them alike; the reported number is
the median over repetitions of (strategy time / naive time in the same repetition). Replay sampling
and the regularisers' extra passes show up here. Also: the end-to-end wall time of the built-in
quickstart (`palimpsest run`).

    python benchmarks/bench_strategies.py [--quick] [--reps N] [--no-quickstart] [--only er,pcr,er+fpf]

A name joined with `+` (`er+fpf`) is the first strategy with the others as plug-ins, as a spec's
`plus:` builds it.

Results: stdout and benchmarks/results/strategies.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)

import palimpsest.learn  # noqa: E402,F401  (registers every strategy)
from palimpsest.core.registry import STRATEGIES  # noqa: E402
from palimpsest.core.seeding import derive_seed, seed_everything  # noqa: E402
from palimpsest.data.datasets import load_dataset  # noqa: E402
from palimpsest.data.scenarios import class_incremental  # noqa: E402
from palimpsest.learn import Composite, TrainContext, TrainingConfig, make_optimizer, merge, train_step  # noqa: E402
from palimpsest.learn.defaults import defaults_for  # noqa: E402
from palimpsest.models import create_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "strategies.json"


def build(name: str):
    """The strategy `name`, or for `main+plugin+...` the main strategy with those plug-ins."""
    members = [STRATEGIES.create(n, **defaults_for(n, "fashion_mnist", "class")) for n in name.split("+")]
    return members[0] if len(members) == 1 else Composite(members[0], members[1:])


def time_strategy(name: str, stream, training: TrainingConfig) -> float:
    strategy = build(name)
    seed_everything(derive_seed(0, "init"))
    model = strategy.prepare(create_model("mlp", stream=stream))   # as the runner builds it (PRD adds a projector)
    training = training.model_copy(update=strategy.training_requirements)   # NAPA-VQ trains with Adam
    ctx = TrainContext(model, make_optimizer(strategy.parameters(model), training), stream, training,
                       torch.device("cpu"), 0)
    strategy.setup(ctx)
    total = 0.0
    for k, ids in enumerate(strategy.schedule(stream)):
        ctx.step = k
        exp = merge([stream.train[i] for i in ids])
        start = time.perf_counter()
        train_step(ctx, strategy, exp)
        total += time.perf_counter() - start
    return total


def quickstart_seconds() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "palimpsest", "run", "--no-progress", "--root", tmp], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k-example subset, 1 repetition")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--no-quickstart", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated strategies to time (naive is always timed)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per experience (view-batch keeps its budget "
                        "only when epochs >= its views)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    data = load_dataset("fashion_mnist")
    if args.quick:
        data = data.subsample(10_000, None, seed=0)
    stream = class_incremental(data, 5)
    training = TrainingConfig(epochs=args.epochs, batch_size=128, lr=0.05, device="cpu")
    names = STRATEGIES.names()
    if args.only:
        names = ["naive", *[n for n in args.only.split(",") if n and n != "naive"]]
    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    print(f"torch threads {torch.get_num_threads()}, flush denormal on; {len(stream.train)} experiences, "
          f"{sum(len(e) for e in stream.train)} training examples; {reps} repetition(s)")
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for n in order:
            times[n].append(time_strategy(n, stream, training))
        for n in names:
            ratios[n].append(times[n][-1] / times["naive"][-1])
    print(f"{'strategy':<16}{'median s':>10}{'x naive':>10}")
    rows = {}
    for n in names:
        rows[n] = {"median_seconds": statistics.median(times[n]), "ratio_to_naive": statistics.median(ratios[n]),
                   "seconds": times[n]}
        print(f"{n:<16}{rows[n]['median_seconds']:>10.2f}{rows[n]['ratio_to_naive']:>10.2f}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
              "repetitions": reps, "epochs": args.epochs, "strategies": rows}
    if not args.no_quickstart:
        result["quickstart_seconds"] = quickstart_seconds()
        print(f"quickstart end to end (palimpsest run, 1 thread): {result['quickstart_seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
