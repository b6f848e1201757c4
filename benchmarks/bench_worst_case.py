"""Are worst-case forget sets ("Challenging Forgets", Fan et al. 2024) harder than random sets of
the same size, for several unlearning methods?

For each seed of a finished memorising benchmark (`palimpsest run recipes/unlearn_fmnist_memorise.yaml`,
same --root): run one unlearning experiment per seed with that benchmark's original model and
the per-example attack's reference models (reused from the root, same training spec) and two forget
requests of `--size` examples: `{kind: worst_case, objective: ...}`, whose set the unlearn kind
selects by the bi-level selection of forget/worst_case.py and stores (`--objective retrain_gap`,
the default: the set whose true-label probability after the lower level stays farthest above what
the reference models that left each image out give it; `forget_loss`: the paper's objective, the
set best remembered after unlearning; gradient ascent as the lower level), and `{kind: random}` of
the same fraction (drawn from the run's seed); the methods (default: finetune, gradient_ascent,
neggrad_plus, random_labels) are audited against the model retrained without each set. Per method: forget-accuracy gap and privacy
gap to the retrained model, and the verdict, worst-case vs random.

    python benchmarks/bench_worst_case.py --root palimpsest-results [--seeds 0,1,2] [--size 250]
                                          [--objective retrain_gap|forget_loss]
                                          [--out benchmarks/results/worst_case.json]
    python benchmarks/bench_worst_case.py --summarise benchmarks/results/worst_case.json

The selection reads the same reference models as the audit's per-example attack, so the privacy gap
of a worst-case set is measured with the models that chose it; the forget-accuracy gap is measured
against the model retrained without the set, which the selection never sees.
"""
from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from palimpsest.core.seeding import configure_torch
from palimpsest.evaluate.mia import ReferenceModels, out_of_training_confidence
from palimpsest.forget.worst_case import OBJECTIVES, after_lower_level
from palimpsest.run import ResultsDB, load_model
from palimpsest.run.kinds.unlearn import UnlearnKind, load_stored_model, load_training_data, run_unlearning
from palimpsest.run.spec import parse_spec

KEYS = ("forget_accuracy", "privacy_gap", "reference_mia_auc", "test_accuracy")


def reference_models(root: Path, spec, seed: int) -> ReferenceModels:
    """The per-example attack's reference models of this seed's original, as the run stored them."""
    a = spec.audits.reference_mia
    model_id = f"mia_references/{spec.original_digest(seed)}_{a.n_models}_{a.pool_fraction}"
    with ResultsDB(root, create=False) as db:
        if db.model_entry(model_id) is None:
            raise SystemExit(f"no reference models for seed {seed} under {root}: run the memorising benchmark first")
        return load_stored_model(db, model_id)[0]


