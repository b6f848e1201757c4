"""LoCoMo-format conversations, and evidence recall@k of the store's retrievers on them.

"Evaluating Very Long-Term Conversational Memory of LLM Agents", Maharana et al. (2024) released
`locomo10.json`: a list of samples, each with `sample_id`, a `conversation` (`speaker_a`, `speaker_b`,
`session_<i>` lists of turns {speaker, dia_id, text[, blip_caption]}, `session_<i>_date_time`) and `qa`
items {question, answer (or adversarial_answer), evidence: [dia_id, ...], category}. The file is not
shipped; `load_locomo(path)` reads any file in that format.

`evidence_recall(conversations, ...)` stores every turn as a memory (run_id = the sample id, the turn's
dia_id in metadata) and asks each question: recall@k is the share of a question's evidence turns among
the top k, averaged over questions that have evidence.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError


@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    date: str = ""


@dataclass
class Question:
    question: str
    answer: str
    evidence: list[str]
    category: int | None = None


@dataclass
class Conversation:
    sample_id: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def _bad(path: Path, what: str, got: object) -> DataError:
    return DataError(f"{path} is not a LoCoMo-format file: {what}", expected="a JSON list of samples with "
                     "sample_id, conversation (session_<i> lists of {speaker, dia_id, text}) and qa "
                     "({question, answer, evidence, category})", got=str(got)[:200],
                     fix="pass the path of locomo10.json or a file in the same format")


def load_locomo(path: str | Path) -> list[Conversation]:
    """Read a LoCoMo-format JSON file (see the module docstring); malformed files are a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no LoCoMo file at {path}", expected="an existing JSON file", got=str(path),
                        fix="pass the path of locomo10.json (it is not shipped with palimpsest)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(path, "not UTF-8 JSON", err) from None
    if not isinstance(data, list) or not data:
        raise _bad(path, "the top level is not a non-empty list", type(data).__name__)
    out = []
    for i, sample in enumerate(data):
        if not isinstance(sample, dict) or not isinstance(sample.get("conversation"), dict):
            raise _bad(path, f"sample {i} has no conversation", sample if not isinstance(sample, dict) else
                       sorted(sample))
        conv = sample["conversation"]
        c = Conversation(str(sample.get("sample_id", f"sample-{i}")))
        sessions = sorted((int(m.group(1)), key) for key in conv if (m := re.fullmatch(r"session_(\d+)", key)))
        for number, key in sessions:
            if not isinstance(conv[key], list):
                raise _bad(path, f"sample {c.sample_id} {key} is not a list of turns", type(conv[key]).__name__)
            date = str(conv.get(f"{key}_date_time", ""))
            for turn in conv[key]:
                if not isinstance(turn, dict) or not all(isinstance(turn.get(k), str) for k in ("speaker", "dia_id",
                                                                                                 "text")):
                    raise _bad(path, f"sample {c.sample_id} {key} has a turn without speaker, dia_id and text", turn)
                text = turn["text"].strip()
                if turn.get("blip_caption"):
                    text = f"{text} [shares {turn['blip_caption']}]".strip()
                if text:
                    c.turns.append(Turn(turn["dia_id"], turn["speaker"], text, number, date))
        for qa in sample.get("qa") or []:
            if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                raise _bad(path, f"sample {c.sample_id} has a qa item without a question", qa)
            evidence = []
            for item in qa.get("evidence") or []:
                evidence += [e.strip() for e in re.split(r"[;,]", str(item)) if e.strip()]
            answer = qa.get("answer", qa.get("adversarial_answer", ""))
            c.questions.append(Question(qa["question"], str(answer), evidence, qa.get("category")))
        if not c.turns:
            raise _bad(path, f"sample {c.sample_id} has no turns", sorted(conv))
        out.append(c)
    return out


def evidence_recall(conversations: list[Conversation], retrievers=("dense", "bm25", "hybrid"), ks=(1, 5, 10),
                    embedder="hashing", index: str = "exact", folder: str | Path | None = None) -> dict:
    """Mean evidence recall@k per retriever (module docstring), with the number of questions scored."""
    from .store import MemoryStore
    scores = {r: {k: [] for k in ks} for r in retrievers}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = MemoryStore(Path(tmp) / "locomo.sqlite", embedder=embedder, index=index, policy="none",
                            synchronous="normal")
        for c in conversations:
            for t in c.turns:   # a turn said twice verbatim is one memory (it keeps the later dia_id)
                store.add(f"{t.speaker}: {t.text}", run_id=c.sample_id,
                          metadata={"dia_id": t.dia_id, "session": t.session, "date": t.date})
            known = {t.dia_id for t in c.turns}
            for q in c.questions:
                evidence = {e for e in q.evidence if e in known}
                if not evidence or not q.question.strip():
                    continue
                for r in retrievers:
                    hits = store.search(q.question, run_id=c.sample_id, limit=max(ks), retriever=r, reinforce=False)
                    ids = [h.metadata.get("dia_id") for h in hits]
                    for k in ks:
                        scores[r][k].append(len(evidence & set(ids[:k])) / len(evidence))
        store.close()
    n = len(next(iter(next(iter(scores.values())).values()))) if scores else 0
    return {"questions": n, "recall": {r: {k: (sum(v) / len(v) if v else float("nan")) for k, v in by_k.items()}
                                       for r, by_k in scores.items()}}


__all__ = ["Conversation", "Question", "Turn", "evidence_recall", "load_locomo"]
