"""Bit-level numbers of small recipes, to prove a refactor moved nothing.

    python scripts/golden.py capture before.json     # on the old code (about 45 s on one thread)
    python scripts/golden.py capture after.json      # on the new code
    python scripts/golden.py compare before.json after.json

Captures, on digits: every strategy in class, task, task multi-head, domain, online and recurring
scenarios (MLP; CNN and slim ResNet for the per-example importance and BatchNorm paths): accuracy
matrices, a hash of the predictions and of the final weights, per-step losses and every metric;
every unlearner on a class request and a random request with all audits, and forgetting from a
stored run. Exact float equality is expected on the same machine and torch version; `palimpsest
regress` checks published numbers within bands across machines.
"""
import hashlib, json, sys, tempfile, os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np, torch
torch.set_num_threads(1); torch.set_flush_denormal(True)
from palimpsest.run import parse_spec, run_experiment, ResultsDB, load_model
from palimpsest.run.kinds.unlearn import parse_unlearning_spec
from palimpsest.run.kinds.unlearn import run_unlearning, forget_from_run

def h(a): return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

def learn_specs():
    # the strategies of palimpsest 0.1.0 (a fixed list: captures stay comparable as strategies are added)
    all_s = ["agem", "cumulative", "der", "derpp", "er", "er_ace", "ewc", "from_scratch", "gdumb", "icarl", "joint", "l2",
             "lwf", "mas", "naive", "online_ewc", "si"]
    base = {"model": {"name": "mlp", "settings": {"hidden": [32]}}, "training": {"epochs": 2, "batch_size": 32, "lr": 0.05}, "seeds": [0, 1]}
    def sset(names): return [{"name": n, "settings": ({"buffer_size": 60} if n in ("er","der","derpp","er_ace","agem") else {"memory_size": 60} if n in ("icarl","gdumb") else {})} for n in names]
    yield "class", dict(base, name="g_class", benchmark={"dataset": "digits", "n_experiences": 5}, strategies=sset(all_s))
    yield "task", dict(base, name="g_task", benchmark={"dataset": "digits", "scenario": "task", "n_experiences": 5}, strategies=sset(all_s))
    yield "task_multi", dict(base, name="g_taskm", benchmark={"dataset": "digits", "scenario": "task", "n_experiences": 5}, model={"name": "mlp", "head": "multi", "settings": {"hidden": [32]}}, strategies=sset([s for s in all_s if s not in ("icarl",)]))
    yield "domain", dict(base, name="g_domain", benchmark={"dataset": "digits", "scenario": "domain", "n_experiences": 3}, strategies=sset([s for s in all_s if s != "icarl"]))
    yield "online", dict(base, name="g_online", training={"epochs": 1, "batch_size": 32, "lr": 0.05}, benchmark={"dataset": "digits", "n_experiences": 5, "online_batch_size": 10}, strategies=sset(all_s))
    yield "recurring", dict(base, name="g_rec", benchmark={"dataset": "digits", "scenario": "domain", "n_experiences": 3, "recurrence": {"length": 6, "distribution": "power_law"}}, strategies=sset(["naive", "ewc", "er", "lwf", "si"]))
    yield "cnn", dict(base, name="g_cnn", model={"name": "cnn", "settings": {"channels": [4, 8], "hidden": 16}}, benchmark={"dataset": "digits", "n_experiences": 5, "validation_fraction": 0.1}, strategies=sset(["naive", "ewc", "mas", "si", "lwf", "derpp", "icarl", "agem"]), seeds=[0])
    yield "resnet", dict(base, name="g_res", model={"name": "resnet18_slim", "settings": {"width": 4}}, benchmark={"dataset": "digits", "scenario": "task", "n_experiences": 5}, training={"epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9}, strategies=sset(["naive", "ewc", "lwf", "er"]), seeds=[0])

def capture_learn(root, out):
    for key, spec in learn_specs():
        s = parse_spec(spec)
        exp = run_experiment(s, root=root, progress=False)
        db = ResultsDB(root)
        for r in db.runs(exp):
            rec = db.record(r["id"])
            model, _ = load_model(root, r["id"])
            params = h(torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point]).numpy())
            out[f"{key}/{r['label']}/seed{r['seed']}"] = {
                "acc_class": rec.acc["class"].tolist(), "acc_task": rec.acc["task"].tolist(),
                "pred": h(np.stack([np.concatenate(rec.predictions[v]) for v in ("class", "task")])),
                "metrics": {k: (None if np.isnan(v) else v) for k, v in sorted(db.metrics(r["id"]).items())},
                "params": params, "loss": [s["mean_loss"] for s in db.steps(r["id"]) if s["step"] >= 0]}
        db.close()
        print("done", key, flush=True)

