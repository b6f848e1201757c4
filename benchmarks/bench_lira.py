"""Does the unlearning audit rank models the way an independent LiRA with 16 shadow models does?

Reads a finished unlearning experiment from a results folder (default: the newest experiment named
unlearn_fmnist_memorise, from `palimpsest run recipes/unlearn_fmnist_memorise.yaml`) and loads
every model its ledger kept (the original, the retrained model and every method, every seed) with
`load_model`. Then, independently of the audit's own attack:

1. a shadow pool = the experiment's training images plus as many held-out test images (so members
   and non-members both have IN and OUT shadows); 16 shadow models, each trained with the
   experiment's recipe on a random half of the pool (every image IN for exactly 8 of them);
2. LiRA (Carlini et al., "Membership Inference Attacks From First Principles", 2022), online, one
   pooled variance per side, φ = log(p_y / (1 − p_y)), for each stored model: positives = its
   request's forget set, negatives = the held-out test images of the pool; AUC and TPR at 1 % FPR
   (at a real threshold), plus the offline variant;
3. Spearman rank correlations over the models between LiRA's AUC and the audit's numbers: the
   per-example AUC (the headline), the privacy gap (against LiRA's own gap to the retrained model
   of the same seed), the avg gap (against |LiRA gap|) and the population attack's AUC; and over
   methods (means over seeds).

    python benchmarks/bench_lira.py --root palimpsest-results [--experiment ID] [--shadows 16]
                                    [--out benchmarks/results/lira_memorise.json]

The shadow models are cached next to the results (`<root>/models/bench_lira_shadows_*.safetensors`)
so a second run scores new models only. Results go to stdout and the JSON file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from palimpsest.core.seeding import configure_torch, derive_seed
from palimpsest.evaluate import mia
from palimpsest.evaluate.audits import model_outputs
from palimpsest.run import ResultsDB, load_model
from palimpsest.run.kinds.unlearn import load_training_data, model_factory
from palimpsest.run.spec import parse_spec
from palimpsest.run.store.files import load_state, save_state
from palimpsest.train.fit import fit

AUDIT_KEYS = ("reference_mia_auc", "privacy_gap", "avg_gap", "mia_auc", "forget_accuracy", "test_accuracy")


def shadow_models(root: Path, spec, data, n_shadows: int, seed: int):
    """16 (n_shadows) models on random halves of train + held-out test images, cached under root."""
    n_train = len(data.y_train)
    held = np.random.default_rng(derive_seed("bench_lira_heldout", seed)).permutation(len(data.y_test))[:n_train]
    x = torch.cat([data.x_train, data.x_test[held]])
    y = torch.cat([data.y_train, data.y_test[held]])
    make = model_factory(spec.train.model, data.input_shape, data.n_classes)
    key = hashlib.sha256(json.dumps([spec.train.model_dump(mode="json"), n_shadows, seed]).encode()).hexdigest()[:12]
    path = root / "models" / f"bench_lira_shadows_{key}.safetensors"
    if path.is_file():
        saved = load_state(path)
        models = []
        for weights in saved["models"]:
            model = make()
            model.load_state_dict(weights)
            models.append(model.eval())
        return mia.ReferenceModels(models, saved["masks"].numpy(), seed), held
    refs = mia.train_reference_models(make, lambda m, xs, ys, s: fit(m, xs, ys, spec.train.training, s, stage="shadow"),
                                      x, y, n_shadows, seed=derive_seed("bench_lira", seed))
    save_state(path, {"models": [m.state_dict() for m in refs.models], "masks": torch.from_numpy(refs.masks)})
    return refs, held


def lira_of(model, refs, data, held, forget: np.ndarray, shadow_phi: dict) -> dict:
    """Online and offline LiRA of one model: its forget set against the held-out pool images."""
    n_train = len(data.y_train)
    pos_pool, neg_pool = forget, n_train + np.arange(len(held))
    f = torch.as_tensor(forget)
    target = np.concatenate([model_outputs(model, data.x_train[f], data.y_train[f])["scaled_confidence"],
                             shadow_phi["target_neg"](model)])
    ref_phi = np.concatenate([shadow_phi["train"][:, pos_pool], shadow_phi["held"]], axis=1)
    ref_in = np.concatenate([refs.masks[:, pos_pool], refs.masks[:, neg_pool]], axis=1)
    out = {}
    for variant, online in (("online", True), ("offline", False)):
        scores = mia.lira_scores(target, ref_phi, ref_in, online=online)
        roc = mia.roc_metrics(scores[:len(forget)], scores[len(forget):])
        out[variant] = {"auc": roc["auc"], "auc_lo": roc["auc_lo"], "auc_hi": roc["auc_hi"],
                        "tpr_at_1pct_fpr": roc["tpr_at_fpr_0.01"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="palimpsest-results")
    ap.add_argument("--experiment", default=None, help="experiment id(s), comma-separated, of the same original "
                    "models (default: the newest unlearn_fmnist_memorise)")
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "lira_memorise.json"))
    args = ap.parse_args()
    configure_torch(1)
    root = Path(args.root)
    with ResultsDB(root, create=False) as db:
        if args.experiment:   # one or more (comma-separated) experiments of the same original models
            more = [db.experiment(x) for x in args.experiment.split(",")]
            exp = more[0]
        else:
            exps = [e for e in db.experiments() if e["name"] == "unlearn_fmnist_memorise" and e["status"] == "finished"]
            exp = db.experiment(max(exps, key=lambda e: e["created"])["id"])
            more = [exp]
        entries = [e for x in more for e in db.ledger(x["id"]) if e["status"] == "finished" and db.model_entry(e["id"])]
        seen: set[tuple] = set()   # the original and the retrained model appear in every experiment: keep one
        entries = [e for e in entries if (e["label"], e["seed"]) not in seen and not seen.add((e["label"], e["seed"]))]
    spec = parse_spec(__import__("yaml").safe_load(exp["spec_yaml"]), "stored spec")
    data = load_training_data(spec.train)
    print(f"experiment {exp['id']}: {len(entries)} stored models; training {args.shadows} shadow models ...", flush=True)
    refs, held = shadow_models(root, spec, data, args.shadows, args.seed)
    h = torch.as_tensor(held)
    shadow_phi = {"train": mia.reference_outputs(refs, data.x_train, data.y_train)["scaled_confidence"],
                  "held": mia.reference_outputs(refs, data.x_test[h], data.y_test[h])["scaled_confidence"],
                  "target_neg": lambda m: model_outputs(m, data.x_test[h], data.y_test[h])["scaled_confidence"]}
    rows = []
    for e in entries:
        model, info = load_model(root, e["id"])
        lira = lira_of(model, refs, data, held, info["split"].forget, shadow_phi)
        rows.append({"id": e["id"], "label": e["label"], "seed": e["seed"], "lira": lira,
                     "audit": {k: e["audit"].get(k) for k in AUDIT_KEYS},
                     "verdict": e["audit"].get("verdict"), "verdict_failed": e["audit"].get("verdict_failed")})
        print(f"{e['label']:>16} seed {e['seed']}: LiRA AUC {lira['online']['auc']:.3f} (offline "
              f"{lira['offline']['auc']:.3f}), audit per-example AUC {e['audit'].get('reference_mia_auc', float('nan')):.3f}",
              flush=True)
    retrain = {r["seed"]: r["lira"]["online"]["auc"] for r in rows if r["label"] == "retrain"}
    for r in rows:
        r["lira"]["gap_vs_retrain"] = r["lira"]["online"]["auc"] - retrain[r["seed"]]

    def corr(xs, ys) -> float:
        pairs = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None and np.isfinite(a) and np.isfinite(b)]
        return float(spearmanr(*zip(*pairs)).statistic) if len(pairs) > 2 else float("nan")

    lira_auc = [r["lira"]["online"]["auc"] for r in rows]
    others = [r for r in rows if r["label"] != "retrain"]
    correlations = {
        "per_example_auc_vs_lira_auc": corr([r["audit"]["reference_mia_auc"] for r in rows], lira_auc),
        "privacy_gap_vs_lira_gap": corr([r["audit"]["privacy_gap"] for r in others],
                                        [r["lira"]["gap_vs_retrain"] for r in others]),
        "avg_gap_vs_abs_lira_gap": corr([r["audit"]["avg_gap"] for r in others],
                                        [abs(r["lira"]["gap_vs_retrain"]) for r in others]),
        "population_auc_vs_lira_auc": corr([r["audit"]["mia_auc"] for r in rows], lira_auc),
    }
    labels = list(dict.fromkeys(r["label"] for r in rows))
    by_method = {lb: {"lira_auc": float(np.mean([r["lira"]["online"]["auc"] for r in rows if r["label"] == lb])),
                      "per_example_auc": float(np.mean([r["audit"]["reference_mia_auc"] for r in rows
                                                        if r["label"] == lb])),
                      "n": sum(r["label"] == lb for r in rows)} for lb in labels}
    correlations["methods_per_example_auc_vs_lira_auc"] = corr([v["per_example_auc"] for v in by_method.values()],
                                                               [v["lira_auc"] for v in by_method.values()])
    print("\nSpearman rank correlations over", len(rows), "models:")
    for k, v in correlations.items():
        print(f"  {k}: {v:.3f}")
    print("\nmethod              LiRA AUC  audit AUC")
    for lb, v in sorted(by_method.items(), key=lambda kv: -kv[1]["lira_auc"]):
        print(f"  {lb:<16} {v['lira_auc']:.3f}     {v['per_example_auc']:.3f}")
    out = {"experiment": exp["id"], "shadows": args.shadows, "rows": rows, "by_method": by_method,
           "correlations": correlations, "torch": torch.__version__, "machine": platform.machine(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
