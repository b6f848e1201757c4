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


def stem(word: str) -> str:
    """A light English suffix stripper (not Porter's): paintings, painted, paints -> paint; studies -> study;
    running -> run. Enough that a question's "paint" finds "I painted"; short words are left alone."""
    if len(word) <= 4 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    if word.endswith("es") and word[-3] in "sxz" and len(word) >= 5:
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    return word


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    """Lower-case word tokens (letters and digits), lightly stemmed, stop words removed unless
    `stopwords=False`."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [stem(w) for w in words if not stopwords or w not in STOPWORDS]


def count_tokens(text: str) -> int:
    """A budget's unit: whitespace-separated words (a language model's tokenizer would count ~1.3x more)."""
    return len(text.split())


__all__ = ["STOPWORDS", "count_tokens", "normal_form", "stem", "text_key", "tokenize"]
