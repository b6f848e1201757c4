"""How much does palimpsest's training loop, evaluation pass and runner cost beyond plain PyTorch?

Split Fashion-MNIST class-incremental (5 experiences x 2 classes), MLP 784-256-256-10, SGD lr 0.05,
batch 128, one epoch per experience, one CPU thread, denormals flushed on both sides.

1. Training: `train_step` with the naive strategy (a TrainContext built as the runner builds it)
   against a hand-written loop over the same weights, data tensors, batch order and optimizer.
   Repetitions are interleaved (A B A B ...) so drift from a busy neighbour hits both sides.
2. Evaluation: `evaluate_stream` over the 10,000 test images against a hand-written argmax loop.
3. Runner: `run_experiment` wall time against the train/eval seconds it stores in its database;
   the rest is bookkeeping (checkpoints, SQLite writes, metrics, stream building).

    python benchmarks/bench_trainer.py [--quick]

Results go to stdout and benchmarks/results/trainer.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

# Pinned before anything else runs: one thread, and denormal floats flushed to zero (ANCHORS.md,
# "CPU timing trap": denormal SGD state makes CPU training ~2x slower in any framework). Both sides
# of every comparison below run in this one process, so they share these settings.
torch.set_num_threads(1)
FLUSH_DENORMAL_SUPPORTED = torch.set_flush_denormal(True)

from torch import nn

from palimpsest.core.registry import STRATEGIES
from palimpsest.core.seeding import derive_seed, generator, pick_device, seed_everything
from palimpsest.data.datasets import load_dataset
from palimpsest.data.scenarios import Stream, class_incremental
from palimpsest.evaluate.evaluator import evaluate_stream
from palimpsest.learn import make_optimizer, train_step
from palimpsest.train.config import TrainingConfig
from palimpsest.learn.strategy import TrainContext
from palimpsest.models import MASKED_LOGIT, create_model

SEED = 0
N_EXPERIENCES = 5
GOAL_RATIO = 1.05  # palimpsest time / hand-written time
RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"


# ----------------------------------------------------------------------------------- set-up

def build_stream(train_subset: int | None) -> Stream:
    data = load_dataset("fashion_mnist")
    if train_subset:
        data = data.subsample(train_subset, None, seed=0)
    return class_incremental(data, N_EXPERIENCES, seed=SEED)


def training_config() -> TrainingConfig:
    # device pinned to the CPU: this benchmark is about the CPU loop even on a machine with a GPU
    return TrainingConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, device="cpu")


def initial_state(stream: Stream) -> dict[str, torch.Tensor]:
    """The weights the runner would start from (it seeds with derive_seed(seed, "init"))."""
    seed_everything(derive_seed(SEED, "init"))
    model = create_model("mlp", stream=stream, head="single")
    return {k: v.clone() for k, v in model.state_dict().items()}


def palimpsest_setup(stream: Stream, training: TrainingConfig, init: dict):
    """Strategy, model, optimizer and TrainContext exactly as the learn kind's jobs build them."""
    strategy = STRATEGIES.create("naive")
    strategy.check_stream(stream)
    device = pick_device(training.device)
    model = create_model("mlp", stream=stream, head="single").to(device)
    model.load_state_dict(init)
    optimizer = make_optimizer(model.parameters(), training)
    ctx = TrainContext(model, optimizer, stream, training, device, SEED)
    strategy.setup(ctx)
    return ctx, strategy


def raw_network(init: dict) -> nn.Sequential:
    """The same MLP as plain nn.Sequential, loaded with the same initial weights."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    renamed = {}
    for key, value in init.items():
        if key.startswith("backbone."):
            renamed[key[len("backbone."):]] = value
        elif key.startswith("head."):
            renamed["5." + key[len("head."):]] = value
    net.load_state_dict(renamed)  # strict: every weight is matched
    return net


# ----------------------------------------------------------------------------------- training

class PalimpsestSide:
    """train_step with the naive strategy, one experience per call, as the learn kind's jobs drive it."""

    def __init__(self, stream: Stream, training: TrainingConfig, init: dict) -> None:
        self.stream = stream
        self.ctx, self.strategy = palimpsest_setup(stream, training, init)
        self.model = self.ctx.model
        self.train_step_seconds: list[float] = []

    def step(self, k: int) -> float:
        start = time.perf_counter()
        self.ctx.step = k  # as the runner does before each step
        stats = train_step(self.ctx, self.strategy, self.stream.train[k])
        seconds = time.perf_counter() - start
        self.train_step_seconds.append(stats.seconds)
        return seconds


