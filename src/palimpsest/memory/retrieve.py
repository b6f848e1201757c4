"""Retrieval for the agent-memory store: dense, BM25 and their reciprocal-rank fusion, registered in
`RETRIEVERS`.

  dense    the vector index's inner product (cosine of unit vectors)
  bm25     Okapi BM25 over the same tokens (Robertson and Zaragoza, "The Probabilistic Relevance
           Framework: BM25 and Beyond", 2009), k1 = 1.2, b = 0.75, Lucene's non-negative idf
           log(1 + (N - df + 0.5) / (df + 0.5))
  hybrid   reciprocal-rank fusion of the two (Cormack, Clarke and Büttcher, "Reciprocal rank fusion
           outperforms Condorcet and individual rank learning methods", 2009): score = sum over the
           lists of 1 / (60 + rank), each list `depth` x k long. On conversational data keyword search
           often beats small dense encoders; the fusion keeps the better of both most of the time.

A retriever returns [(id, relevance)] best first. Relevance is on the retriever's own scale (cosine,
BM25 or RRF), so policies that mix it with other signals rescale it within the candidates.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .registries import RETRIEVERS
from .text import tokenize

RRF_K = 60


class BM25Index:
    """An incrementally maintained inverted index. `add(id, text)` (again for an update), `remove(id)`,
    `search(text, k, allowed)`. Postings are turned into numpy arrays per term when first queried and
    rebuilt only when that term changes."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.clear()

    def clear(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._length: dict[int, int] = {}
        self._total = 0
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._length)

    def nbytes(self) -> int:
        postings = sum(len(p) for p in self._postings.values())
        return 120 * postings + 200 * len(self._length) + sum(a.nbytes for c in self._cache.values() for a in c)

    def add(self, doc: int, text: str) -> None:
        if doc in self._length:
            self.remove(doc)
        counts = Counter(tokenize(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[doc] = tf
            self._cache.pop(term, None)
        self._terms[doc] = tuple(counts)
        self._length[doc] = sum(counts.values())
        self._total += self._length[doc]

    def remove(self, doc: int) -> None:
        if doc not in self._length:
            return
        for term in self._terms.pop(doc):
            postings = self._postings[term]
            del postings[doc]
            if not postings:
                del self._postings[term]
            self._cache.pop(term, None)
        self._total -= self._length.pop(doc)

    def _arrays(self, term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self._cache.get(term)
        if cached is None:
            postings = self._postings[term]
            docs = np.fromiter(postings.keys(), np.int64, len(postings))
            tfs = np.fromiter(postings.values(), np.float32, len(postings))
            lengths = np.fromiter((self._length[d] for d in postings), np.float32, len(postings))
            cached = self._cache[term] = (docs, tfs, lengths)
        return cached

    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._length)
        terms = [t for t in dict.fromkeys(tokenize(text)) if t in self._postings]
        if n == 0 or not terms or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        avg = self._total / n if self._total else 1.0
        docs, scores = [], []
        for term in terms:
            d, tf, length = self._arrays(term)
            idf = math.log(1.0 + (n - len(d) + 0.5) / (len(d) + 0.5))
            docs.append(d)
            scores.append(idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / avg)))
        docs_all, inverse = np.unique(np.concatenate(docs), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(scores)).astype(np.float32)
        if allowed is not None:
            keep = np.isin(docs_all, np.asarray(allowed, np.int64))
            docs_all, total = docs_all[keep], total[keep]
        if len(total) > k:
            part = np.argpartition(-total, k - 1)[:k]
            docs_all, total = docs_all[part], total[part]
        order = np.lexsort((docs_all, -total))
        return docs_all[order], total[order]


SUBSET_EXACT = 4096   # an allowed set this small is scored exactly from the stored vectors


@dataclass
class Query:
    """What a retriever sees: the text, its vector, the indexes, the ids it may return, and (from the store)
    a way to read the stored vectors of a few ids."""

    text: str
    vector: np.ndarray
    index: object
    bm25: BM25Index
    allowed: np.ndarray | None = None
    vectors_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None


def _pairs(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    return list(zip(ids.tolist(), scores.astype(float).tolist()))


@RETRIEVERS.register("dense", summary="cosine similarity in the vector index")
def dense(query: Query, k: int) -> list[tuple[int, float]]:
    """The index's search; a small allowed set (a scope, a filter) is scored exactly from the stored vectors
    when the index is approximate or scans everything (a restricted graph walk is slow and lossy)."""
    allowed = query.allowed
    if (allowed is not None and len(allowed) <= SUBSET_EXACT and query.vectors_of is not None
            and not getattr(query.index, "exact_subsets", False)):
        ids, vectors = query.vectors_of(allowed)
        if len(ids) == 0:
            return []
        scores = vectors @ query.vector
        if len(scores) > k:
            part = np.argpartition(-scores, k - 1)[:k]
            ids, scores = ids[part], scores[part]
        order = np.lexsort((ids, -scores))
        return _pairs(ids[order], scores[order])
    return _pairs(*query.index.search(query.vector, k, allowed))


@RETRIEVERS.register("bm25", summary="Okapi BM25 keyword retrieval (k1 1.2, b 0.75)")
def bm25(query: Query, k: int) -> list[tuple[int, float]]:
    return _pairs(*query.bm25.search(query.text, k, query.allowed))


def reciprocal_rank_fusion(lists: list[list[tuple[int, float]]], k: int, rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Sum of 1 / (rrf_k + rank) over the lists (rank from 1); ties broken by id."""
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, (doc, _) in enumerate(ranked, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]


@RETRIEVERS.register("hybrid", summary="reciprocal-rank fusion of dense and BM25 (default)")
def hybrid(query: Query, k: int, depth: int = 4) -> list[tuple[int, float]]:
    return reciprocal_rank_fusion([dense(query, depth * k), bm25(query, depth * k)], k)


__all__ = ["BM25Index", "Query", "RRF_K", "bm25", "dense", "hybrid", "reciprocal_rank_fusion"]
