"""What does a SISA deletion cost against retraining, and what does sharding cost in accuracy?

Fashion-MNIST, the small CNN, the unlearning recipes' training recipe (3 epochs, SGD 0.05, momentum
0.9, batch 128), one CPU thread, denormals flushed. Per seed, in one process:

1. one model trained on the whole training subset (the baseline a deletion would otherwise retrain);
2. a SISA ensemble (S shards x R slices) trained on the same subset, its vote and mean-softmax test
   accuracy and each constituent's;
3. deletions of k = 1, 10 and 100 random training points from copies of the ensemble: wall and CPU
   time, shards and slice steps retrained, test accuracy after, and the speed-ups against retraining
   the whole ensemble and against retraining the single model.

SISA's claim (Bourtoule et al., 2021): a deletion retrains one shard from its last clean slice, so
few requests are far cheaper than retraining, at some accuracy cost from the smaller shards; once
requests touch every shard the advantage is gone.

    python benchmarks/bench_sisa.py [--n-train 10000] [--shards 5] [--slices 5] [--seeds 0 1 2]

Results go to stdout and benchmarks/results/sisa.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from palimpsest.core.seeding import configure_torch, derive_seed
from palimpsest.core.timing import Stopwatch
from palimpsest.data import load_dataset
from palimpsest.forget import ForgetRequest, UnlearnContext, UnlearningData, resolve
from palimpsest.forget.sisa import SISA, train_sisa
from palimpsest.learn import TrainingConfig, fit
from palimpsest.models import create_model

RECIPE = TrainingConfig(epochs=3, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9)


def factory(seed: int):
    def make():
        model = create_model("cnn", (1, 28, 28), 10)
        model.observe_classes(range(10))
        return model
    return make


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    right = sum(int((model(x[i:i + 2048]).argmax(1) == y[i:i + 2048]).sum()) for i in range(0, len(y), 2048))
    return right / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--shards", type=int, default=5)
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sisa.json"))
    args = ap.parse_args()
    configure_torch(1)
    d = load_dataset("fashion_mnist")
    rng = np.random.default_rng(derive_seed("bench_sisa", "subset"))
    keep = np.sort(rng.permutation(len(d.y_train))[:args.n_train])
    x, y = torch.from_numpy(d.x_train[keep]), torch.from_numpy(d.y_train[keep])
    xt, yt = torch.from_numpy(d.x_test), torch.from_numpy(d.y_test)
    rows = []
    for seed in args.seeds:
        torch.manual_seed(derive_seed(seed, "single"))
        single = factory(seed)()
        with Stopwatch() as t_single:
            fit(single, x, y, RECIPE, seed)
        with Stopwatch() as t_ens:
            ens = train_sisa(factory(seed), x, y, args.shards, args.slices, RECIPE, seed)
        soft = copy.deepcopy(ens)
        soft.aggregation = "mean_softmax"
        row = {"seed": seed, "single": {"test": accuracy(single, xt, yt), "wall": t_single.wall, "cpu": t_single.cpu},
               "ensemble": {"test_vote": accuracy(ens, xt, yt), "test_mean_softmax": accuracy(soft, xt, yt),
                            "constituent_test": [accuracy(m, xt, yt) for m in ens.constituents],
                            "wall": t_ens.wall, "cpu": t_ens.cpu, "checkpoint_mb": ens.checkpoint_bytes() / 2 ** 20},
               "deletions": []}
        pick = np.random.default_rng(derive_seed(seed, "bench_sisa", "delete"))
        for k in (1, 10, 100):
            doomed = np.sort(pick.choice(len(y), size=k, replace=False))
            split = resolve(ForgetRequest(kind="indices", indices=doomed.tolist()), y.numpy(), 10)
            data = UnlearningData(x, y, split, SISA.reads, 10)
            ctx = UnlearnContext(RECIPE, factory(seed), seed=seed)
            method = SISA()
            with Stopwatch() as t:
                out = method.unlearn(copy.deepcopy(ens), data, ctx)
            report = method.last_report
            row["deletions"].append({
                "k": k, "wall": t.wall, "cpu": t.cpu, "shards_retrained": report["shards_retrained"],
                "slice_steps_retrained": report["slice_steps_retrained"], "test_vote_after": accuracy(out, xt, yt),
                "speedup_vs_ensemble_cpu": t_ens.cpu / t.cpu, "speedup_vs_single_cpu": t_single.cpu / t.cpu,
                "speedup_vs_ensemble_wall": t_ens.wall / t.wall, "speedup_vs_single_wall": t_single.wall / t.wall})
            print(f"seed {seed} delete {k:>3}: shards {report['shards_retrained']}, "
                  f"{t.cpu:6.1f} s CPU, {t_ens.cpu / t.cpu:5.2f}x less than the ensemble, "
                  f"{t_single.cpu / t.cpu:5.2f}x less than one model", flush=True)
        print(f"seed {seed}: single {row['single']['test']:.4f} ({t_single.cpu:.1f} s CPU), ensemble vote "
              f"{row['ensemble']['test_vote']:.4f} ({t_ens.cpu:.1f} s CPU)", flush=True)
        rows.append(row)
    summary = {}
    for key in ("single_test", "ensemble_vote"):
        vals = [r["single"]["test"] if key == "single_test" else r["ensemble"]["test_vote"] for r in rows]
        summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    for i, k in enumerate((1, 10, 100)):
        vals = [r["deletions"][i]["speedup_vs_single_cpu"] for r in rows]
        summary[f"speedup_vs_single_cpu_k{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    print(json.dumps(summary, indent=1))
    result = {"benchmark": "sisa", "date": datetime.now(timezone.utc).isoformat(), "machine": platform.machine(),
              "torch": torch.__version__, "args": vars(args), "summary": summary, "seeds": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