def capture_unlearn(root, out):
    import palimpsest.forget  # noqa: F401  (registers the unlearners)
    methods = ["finetune", "gradient_ascent", "iau", "neggrad_plus", "random_labels", "retrain", "salun", "scrub",
               "sisa", "ssd"]   # the unlearners of palimpsest 0.1.0
    spec = {"name": "g_unlearn", "train": {"dataset": "digits", "model": {"name": "mlp", "settings": {"hidden": [32]}},
            "training": {"epochs": 8, "batch_size": 32, "lr": 0.05, "momentum": 0.9}},
            "forget": [{"kind": "classes", "classes": [3]}, {"kind": "random", "fraction": 0.1, "seed": 1}],
            "methods": methods + [{"name": "iau", "label": "iau_sgd3", "settings": {"optimizer": "sgd", "steps": 3, "lr": 0.05}},
                                  {"name": "ssd", "label": "ssd_ex", "settings": {"estimator": "example", "target_forget_accuracy": None}},
                                  {"name": "random_labels", "label": "rl_union", "settings": {"retain_ratio": None, "epochs": 1}}],
            "audits": {"reference_mia": {"n_models": 4}, "relearn": {"n_examples": 10, "steps": 5, "lr": 0.03}, "probe": True},
            "seeds": [0, 1]}
    exp = run_unlearning(parse_unlearning_spec(spec), root=root, progress=False)
    db = ResultsDB(root)
    for e in db.ledger(exp):
        out["unlearn/" + e["id"].split("/", 1)[1]] = {k: v for k, v in sorted(e["audit"].items()) if "second" not in k and "speedup" not in k}
    cnn = dict(spec, name="g_unlearn_cnn", train=dict(spec["train"], model={"name": "cnn", "settings": {"channels": [4, 8], "hidden": 16}}, training={"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9}), forget=[spec["forget"][0]], methods=["ssd", "salun", "scrub", "neggrad_plus", "gradient_ascent", "finetune"], seeds=[0], audits={"relearn": {"n_examples": 10, "steps": 5, "lr": 0.03}})
    exp = run_unlearning(parse_unlearning_spec(cnn), root=root, progress=False)
    for e in db.ledger(exp):
        out["unlearn_cnn/" + e["id"].split("/", 1)[1]] = {k: v for k, v in sorted(e["audit"].items()) if "second" not in k and "speedup" not in k}
    # forget from a stored learning run
    exp = run_experiment(parse_spec({"name": "g_joint", "benchmark": {"dataset": "digits"}, "model": {"name": "mlp", "settings": {"hidden": [32]}}, "training": {"epochs": 5, "batch_size": 32}, "strategies": ["joint"]}), root=root, progress=False)
    fexp = forget_from_run(root, f"{exp}/joint/seed0", [__import__("palimpsest.forget", fromlist=["ForgetRequest"]).ForgetRequest(kind="classes", classes=[2])], [("retrain", "retrain", {}), ("ssd", "ssd", {}), ("finetune", "finetune", {})])
    for e in db.ledger(fexp):
        out["forget_from_run/" + e["label"]] = {k: v for k, v in sorted(e["audit"].items()) if "second" not in k and "speedup" not in k}
    db.close()

def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    bad = 0
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            bad += 1
            if bad <= 15:
                va, vb = a.get(k), b.get(k)
                if isinstance(va, dict) and isinstance(vb, dict):
                    diff = {kk: (va.get(kk), vb.get(kk)) for kk in set(va) | set(vb) if va.get(kk) != vb.get(kk)}
                    print(k, str(diff)[:400])
                else:
                    print(k, str(va)[:200], str(vb)[:200])
    print(f"{len(a)} vs {len(b)} entries, {bad} differ")
    return bad


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "compare":
        sys.exit(1 if compare(sys.argv[2], sys.argv[3]) else 0)
    parts, path = (("learn", "unlearn") if what == "capture" else (what,)), sys.argv[2]
    out = {}
    with tempfile.TemporaryDirectory() as root:
        if "learn" in parts:
            capture_learn(root, out)
        if "unlearn" in parts:
            capture_unlearn(root, out)
    json.dump(out, open(path, "w"), indent=1, sort_keys=True)
