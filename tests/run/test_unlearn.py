"""The unlearning runner: the ledger under failures and kills, the cached reference, resume, the
models it keeps and the artefacts it hands to each method."""
import numpy as np
import pytest
import torch

import palimpsest.forget  # noqa: F401
from palimpsest.core.errors import SpecError
from palimpsest.core.registry import UNLEARNERS
from palimpsest.forget.base import Unlearner
from palimpsest.run import ResultsDB
from palimpsest.run.kinds.unlearn import run_unlearning
from palimpsest.run.kinds.unlearn import load_training_data, parse_unlearning_spec


def tiny(**over):
    spec = {"name": "tiny_unlearn",
            "train": {"dataset": "digits", "model": {"name": "mlp", "settings": {"hidden": [32]}},
                      "training": {"epochs": 8, "batch_size": 32, "lr": 0.05, "momentum": 0.9}},
            "forget": [{"kind": "classes", "classes": [3]}], "methods": ["retrain"], "seeds": [0]}
    spec.update(over)
    return parse_unlearning_spec(spec)


class Boom(Exception):
    pass


@pytest.fixture
def crashing_unlearner():
    name = "crash_test_only"

    @UNLEARNERS.register(name, summary="raises, to test the ledger")
    class Crash(Unlearner):
        reads = frozenset({"forget"})

        def unlearn(self, model, data, ctx):
            data.forget()
            raise Boom("method crashed")

    yield name
    UNLEARNERS._entries.pop(name)


