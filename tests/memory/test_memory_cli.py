"""`palimpsest memory ...`, `palimpsest ls` for the memory registries, the LoCoMo loader, and the
agent-memory docs and README examples."""
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palimpsest.cli import app

ROOT = Path(__file__).parents[2]


def run(*args):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_the_memory_commands_round_trip(tmp_path):
    store = str(tmp_path / "m.sqlite")
    code, out, err = run("memory", "add", "Alice is allergic to peanuts", "--user", "alice", "--meta", "topic=health",
                         "--meta", "priority=2", "--store", store)
    assert code == 0 and out.startswith("ADD "), err
    memory_id = out.split()[1]
    code, out, _ = run("memory", "add", "alice is allergic to PEANUTS", "--user", "alice", "--store", store)
    assert out.split() == ["DUPLICATE", memory_id]
    assert run("memory", "add", "Bob plays cello", "--user", "bob", "--store", store)[0] == 0
    code, out, _ = run("memory", "search", "what is alice allergic to", "--user", "alice", "--json", "--store", store)
    hits = json.loads(out)
    assert code == 0 and hits[0]["id"] == memory_id and hits[0]["metadata"] == {"topic": "health", "priority": 2}
    code, out, _ = run("memory", "list", "--filter", "priority=2", "--store", store)
    assert code == 0 and memory_id in out and "Bob" not in out
    assert run("memory", "update", memory_id, "Alice is allergic to peanuts and shellfish", "--store", store)[0] == 0
    code, out, _ = run("memory", "get", memory_id, "--json", "--store", store)
    assert json.loads(out)[0]["text"].endswith("shellfish")
    code, out, _ = run("memory", "history", memory_id, "--store", store)
    assert [line.split()[1] for line in out.strip().splitlines()] == ["ADD", "DUPLICATE", "RECALL", "UPDATE"]
    assert run("memory", "delete", "--all", "--user", "bob", "--store", store)[1].strip() == "DELETE 1 memories"
    assert run("memory", "forget", "--store", store)[1].startswith("FORGET 0 memories (ebbinghaus)")
    assert run("memory", "reset", "--store", store)[0] == 2                  # refuses without --yes
    assert run("memory", "reset", "--yes", "--store", store)[1].strip() == "RESET 1 memories"
    code, out, _ = run("memory", "curves", "--out", str(tmp_path / "curves.html"))
    page = (tmp_path / "curves.html").read_text()
    assert code == 0 and page.count("data:image/png;base64") == 1 and "exp(-t / 5*S)" in page


@pytest.mark.parametrize("args, words", [
    (["memory", "add", "", "--store", "{s}"], "empty text"),
    (["memory", "add", "x", "--meta", "nokey", "--store", "{s}"], "key=value"),
    (["memory", "add", "x", "--policy", "ebbinghau", "--store", "{s}"], "did you mean 'ebbinghaus'"),
    (["memory", "add", "x", "--policy", "fifo", "--store", "{s}"], "capacity"),
    (["memory", "search", "x", "--store", "{missing}"], "no memory store"),
    (["memory", "search", "x", "--filter", "topc=1", "--store", "{s}"], "did you mean 'topic'"),
    (["memory", "search", "x", "--limit", "0", "--store", "{s}"], "bad limit"),
    (["memory", "get", "0123", "--store", "{s}"], "unknown memory id"),
    (["memory", "delete", "--store", "{s}"], "say what to delete"),
    (["memory", "delete", "--all", "--store", "{s}"], "delete_all needs a scope"),
    (["memory", "history", "f" * 32, "--store", "{s}"], "unknown memory id"),
    (["memory", "add", "x", "--store", "{dir}"], "is a folder"),
])
def test_bad_memory_command_lines_exit_2_and_change_nothing(tmp_path, args, words):
    store = tmp_path / "m.sqlite"
    assert run("memory", "add", "seed fact", "--meta", "topic=food", "--store", str(store))[0] == 0
    before = store.read_bytes()
    args = [a.format(s=store, missing=tmp_path / "missing.sqlite", dir=tmp_path) for a in args]
    code, _, err = run(*args)
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "missing.sqlite").exists()
    from palimpsest.memory import MemoryStore
    with MemoryStore(store) as s:
        assert [m.text for m in s.get_all()] == ["seed fact"]
    assert len(before) > 0


