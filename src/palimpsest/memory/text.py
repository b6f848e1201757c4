"""Text helpers shared by the embedders, BM25 and the store: one tokenizer, one normal form for
deduplication, one token count for budgets."""
from __future__ import annotations

import hashlib
import re
import unicodedata

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A short English stop list: words that every fact shares and that would otherwise dominate hashed
# vectors (they carry no IDF weight) and BM25 postings.
STOPWORDS = frozenset("""a an and are as at be been but by did do does for from had has have he her his i if in
into is it its me my of on or our s she so than that the their them they this to was we were what when where which
who whom why will with you your""".split())


def normal_form(text: str) -> str:
    """What makes two memories "the same text": Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_key(text: str) -> str:
    """A digest of the normal form: identical texts in one scope are one memory."""
    return hashlib.sha256(normal_form(text).encode("utf-8")).hexdigest()


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    """Lower-case word tokens (letters and digits), stop words removed unless `stopwords=False`."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [w for w in words if w not in STOPWORDS] if stopwords else words


def count_tokens(text: str) -> int:
    """A budget's unit: whitespace-separated words (a language model's tokenizer would count ~1.3x more)."""
    return len(text.split())


__all__ = ["STOPWORDS", "count_tokens", "normal_form", "text_key", "tokenize"]