class RawSide:
    """What a careful hand-written class-incremental loop does: same shuffles (same generator
    seeds as train_step), logits of classes not seen yet masked as the single head masks them."""

    def __init__(self, stream: Stream, training: TrainingConfig, init: dict) -> None:
        self.stream, self.batch_size = stream, training.batch_size
        self.net = raw_network(init)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=training.lr)
        self.active = torch.zeros(stream.n_classes, dtype=torch.bool)
        # each experience's tensors, in memory before the clock starts, as a hand-written loop holds them
        self.data = [(e.inputs, e.targets) for e in stream.train]

    def step(self, k: int) -> float:
        start = time.perf_counter()
        net, opt, bs, exp = self.net, self.opt, self.batch_size, self.stream.train[k]
        net.train()
        self.active[list(exp.classes)] = True
        inactive = ~self.active
        x, y = self.data[k]
        order = torch.randperm(len(exp), generator=generator(SEED, "shuffle", k))
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            logits = net(x[idx]).masked_fill(inactive, MASKED_LOGIT)
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start


def train_both(stream: Stream, training: TrainingConfig, init: dict, flip: bool):
    """Train both sides over the whole stream, alternating experience by experience (and which
    side goes first), so a busy neighbour slows both alike; return each side's total seconds."""
    pal, raw = PalimpsestSide(stream, training, init), RawSide(stream, training, init)
    t_pal = t_raw = 0.0
    for k in range(len(stream.train)):
        if (k % 2 == 0) != flip:
            t_pal += pal.step(k)
            t_raw += raw.step(k)
        else:
            t_raw += raw.step(k)
            t_pal += pal.step(k)
    return t_pal, t_raw, pal, raw


def max_weight_difference(model, net: nn.Sequential) -> float:
    a = [model.backbone[1].weight, model.backbone[1].bias, model.backbone[3].weight, model.backbone[3].bias,
         model.head.weight, model.head.bias]
    b = [net[1].weight, net[1].bias, net[3].weight, net[3].bias, net[5].weight, net[5].bias]
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a, b))


def summarise(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}


def bench_training(stream: Stream, training: TrainingConfig, init: dict, reps: int) -> dict:
    n_examples = sum(len(e) for e in stream.train)
    train_both(stream, training, init, False)  # untimed warm-up (allocator, first-call dispatch)
    pal, raw, pal_steps, pair_ratios, diffs = [], [], [], [], []
    for r in range(reps):
        t_pal, t_raw, pal_side, raw_side = train_both(stream, training, init, flip=r % 2 == 1)
        pal.append(t_pal)
        raw.append(t_raw)
        pal_steps.append(pal_side.train_step_seconds)
        pair_ratios.append(t_pal / t_raw)
        diffs.append(max_weight_difference(pal_side.model, raw_side.net))
    model = pal_side.model
    p, q = summarise(pal), summarise(raw)
    # The verdict uses the median of per-repetition ratios: both sides of a repetition ran
    # interleaved, so drift cancels within it; the ratios of medians and of minima are reported too.
    ratio = statistics.median(pair_ratios)
    per_experience = statistics.median(t for steps in pal_steps for t in steps)
    return {
        "n_examples_per_rep": n_examples, "reps": reps,
        "palimpsest": {**p, "examples_per_s_median": n_examples / p["median_s"],
                       "examples_per_s_best": n_examples / p["min_s"],
                       "train_step_seconds_median": per_experience},
        "raw": {**q, "examples_per_s_median": n_examples / q["median_s"],
                "examples_per_s_best": n_examples / q["min_s"]},
        "ratio": ratio, "ratio_of_medians": p["median_s"] / q["median_s"], "ratio_of_mins": p["min_s"] / q["min_s"],
        "pairwise_ratios": pair_ratios,
        "pairwise_ratio_quartiles": statistics.quantiles(pair_ratios, n=4) if reps > 1 else [ratio] * 3,
        "goal_ratio": GOAL_RATIO, "meets_goal": ratio <= GOAL_RATIO,
        "max_abs_weight_difference": max(diffs),
        "final_model": model,  # removed before writing JSON
    }


# ----------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def raw_eval(net: nn.Sequential, stream: Stream, active: torch.Tensor, batch_size: int, task_view: bool):
    """Class-IL argmax (and, with task_view, the task-IL argmax over each test experience's classes)."""
    start = time.perf_counter()
    net.eval()
    inactive = ~active
    class_preds, task_preds = [], []
    for exp in stream.test:
        if task_view:
            others = torch.ones(stream.n_classes, dtype=torch.bool)
            others[list(exp.classes)] = False
        for i in range(0, len(exp), batch_size):
            logits = net(exp.inputs[i:i + batch_size]).masked_fill(inactive, MASKED_LOGIT)
            class_preds.append(logits.argmax(1))
            if task_view:
                task_preds.append(logits.masked_fill(others, MASKED_LOGIT).argmax(1))
    seconds = time.perf_counter() - start
    return seconds, torch.cat(class_preds), torch.cat(task_preds) if task_view else None


