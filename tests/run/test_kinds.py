"""Experiment kinds: the `kind:` discriminator, pure job lists, and the label-free adaptation kind
whose methods never see a label."""
import pytest
import torch

from palimpsest.core.errors import LeakageError, SpecError
from palimpsest.core.registry import KINDS, STRATEGIES
from palimpsest.learn.strategy import Strategy
from palimpsest.run import ResultsDB, parse_spec, run_experiment

from ..conftest import tiny_spec

ADAPT = {"kind": "adapt", "name": "tiny_adapt",
         "source": {"dataset": "digits", "model": {"name": "cnn", "settings": {"channels": [8, 16], "hidden": 32,
                                                                               "norm": "batch"}},
                    "training": {"epochs": 10, "batch_size": 32, "lr": 0.05, "momentum": 0.9}},
         "shift": {"transform": "noise", "n_domains": 3, "max_noise": 1.5},
         "methods": ["source", "norm", "tent"], "seeds": [0]}


def test_the_kind_is_declared_never_guessed():
    assert parse_spec(tiny_spec()).kind == "learn"                     # the documented default
    with pytest.raises(SpecError, match="add `kind: unlearn`"):
        parse_spec({"name": "x", "forget": [{"kind": "classes", "classes": [3]}], "methods": ["retrain"]})
    with pytest.raises(SpecError, match="did you mean 'learn'"):
        parse_spec(tiny_spec(kind="lern"))
    assert set(KINDS.names()) >= {"learn", "unlearn", "adapt"}


@pytest.mark.parametrize("spec", [tiny_spec(strategies=["naive", "joint"], seeds=[0, 1]), ADAPT,
                                  {"kind": "unlearn", "name": "u", "train": {"dataset": "digits"},
                                   "forget": [{"kind": "classes", "classes": [3]}], "methods": ["retrain", "ssd"],
                                   "audits": {"reference_mia": {"n_models": 2}}, "seeds": [0, 1]}])
def test_jobs_are_a_pure_enumerable_list(spec):
    s = parse_spec(spec)
    kind = KINDS.get(s.kind).obj()
    jobs = kind.jobs(s)
    assert jobs == KINDS.get(s.kind).obj().jobs(s) and len({j.key for j in jobs}) == len(jobs)
    keys = [j.key for j in jobs]
    assert all(keys.index(dep) < keys.index(j.key) for j in jobs for dep in j.after)   # dependencies come first


def test_adaptation_methods_must_be_label_free():
    with pytest.raises(SpecError, match="reads labels; an adaptation method must be label-free"):
        parse_spec({**ADAPT, "methods": ["naive"]})


def test_an_adaptation_run_never_hands_labels_to_its_method(tmp_path):
    name = "peek_test_only"

    @STRATEGIES.register(name, summary="reads labels (to test the guard)", label_free=True)
    class Peek(Strategy):
        label_free = True

        def batch_loss(self, ctx, batch, output, values):
            return torch.nn.functional.cross_entropy(output.logits, batch["targets"])

    try:
        with pytest.raises(LeakageError, match="label-free method asked for 'targets'"):
            run_experiment(parse_spec({**ADAPT, "methods": [name]}), root=tmp_path, progress=False)
    finally:
        STRATEGIES._entries.pop(name)


def test_test_time_adaptation_runs_and_tent_moves_only_normalisation(tmp_path):
    from palimpsest.run.kinds.learn import load_model
    exp = run_experiment(parse_spec(ADAPT), root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    runs = {r["label"]: r for r in db.runs(exp)}
    assert all(r["status"] == "finished" for r in runs.values())
    source, _ = load_model(tmp_path, runs["source"]["id"])
    tent, _ = load_model(tmp_path, runs["tent"]["id"])
    changed = {n for (n, p), (_, q) in zip(source.named_parameters(), tent.named_parameters()) if not torch.equal(p, q)}
    assert changed and all(".1." in n or ".5." in n for n in changed)   # the BatchNorm layers of the cnn body
    acc = {label: db.record(r["id"]).acc["class"] for label, r in runs.items()}
    assert (acc["source"] == acc["source"][0]).all()   # no adaptation: every row the same
    # on the noisiest domain, test-batch statistics help the source model
    assert acc["norm"][-1, -1] > acc["source"][-1, -1]


def test_every_kind_names_registered_metrics_and_report_parts():
    import palimpsest.report  # noqa: F401  (registers the report parts)
    from palimpsest.core.registry import METRICS
    from palimpsest.report.page import PARTS
    for entry in KINDS.entries():
        kind = entry.obj
        assert all(m in METRICS for m in kind.metrics), entry.name
        assert kind.tables and all(p in PARTS for p in kind.tables + kind.figures), entry.name
