"""kind: memory. A recall experiment runs through the one runner and the one loop, stores runs, steps
and recall accuracies, reports them, and a killed run resumes to the numbers of an uninterrupted one."""
import pytest

from palimpsest.core.errors import SpecError
from palimpsest.run import ResultsDB, parse_spec, run_experiment
from palimpsest.run.kinds.memory import MemoryKind, recall_curve

TINY = {"kind": "memory", "name": "recall_tiny",
        "task": {"name": "mqar", "settings": {"vocab_size": 32, "seq_len": 16, "n_pairs": 2}},
        "model": {"dim": 16, "blocks": 1, "mlp_ratio": 1},
        "mixers": ["attention", {"name": "deltanet", "settings": {"chunk_size": 8}, "lrs": [0.01]}],
        "training": {"steps": 6, "batch_size": 8, "lrs": [0.003, 0.01], "warmup_steps": 2},
        "evaluation": {"every": 3, "examples": 16}, "seeds": [0]}


class Killed(Exception):
    pass


def test_a_recall_experiment_is_stored_reported_and_resumes_bit_for_bit(tmp_path):
    spec = parse_spec(TINY)
    kind = MemoryKind()
    assert [j.key for j in kind.jobs(spec)] == ["attention/lr0.003/seed0", "attention/lr0.01/seed0",
                                                "deltanet/lr0.01/seed0"]
    reference = run_experiment(spec, root=tmp_path / "a", progress=False)

    def kill(run_id, step):
        if run_id.endswith("deltanet/lr0.01/seed0") and step == 0:
            raise Killed()

    with pytest.raises(Killed):
        run_experiment(spec, root=tmp_path / "b", progress=False, on_step=kill)
    resumed = run_experiment(spec, root=tmp_path / "b", resume=True, progress=False)
    a, b = ResultsDB(tmp_path / "a"), ResultsDB(tmp_path / "b")
    for job in kind.jobs(spec):
        ca, cb = recall_curve(a, f"{reference}/{job.key}"), recall_curve(b, f"{resumed}/{job.key}")
        assert [x for x, _ in ca] == [0, 3, 6] and ca == cb
        assert a.run(f"{reference}/{job.key}")["status"] == "finished"
    rows = kind.summarize(a, reference)
    assert [r["mixer"] for r in rows] == ["attention", "deltanet"]
    assert set(rows[0]["lrs"]) == {0.003, 0.01} and rows[0]["best_lr"] in rows[0]["window"]
    assert set(a.metrics(f"{reference}/attention/lr0.01/seed0")) == {"final_recall", "best_recall"}
    from palimpsest.report import export, write_report
    page = write_report(a, reference, tmp_path / "report.html").read_text()
    assert "Recall accuracy over training" in page and "deltanet" in page and "data:image/png" in page
    assert [p.name for p in export(a, reference, tmp_path / "csv")] == ["memory.csv"]
    a.close()
    b.close()


@pytest.mark.parametrize("change, words", [
    ({"mixers": ["titan"]}, "did you mean 'titans'"),
    ({"task": {"name": "mqr"}}, "did you mean 'mqar'"),
    ({"task": {"name": "mqar", "settings": {"seq_len": 8, "n_pairs": 4}}}, "n_pairs"),
    ({"training": {"lrs": [-1.0]}}, "lrs"),
    ({"mixers": [{"layers": [{"name": "attention"}]}]}, "label"),
])
def test_bad_memory_specs_are_refused_with_every_problem(change, words):
    with pytest.raises(SpecError, match=words):
        parse_spec({**TINY, **change})


def test_a_chunk_size_that_does_not_divide_fails_before_anything_is_recorded(tmp_path):
    spec = parse_spec({**TINY, "mixers": [{"name": "deltanet", "settings": {"chunk_size": 5}}]})
    with pytest.raises(SpecError, match="chunk size does not divide"):
        run_experiment(spec, root=tmp_path, progress=False)
    assert ResultsDB(tmp_path).experiments() == []