def _mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(rows: list[dict]) -> dict:
    """Per method and side (worst, random): forget-accuracy gap to the retrained model (points) and
    privacy gap (AUC points), mean ± sample std over seeds, and verdicts matching retraining; printed."""
    table = {}
    for r in rows:
        if "label" not in r or r["status"] != "finished":
            continue
        ref = next(x for x in rows if x.get("label") == "retrain" and x["seed"] == r["seed"]
                   and x["request"] == r["request"])
        cell = table.setdefault(r["label"], {"worst": [], "random": []})[r["request"]]
        cell.append({"forget_gap": 100 * (r["forget_accuracy"] - ref["forget_accuracy"]),
                     "privacy_gap": None if r["privacy_gap"] is None else 100 * r["privacy_gap"],
                     "forget_accuracy": 100 * r["forget_accuracy"], "matches": r["verdict"] == "matches retrain",
                     "auc": None if r["reference_mia_auc"] is None else 100 * r["reference_mia_auc"]})
    summary = {}
    print("\nmean ± sample std over seeds, points   forget acc (worst | random)   forget-acc gap to retrain (worst | random)"
          "   privacy gap (worst | random)   per-example AUC (worst | random)   matches retrain")
    for label, cells in table.items():
        s = {side: {**{k: _mean_std(c[k] for c in v) for k in ("forget_accuracy", "forget_gap", "privacy_gap", "auc")},
                    "matches": int(sum(c["matches"] for c in v)), "n": len(v)} for side, v in cells.items()}
        summary[label] = s
        w, r = s["worst"], s["random"]

        def f(x):
            return f"{x[0]:+6.1f} ± {x[1]:4.1f}"
        print(f"{label:<16} {w['forget_accuracy'][0]:5.1f} | {r['forget_accuracy'][0]:5.1f}   "
              f"{f(w['forget_gap'])} | {f(r['forget_gap'])}   {f(w['privacy_gap'])} | {f(r['privacy_gap'])}   {f(w['auc'])} | {f(r['auc'])}   "
              f"{w['matches']}/{w['n']} | {r['matches']}/{r['n']}")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="palimpsest-results")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--size", type=int, default=250)
    ap.add_argument("--methods", default="finetune,gradient_ascent,neggrad_plus,random_labels")
    ap.add_argument("--objective", default="retrain_gap", choices=OBJECTIVES)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "worst_case.json"))
    ap.add_argument("--summarise", metavar="JSON", help="print the summary of a stored result and exit")
    args = ap.parse_args()
    if args.summarise:
        stored = json.loads(Path(args.summarise).read_text())
        for r in stored["rows"]:
            if "selection" in r:
                print(f"seed {r['seed']}: selection {r['selection']}")
        summarise(stored["rows"])
        return
    configure_torch(1)
    root = Path(args.root)
    with ResultsDB(root, create=False) as db:
        exps = [e for e in db.experiments() if e["name"] == "unlearn_fmnist_memorise" and e["status"] == "finished"]
        exp = db.experiment(max(exps, key=lambda e: e["created"])["id"])
    base = yaml.safe_load(exp["spec_yaml"])
    data = load_training_data(parse_spec(base).train)
    rows = []
    fraction = args.size / len(data.y_train)
    for seed in [int(s) for s in args.seeds.split(",")]:
        spec = parse_spec(dict(base, name="unlearn_fmnist_worst_case", seeds=[seed],
                               forget=[{"kind": "worst_case", "fraction": fraction, "objective": args.objective},
                                       {"kind": "random", "fraction": fraction}],
                               methods=["retrain", *args.methods.split(",")]))
        exp_id = run_unlearning(spec, root=root, progress=False)
        with ResultsDB(root, create=False) as db:
            entries = db.ledger(exp_id)
            chosen = load_stored_model(db, UnlearnKind._selection_id(spec, seed, 0))[0]
            random = load_stored_model(db, f"{exp_id}/seed{seed}/request1/original")[1]["split"].forget
        worst = chosen["indices"]
        model, _ = load_model(root, f"{exp_id}/seed{seed}/request0/original")
        q = out_of_training_confidence(reference_models(root, spec, seed), data.x_train, data.y_train)
        after = {side: after_lower_level(model, data.x_train, data.y_train, idx)
                 for side, idx in (("worst", worst), ("random", random))}
        selection = {"objective": args.objective, "objective_first": float(chosen["objective"][0]),
                     "objective_last": float(chosen["objective"][-1]),
                     **{f"loss_after_ascent_{k}": v["loss"] for k, v in after.items()},
                     **{f"out_confidence_{k}": float(q[idx].mean()) for k, idx in (("worst", worst), ("random", random))},
                     **{f"gap_after_ascent_{k}": float(after[k]["correct_prob"].mean() - q[idx].mean())
                        for k, idx in (("worst", worst), ("random", random))},
                     # how much of the set a one-level heuristic (the lowest out-of-training confidence) also picks
                     "share_of_lowest_out_confidence": float(np.isin(worst, np.argsort(q)[:args.size]).mean()),
                     "worst_classes": np.bincount(data.y_train[torch.as_tensor(worst)].numpy(), minlength=10).tolist()}
        print(f"seed {seed}: selection {selection}", flush=True)
        for e in entries:
            request = "worst" if "/request0/" in e["id"] else "random"
            rows.append({"seed": seed, "request": request, "label": e["label"], "status": e["status"],
                         "verdict": (e["audit"] or {}).get("verdict"), "failed": (e["audit"] or {}).get("verdict_failed"),
                         **{k: (e["audit"] or {}).get(k) for k in KEYS}})
        rows.append({"seed": seed, "selection": selection, "experiment": exp_id})
    summary = summarise(rows)
    out = {"source": exp["id"], "size": args.size, "objective": args.objective, "rows": rows, "summary": summary, "torch": torch.__version__,
           "machine": platform.machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