def bench_evaluation(stream: Stream, training: TrainingConfig, model, reps: int, train_step_s: float) -> dict:
    init = {k: v.clone() for k, v in model.state_dict().items()}
    net = raw_network(init)
    bs = training.eval_batch_size
    n_test = sum(len(e) for e in stream.test)
    evaluate_stream(model, stream, bs, "cpu")  # warm-up
    raw_eval(net, stream, model.active, bs, True)
    pal, raw_class, raw_both = [], [], []
    for _ in range(reps):
        ev = evaluate_stream(model, stream, bs, "cpu")
        pal.append(ev.seconds)
        t, class_pred, _ = raw_eval(net, stream, model.active, bs, False)
        raw_class.append(t)
        t, class_pred, task_pred = raw_eval(net, stream, model.active, bs, True)
        raw_both.append(t)
    same = bool((torch.from_numpy(ev.class_pred) == class_pred).all()
                and (torch.from_numpy(ev.task_pred) == task_pred).all())
    p = statistics.median(pal)
    return {
        "n_test_images": n_test, "batch_size": bs, "reps": reps,
        "evaluate_stream": summarise(pal),
        "raw_class_argmax": summarise(raw_class),
        "raw_class_and_task_argmax": summarise(raw_both),
        "ratio_vs_raw_class_argmax": p / statistics.median(raw_class),
        "ratio_vs_raw_class_and_task_argmax": p / statistics.median(raw_both),
        "eval_over_one_train_step": p / train_step_s,
        "same_predictions": same,
    }


# ----------------------------------------------------------------------------------- runner

@contextmanager
def timed_calls(totals: dict[str, float]):
    """Time the runner's bookkeeping calls by wrapping them for the duration (nothing in src/ is
    changed; the originals are put back on exit)."""
    from palimpsest.run.kinds import learn
    from palimpsest.run.store.writer import Outbox, Writer
    targets = [(learn, "build_stream", "build_stream"), (Outbox, "save_state", "checkpoints (save_state)"),
               (Outbox, "save_arrays", "prediction files (save_arrays)"), (Writer, "apply", "store records (writer)"),
               (learn, "compute_metrics", "metrics")]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]

    def wrap(fn, label):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
        return timed

    for (owner, attr, label), (_, _, fn) in zip(targets, originals):
        setattr(owner, attr, wrap(fn, label))
    try:
        yield totals
    finally:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)


def bench_runner(train_subset: int, reps: int) -> dict:
    from palimpsest.run import run_experiment
    from palimpsest.run.store.db import ResultsDB
    from palimpsest.run.spec import parse_spec
    spec = parse_spec({
        "name": "bench_runner",
        "benchmark": {"dataset": "fashion_mnist", "scenario": "class", "n_experiences": N_EXPERIENCES,
                      "train_subset": train_subset},
        "model": {"name": "mlp"},
        "training": {"epochs": 1, "batch_size": 128, "lr": 0.05, "device": "cpu"},
        "strategies": ["naive"], "seeds": [SEED]}, "bench_trainer")

    def once(breakdown: dict | None) -> dict:
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            exp_id = run_experiment(spec, root, progress=False)
            wall = time.perf_counter() - start
            db = ResultsDB(root)
            try:
                steps = db.steps(db.runs(exp_id)[0]["id"])
            finally:
                db.close()
        train = sum(s["train_seconds"] or 0.0 for s in steps)
        evaluation = sum(s["eval_seconds"] or 0.0 for s in steps)
        row = {"wall_s": wall, "train_s": train, "eval_s": evaluation, "bookkeeping_s": wall - train - evaluation,
               "n_train_steps": len(steps) - 1, "n_evaluations": len(steps)}
        if breakdown is not None:
            row["bookkeeping_breakdown_s"] = breakdown
        return row

    once(None)  # warm-up: first-call imports (sqlite, safetensors, yaml, rich) are not per-run costs
    rows = [once(None) for _ in range(reps)]
    with timed_calls({}) as totals:
        profiled = once(totals)  # separate run: the wrappers add a little time of their own
    best = min(rows, key=lambda r: r["bookkeeping_s"])
    n = best["n_train_steps"]
    return {"train_subset": train_subset, "reps": reps, "runs": rows, "with_breakdown": profiled,
            "best": {**best, "bookkeeping_fraction": best["bookkeeping_s"] / best["wall_s"],
                     "eval_fraction": best["eval_s"] / best["wall_s"],
                     "bookkeeping_per_step_s": best["bookkeeping_s"] / n}}