def test_ledger_records_reference_original_and_methods(tmp_path):
    exp = run_unlearning(tiny(), root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    entries = db.ledger(exp)
    assert [e["label"] for e in entries] == ["original", "retrain"]
    assert all(e["status"] == "finished" for e in entries)
    retrain = entries[1]["audit"]
    assert retrain["forget_accuracy"] == 0.0  # the retrained model never saw class 3
    assert entries[0]["audit"]["forget_accuracy"] > 0.9 and entries[0]["audit"]["avg_gap"] > 0.2
    assert db.experiment(exp)["status"] == "finished"
    # cost: wall and CPU time of retraining, and the retrained row's speed-up over itself is 1
    assert retrain["cpu_seconds"] > 0 and retrain["seconds"] > 0
    assert retrain["speedup_vs_retrain"] == pytest.approx(1) and retrain["speedup_vs_retrain_cpu"] == pytest.approx(1)


def test_a_crash_leaves_a_visible_failed_record_and_resume_finishes(tmp_path, crashing_unlearner):
    spec = tiny(methods=["retrain", crashing_unlearner])
    with pytest.raises(Boom):
        run_unlearning(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    entries = {e["label"]: e for e in db.ledger()}
    assert entries[crashing_unlearner]["status"] == "failed" and "method crashed" in entries[crashing_unlearner]["error"]
    assert entries["retrain"]["status"] == "finished"
    exp = entries["retrain"]["experiment_id"]
    assert db.experiment(exp)["status"] == "failed"
    # resume re-runs only what did not finish; the reference model comes from the cache
    models_before = {m[0] for m in db.conn.execute("SELECT id FROM models").fetchall()}
    UNLEARNERS._entries[crashing_unlearner] = UNLEARNERS.get("retrain")
    run_unlearning(spec, root=tmp_path, resume=True, progress=False)
    entries = {e["label"]: e for e in ResultsDB(tmp_path).ledger(exp)}
    assert entries[crashing_unlearner]["status"] == "finished"
    # the cached reference keeps the CPU time measured when it was built
    assert entries[crashing_unlearner]["audit"]["retrain_cpu_seconds"] == entries["retrain"]["audit"]["cpu_seconds"] > 0
    # no model retrained: the only new stored model is the resumed entry's own unlearned model
    assert {m[0] for m in db.conn.execute("SELECT id FROM models").fetchall()} - models_before == \
        {entries[crashing_unlearner]["id"]}


def test_a_killed_method_leaves_a_running_record(tmp_path):
    killed = []

    def kill_after_original(entry_id):
        if entry_id.endswith("request0/original"):
            killed.append(entry_id)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_unlearning(tiny(), root=tmp_path, progress=False, on_entry=kill_after_original)
    entries = {e["label"]: e for e in ResultsDB(tmp_path).ledger()}
    assert entries["original"]["status"] == "finished" and "retrain" not in entries


def test_reference_is_built_once_per_forget_set(tmp_path):
    run_unlearning(tiny(seeds=[0]), root=tmp_path, progress=False)
    run_unlearning(tiny(seeds=[0], name="again"), root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    roles = [r[0] for r in db.conn.execute("SELECT role FROM models").fetchall()]
    assert roles.count("retrain") == 1 and roles.count("original") == 1


def test_bad_unlearning_specs_list_every_problem():
    with pytest.raises(SpecError) as info:
        parse_unlearning_spec({"train": {"dataset": "digits"}, "forget": [{"kind": "classes", "classes": [12]}],
                               "methods": ["retrian", {"name": "retrain", "settings": {"x": 1}}]})
    text = str(info.value)
    assert "forget.0.classes: expected class ids in [0, 10), got [12]" in text
    assert "methods.0.name: unknown unlearner 'retrian'; did you mean 'retrain'?" in text
    assert "methods.1.settings.x: expected no such field" in text


def test_per_example_attack_on_a_forgotten_class_compares_with_the_same_class(tmp_path):
    # Non-members are test examples of the forgotten class: a model that never saw the class is
    # at chance (against all-class non-members it would score an AUC near 0, which reads as
    # "extremely non-member" and would make every class-forgetting method look over-forgotten).
    spec = tiny(audits={"reference_mia": {"n_models": 4}})
    exp = run_unlearning(spec, root=tmp_path, progress=False)
    audits = {e["label"]: e["audit"] for e in ResultsDB(tmp_path).ledger(exp)}
    assert abs(audits["retrain"]["reference_mia_auc"] - 0.5) < 0.1


def test_a_failed_reference_leaves_a_visible_record(tmp_path, monkeypatch):
    from palimpsest.run.kinds import unlearn
    fit = unlearn.fit

    def broken(*args, stage="fit", **kwargs):
        if stage == "retrain":
            raise Boom("retraining crashed")
        return fit(*args, stage=stage, **kwargs)

    monkeypatch.setattr(unlearn, "fit", broken)
    with pytest.raises(Boom):
        run_unlearning(tiny(), root=tmp_path, progress=False)
    entries = ResultsDB(tmp_path).ledger()
    assert [(e["label"], e["status"]) for e in entries] == [("retrain", "failed")]
    assert "retraining crashed" in entries[0]["error"]


def test_resume_skips_finished_requests_without_rebuilding_them(tmp_path, monkeypatch):
    from palimpsest.run.kinds.unlearn import UnlearnKind
    from palimpsest.run.store.writer import Writer
    spec = tiny()
    exp = run_unlearning(spec, root=tmp_path, progress=False)
    Writer(ResultsDB(tmp_path)).experiment_status(exp, "failed")  # as if a later seed had crashed
    monkeypatch.setattr(UnlearnKind, "_reference", lambda *a, **k: pytest.fail("rebuilt a finished request"))
    assert run_unlearning(spec, root=tmp_path, resume=True, progress=False) == exp


def test_the_ledger_keeps_each_methods_report_and_outputs_the_audit_is_recomputed_from(tmp_path):
    from palimpsest.evaluate.unlearning import audit_from_outputs
    from palimpsest.forget.request import resolve
    from palimpsest.run.kinds.unlearn import load_training_data
    from palimpsest.run.store.files import load_arrays
    spec = tiny(methods=["retrain", "ssd"], audits={"reference_mia": {"n_models": 2}, "relearn": {"steps": 3}})
    exp = run_unlearning(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    entries = {e["label"]: e for e in db.ledger(exp)}
    assert entries["ssd"]["report"]["alpha"] > 0 and "dampened" in entries["ssd"]["report"]   # SSD's chosen alpha
    data = load_training_data(spec.train)
    split = resolve(spec.forget[0], data.y_train.numpy(), data.n_classes)
    reference = entries["retrain"]["audit"]
    mia = load_arrays(next((tmp_path / "jobs").glob("*/mia.npz")))
    outputs = load_arrays(db.file(entries["ssd"]["outputs_path"]))
    again = audit_from_outputs(outputs, split, spec.audits, reference, mia, seed=0)
    stored = entries["ssd"]["audit"]
    assert again == {k: stored[k] for k in again}


def test_unlearned_original_and_reference_models_load_like_a_run(tmp_path):
    from palimpsest.run import load_model
    from palimpsest.run.store.files import load_arrays
    spec = tiny(methods=["retrain", "finetune", "sisa"], audits={"reference_mia": {"n_models": 2}},
                forget=[{"kind": "random", "fraction": 0.1}], seeds=[0, 1])
    exp = run_unlearning(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    entries = {(e["seed"], e["label"]): e for e in db.ledger(exp)}
    # each seed forgets its own random sample (the request has no seed of its own)
    assert entries[(0, "retrain")]["forget_key"] != entries[(1, "retrain")]["forget_key"]
    for label in ("original", "retrain", "finetune", "sisa"):
        entry = entries[(1, label)]
        model, info = load_model(tmp_path, entry["id"])
        stored = load_arrays(db.file(entry["outputs_path"]))
        x = load_training_data(spec.train).x_train
        with torch.no_grad():
            assert np.array_equal(model(x).argmax(1).numpy(), stored["train.pred"]), label
        assert info["entry"]["id"] == entry["id"] and info["split"].key() == entry["forget_key"]
    refs, info = load_model(tmp_path, db.model_entries("mia_references/")[0]["id"])
    assert len(refs) == 2 and refs.masks.shape[0] == 2 and info["role"] == "mia_references"


def test_the_checkpoint_policy_decides_which_unlearned_models_are_kept(tmp_path):
    from palimpsest.core.errors import PalimpsestError
    from palimpsest.run import load_model
    exp = run_unlearning(tiny(methods=["finetune"], checkpoints={"models": "none"}), root=tmp_path, progress=False)
    entries = {e["label"]: e for e in ResultsDB(tmp_path).ledger(exp)}
    with pytest.raises(PalimpsestError, match="kept no model"):
        load_model(tmp_path, entries["finetune"]["id"])
    load_model(tmp_path, entries["original"]["id"])   # the original and the retrained model are always kept


def test_training_time_artefacts_reach_only_methods_whose_reads_cover_them(tmp_path):
    """SSD's full-data importance is computed from the whole training set (forget set included):
    SSD, which declares the training set, gets it; a method declaring retain-only reads that
    touches it fails with a LeakageError instead of silently using forget-set information."""
    from palimpsest.forget.base import Unlearned

    name = "peek_test_only"

    @UNLEARNERS.register(name, summary="reads the retain set only, then peeks at the cache")
    class Peek(Unlearner):
        reads = {"retain": "examples"}

        def unlearn(self, model, data, ctx):
            assert any(key.startswith("fisher_train") for key in ctx.cache)   # names are visible
            for key in list(ctx.cache):
                ctx.cache[key]
            return Unlearned(model, {})

    try:
        with pytest.raises(Exception, match="artefact"):
            run_unlearning(tiny(methods=["ssd", name]), root=tmp_path, progress=False)
        entries = {e["label"]: e for e in ResultsDB(tmp_path).ledger()}
        assert entries["ssd"]["status"] == "finished" and entries["ssd"]["report"]["used_cached_full_importance"]
        assert entries[name]["status"] == "failed" and "LeakageError" in entries[name]["error"]
    finally:
        UNLEARNERS._entries.pop(name)
