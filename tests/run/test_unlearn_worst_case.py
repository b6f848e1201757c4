"""A worst_case forget request in the unlearn kind: selected once per seed after the original and the
reference models, stored, read by every later job, re-used on resume; validated up front."""
import numpy as np
import pytest

import palimpsest.forget  # noqa: F401
from palimpsest.core.errors import SpecError
from palimpsest.evaluate.mia import out_of_training_confidence
from palimpsest.forget.worst_case import worst_case_forget_set
from palimpsest.run import ResultsDB
from palimpsest.run.kinds.unlearn import load_stored_model, load_training_data, parse_unlearning_spec, run_unlearning


def spec(objective="retrain_gap", n_models=2, **over):
    data = {"name": "tiny_worst_case",
            "train": {"dataset": "digits", "train_subset": 400, "test_subset": 100,
                      "model": {"name": "mlp", "settings": {"hidden": [16]}},
                      "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "momentum": 0.9}},
            "forget": [{"kind": "worst_case", "fraction": 0.05, "objective": objective}],
            "methods": ["retrain"], "audits": {"population_mia": False, "reference_mia": {"n_models": n_models}},
            "seeds": [0]}
    data.update(over)
    return parse_unlearning_spec(data)


def test_worst_case_request_stores_the_selection_every_job_reads(tmp_path):
    s = spec()
    exp = run_unlearning(s, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    entries = db.ledger(exp)
    assert [e["label"] for e in entries] == ["original", "retrain"] and all(e["status"] == "finished" for e in entries)
    stored = [m for m in db.model_entries("forget_set/")]
    assert len(stored) == 1 and stored[0]["role"] == "forget_set"
    selection = load_stored_model(db, stored[0]["id"])[0]
    # the same selection, recomputed from the stored original and reference models
    data = load_training_data(s.train)
    original = load_stored_model(db, f"{exp}/seed0/request0/original")[0]
    refs = load_stored_model(db, [m for m in db.model_entries("mia_references/")][0]["id"])[0]
    q = out_of_training_confidence(refs, data.x_train, data.y_train)
    expected = worst_case_forget_set(original, data.x_train, data.y_train, 20, out_confidence=q)
    np.testing.assert_array_equal(selection["indices"], expected["indices"])
    np.testing.assert_allclose(selection["objective"], expected["objective"], rtol=1e-6)
    # every entry and the retrained reference resolved the stored set
    _, info = load_stored_model(db, f"{exp}/seed0/request0/retrain")
    np.testing.assert_array_equal(info["split"].forget, expected["indices"])
    assert all(e["forget_key"] == info["split"].key() for e in entries)
    # a second run (the same original, request and seed) re-uses the stored selection
    run_unlearning(s, root=tmp_path, progress=False)
    again = db.model_entries("forget_set/")
    assert len(again) == 1 and again[0]["path"] == stored[0]["path"]
    db.close()


def test_a_killed_run_resumes_with_its_stored_selection(tmp_path, monkeypatch):
    import palimpsest.forget.worst_case as wc
    s = spec(objective="forget_loss", n_models=0)

    def kill_after_select(job):
        if job.endswith("request0/select"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_unlearning(s, root=tmp_path, progress=False, on_entry=kill_after_select)
    db = ResultsDB(tmp_path)
    first = load_stored_model(db, db.model_entries("forget_set/")[0]["id"])[0]["indices"]
    assert len(first) == 20
    db.close()

    def refuse(*a, **k):
        raise AssertionError("selected again")
    monkeypatch.setattr(wc, "worst_case_forget_set", refuse)
    exp = run_unlearning(s, root=tmp_path, resume=True, progress=False)
    db = ResultsDB(tmp_path)
    assert [e["status"] for e in db.ledger(exp)] == ["finished", "finished"]
    _, info = load_stored_model(db, f"{exp}/seed0/request0/retrain")
    np.testing.assert_array_equal(info["split"].forget, first)
    db.close()


def test_retrain_gap_without_reference_models_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        spec(n_models=0)
    text = str(err.value)
    assert "forget.0" in text and "reference_mia.n_models" in text and "forget_loss" in text
    spec(objective="forget_loss", n_models=0)   # the paper's objective needs no reference models


def test_the_request_chooses_the_selections_lower_level(tmp_path):
    s = spec(objective="forget_loss", n_models=0,
             forget=[{"kind": "worst_case", "fraction": 0.05, "objective": "forget_loss", "lower": "finetune"}])
    assert "lower level finetune" in s.forget[0].describe()
    run_unlearning(s, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    selection = load_stored_model(db, db.model_entries("forget_set/")[0]["id"])[0]
    exp = db.experiments()[0]["id"]
    original = load_stored_model(db, f"{exp}/seed0/request0/original")[0]
    data = load_training_data(s.train)
    kw = dict(objective="forget_loss")
    finetune = worst_case_forget_set(original, data.x_train, data.y_train, 20, lower="finetune", **kw)
    ascent = worst_case_forget_set(original, data.x_train, data.y_train, 20, **kw)
    np.testing.assert_array_equal(selection["indices"], finetune["indices"])
    assert not np.array_equal(finetune["indices"], ascent["indices"])   # the setting reaches the selection
    db.close()