def test_ls_lists_the_memory_policies_and_indexes():
    code, out, _ = run("ls")
    assert code == 0
    for word in ("memory-policies", "ebbinghaus", "mark", "think_in_memory", "mem1", "fifo", "indexes", "exact",
                 "hnsw", "faiss", "embedders", "hashing", "minilm", "retrievers", "hybrid", "bm25"):
        assert word in out, word
    code, out, _ = run("ls", "indexes")
    assert code == 0 and "hnsw" in out and "strategies" not in out


LOCOMO = [
    {"sample_id": "conv-a",
     "conversation": {"speaker_a": "Caroline", "speaker_b": "Melanie",
                      "session_1_date_time": "1:56 pm on 8 May, 2023",
                      "session_1": [
                          {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to a LGBTQ support group yesterday."},
                          {"speaker": "Melanie", "dia_id": "D1:2", "text": "That sounds lovely! How was it?"},
                          {"speaker": "Caroline", "dia_id": "D1:3", "text": "Inspiring. I want to study counseling."}],
                      "session_2_date_time": "10:00 am on 20 May, 2023",
                      "session_2": [
                          {"speaker": "Melanie", "dia_id": "D2:1", "text": "I painted a sunrise over the lake.",
                           "img_url": ["x"], "blip_caption": "a painting of a sunrise"},
                          {"speaker": "Caroline", "dia_id": "D2:2", "text": "Beautiful colours!"}]},
     "qa": [{"question": "What did Caroline want to study?", "answer": "counseling", "evidence": ["D1:3"],
             "category": 1},
            {"question": "What did Melanie paint?", "answer": "a sunrise", "evidence": ["D2:1"], "category": 1},
            {"question": "Which group did Caroline go to?", "answer": "LGBTQ support group",
             "evidence": ["D1:1; D1:3"], "category": 2},
            {"question": "What is Melanie's cat called?", "adversarial_answer": "Luna", "evidence": [],
             "category": 5}]},
]


def test_a_locomo_format_file_loads_and_reports_evidence_recall(tmp_path):
    from palimpsest.memory.locomo import evidence_recall, load_locomo
    path = tmp_path / "locomo_small.json"
    path.write_text(json.dumps(LOCOMO))
    (conv,) = load_locomo(path)
    assert conv.sample_id == "conv-a" and len(conv.turns) == 5 and conv.turns[3].text.endswith("[shares a painting "
                                                                                              "of a sunrise]")
    assert conv.questions[2].evidence == ["D1:1", "D1:3"] and conv.questions[3].answer == "Luna"
    result = evidence_recall([conv], ks=(1, 5))
    assert result["questions"] == 3                       # the adversarial question has no evidence
    for retriever in ("dense", "bm25", "hybrid"):
        assert result["recall"][retriever][5] == 1.0      # 5 turns: everything is in the top 5
    assert result["recall"]["bm25"][1] == pytest.approx((1 + 1 + 0.5) / 3)


@pytest.mark.parametrize("content, words", [
    ("{not json", "not UTF-8 JSON"), ("[]", "non-empty list"), ('[{"qa": []}]', "has no conversation"),
    ('[{"conversation": {"session_1": [{"speaker": "a"}]}}]', "without speaker, dia_id and text"),
])
def test_malformed_locomo_files_are_clear_errors(tmp_path, content, words):
    from palimpsest.core.errors import DataError
    from palimpsest.memory.locomo import load_locomo
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=words):
        load_locomo(path)
    with pytest.raises(DataError, match="no LoCoMo file"):
        load_locomo(tmp_path / "missing.json")


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_agent_memory_guide_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(ROOT / "docs" / "AGENT_MEMORY.md")
    assert blocks
    for block in blocks:
        exec(compile(block, "AGENT_MEMORY.md", "exec"), {"__name__": "docs_agent_memory"})
    out = capsys.readouterr().out
    assert "peanuts" in out and "FORGET" in out


def test_the_readme_memory_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = next(b for b in _blocks(ROOT / "README.md") if "MemoryStore" in b)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_memory"})
    assert "peanuts" in capsys.readouterr().out