# ----------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions on a 10k training subset (< 30 s)")
    parser.add_argument("--reps", type=int, default=None, help="training repetitions per side (default 9, quick 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--no-runner", action="store_true", help="skip the run_experiment measurement")
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 9)
    subset = 10_000 if args.quick else None

    settings = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "flush_denormal": FLUSH_DENORMAL_SUPPORTED, "python": platform.python_version(),
                "machine": platform.processor() or platform.machine(), "quick": args.quick}
    print(f"settings: torch {settings['threads']} thread(s), set_flush_denormal(True) -> "
          f"{FLUSH_DENORMAL_SUPPORTED} (same for palimpsest and the hand-written loop), torch {torch.__version__}")

    stream = build_stream(subset)
    training = training_config()
    init = initial_state(stream)
    n_train = sum(len(e) for e in stream.train)
    print(f"benchmark: split Fashion-MNIST class-IL {N_EXPERIENCES}x2, {n_train} training examples, MLP 256-256, "
          f"SGD lr {training.lr}, batch {training.batch_size}, 1 epoch/experience, {reps} interleaved reps per side")

    tr = bench_training(stream, training, init, reps)
    model = tr.pop("final_model")
    print("\n1. training (5 experiences)       median s   best s    examples/s (median)")
    for name, key in (("palimpsest train_step (naive)", "palimpsest"), ("hand-written PyTorch loop", "raw")):
        row = tr[key]
        print(f"   {name:<31}{row['median_s']:8.3f} {row['min_s']:8.3f}    {row['examples_per_s_median']:10.0f}")
    verdict = "MEETS" if tr["meets_goal"] else "MISSES"
    q1, _, q3 = tr["pairwise_ratio_quartiles"]
    print(f"   ratio palimpsest/raw: {tr['ratio']:.3f} (median of per-rep ratios, quartiles {q1:.3f}-{q3:.3f}); "
          f"{tr['ratio_of_medians']:.3f} (of medians), {tr['ratio_of_mins']:.3f} (of mins)")
    print(f"   -> {verdict} the goal ratio <= {GOAL_RATIO}")
    print(f"   max |weight difference| after training: {tr['max_abs_weight_difference']:.3g}")

    ev = bench_evaluation(stream, training, model, max(reps, 5), tr["palimpsest"]["train_step_seconds_median"])
    print(f"\n2. evaluation ({ev['n_test_images']} test images, batch {ev['batch_size']})   median s   best s")
    for name, key in (("evaluate_stream (class+task IL)", "evaluate_stream"),
                      ("hand-written class argmax", "raw_class_argmax"),
                      ("hand-written class+task argmax", "raw_class_and_task_argmax")):
        print(f"   {name:<38}{ev[key]['median_s']:8.4f} {ev[key]['min_s']:8.4f}")
    print(f"   evaluate_stream / raw: {ev['ratio_vs_raw_class_argmax']:.3f} (class only), "
          f"{ev['ratio_vs_raw_class_and_task_argmax']:.3f} (class+task); same predictions: {ev['same_predictions']}")
    print(f"   one evaluation pass = {ev['eval_over_one_train_step']:.3f} x one experience's training "
          f"({tr['palimpsest']['train_step_seconds_median']:.3f} s)")

    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "settings": settings,
               "training": tr, "evaluation": ev}
    if not args.no_runner:
        rn = bench_runner(subset or 10_000, 2 if args.quick else 5)
        b = rn["best"]
        print(f"\n3. run_experiment (naive, {rn['train_subset']} training examples, {b['n_train_steps']} steps, "
              f"best of {rn['reps']})")
        print(f"   wall {b['wall_s']:.3f} s = train {b['train_s']:.3f} + eval {b['eval_s']:.3f} "
              f"({b['n_evaluations']} passes) + bookkeeping {b['bookkeeping_s']:.3f} s "
              f"({b['bookkeeping_fraction']:.1%} of wall, {b['bookkeeping_per_step_s'] * 1000:.1f} ms/step)")
        parts = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in rn["with_breakdown"]["bookkeeping_breakdown_s"].items())
        print(f"   bookkeeping calls (one extra run, {rn['with_breakdown']['bookkeeping_s']:.3f} s in all): {parts}")
        results["runner"] = rn

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
