"""Vector indexes for the agent-memory store, registered in `VECTOR_INDEXES`.

  exact   brute-force inner product in numpy (the default; exact, no extra package)
  hnsw    hnswlib's HNSW graph (Malkov and Yashunin, "Efficient and robust approximate nearest neighbor
          search using Hierarchical Navigable Small World graphs", 2016/2018); optional extra
          `palimpsest[ann]` (the `chroma-hnswlib` wheel, which provides the `hnswlib` module)
  faiss   faiss's flat inner-product index with id mapping (Johnson, Douze and Jégou, "Billion-scale
          similarity search with GPUs", 2017); exact, SIMD; optional extra `palimpsest[faiss]`

Every index speaks the same small protocol over integer ids and unit vectors (inner product = cosine):
`add(ids, vectors)` (an id already present is replaced), `remove(ids)`, `search(query, k, allowed)`
returning (ids, scores) best first, `len()`, `clear()`, `nbytes()`. `allowed` restricts the answer to
those ids (scopes and metadata filters): hnsw walks its graph with a filter, faiss uses an id selector.
(The store's dense retriever scores a small allowed set, up to 4096 ids, exactly from the stored
vectors instead: retrieve.py.) Indexes live in memory; the store's SQLite file holds the vectors and
rebuilds the index when it opens. An index with `save` / `load` (hnsw, whose graph is slow to build)
is also saved beside the store when it closes and loaded when it opens, then brought up to date from
the store's history; a missing, stale or damaged snapshot only means a rebuild.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError, PalimpsestError
from .registries import VECTOR_INDEXES


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))     # ties broken by id: deterministic
    return ids[order].astype(np.int64), scores[order].astype(np.float32)


def _check(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError("bad index dimension", expected="an integer >= 1", got=repr(dim))
    return dim


@VECTOR_INDEXES.register("exact", summary="brute-force inner product in numpy (default; exact)")
class ExactIndex:
    """All vectors in one growing float32 matrix; a removal moves the last row into the hole."""

    name = "exact"
    exact_subsets = True      # a restricted search scores only the allowed rows

    def __init__(self, dim: int) -> None:
        self.dim = _check(dim)
        self.clear()

    def clear(self) -> None:
        self._vectors = np.zeros((1024, self.dim), np.float32)
        self._ids = np.zeros(1024, np.int64)
        self._row: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def nbytes(self) -> int:
        return self._vectors.nbytes + self._ids.nbytes + 100 * len(self._row)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for i, v in zip(np.asarray(ids, np.int64).tolist(), np.asarray(vectors, np.float32)):
            row = self._row.get(i)
            if row is None:
                row = len(self._row)
                if row == len(self._ids):
                    self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
                    self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
                self._row[i] = row
                self._ids[row] = i
            self._vectors[row] = v

    def remove(self, ids: np.ndarray) -> None:
        for i in np.asarray(ids, np.int64).tolist():
            row = self._row.pop(i, None)
            if row is None:
                continue
            last = len(self._row)
            if row != last:
                moved = int(self._ids[last])
                self._vectors[row], self._ids[row] = self._vectors[last], moved
                self._row[moved] = row

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._row)
        if n == 0 or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if allowed is None:
            return _top(self._ids[:n], self._vectors[:n] @ query, k)
        rows = np.fromiter((self._row[i] for i in np.asarray(allowed).tolist() if i in self._row), np.int64)
        if len(rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return _top(self._ids[rows], self._vectors[rows] @ query, k)


@VECTOR_INDEXES.register("hnsw", summary="hnswlib HNSW graph, approximate (extra: palimpsest[ann])")
class HnswIndex:
    """An HNSW graph over inner product. Removed ids are marked deleted (skipped by searches); the graph
    grows by doubling. `ef_search` trades recall for speed (hnswlib's `ef`)."""

    name = "hnsw"

    def __init__(self, dim: int, M: int = 16, ef_construction: int = 100, ef_search: int = 64, seed: int = 0) -> None:
        try:
            import hnswlib
        except ImportError as err:
            raise PalimpsestError("the hnsw index needs hnswlib", expected="the package installed",
                                  got=f"{type(err).__name__}: {err}",
                                  fix="pip install 'palimpsest[ann]' (or use index='exact')") from None
        for name, value, low in (("M", M, 2), ("ef_construction", ef_construction, 8), ("ef_search", ef_search, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"bad hnsw setting {name}", expected=f"an integer >= {low}", got=repr(value))
        self._hnswlib, self.dim = hnswlib, _check(dim)
        self.M, self.ef_construction, self.ef_search, self.seed = M, ef_construction, ef_search, seed
        self.clear()

    def clear(self) -> None:
        self._index = self._hnswlib.Index(space="ip", dim=self.dim)
        self._index.init_index(max_elements=1024, M=self.M, ef_construction=self.ef_construction,
                               random_seed=self.seed)
        self._index.set_num_threads(1)
        self._live: set[int] = set()
        self._deleted: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def nbytes(self) -> int:
        # hnswlib's layout: the vector, level-0 links (2M ids) and a label per element, plus upper levels
        per = self.dim * 4 + 2 * self.M * 4 + 16
        return int(self._index.get_max_elements() * per * 1.05)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        revive = [i for i in ids.tolist() if i in self._deleted]
        for i in revive:
            self._index.unmark_deleted(i)
            self._deleted.discard(i)
        need = self._index.get_current_count() + len(ids)
        if need > self._index.get_max_elements():
            self._index.resize_index(max(need, 2 * self._index.get_max_elements()))
        self._index.add_items(np.asarray(vectors, np.float32), ids, num_threads=1)
        self._live.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> None:
        for i in np.asarray(ids, np.int64).tolist():
            if i in self._live:
                self._index.mark_deleted(i)
                self._live.discard(i)
                self._deleted.add(i)

    def save(self, path: str) -> dict:
        """Write the graph to `path`; return what `load` needs besides it."""
        self._index.save_index(path)
        return {"dim": self.dim, "M": self.M, "ef_construction": self.ef_construction, "seed": self.seed,
                "live": sorted(self._live), "deleted": sorted(self._deleted)}

    def load(self, path: str, info: dict) -> bool:
        """Replace the graph with a saved one made with the same settings; False (and unchanged) if it is not."""
        if [info.get(k) for k in ("dim", "M", "ef_construction", "seed")] != [self.dim, self.M, self.ef_construction,
                                                                              self.seed]:
            return False
        index = self._hnswlib.Index(space="ip", dim=self.dim)
        index.load_index(path, max_elements=max(1024, len(info["live"]) + len(info["deleted"])))
        index.set_num_threads(1)
        self._index, self._live, self._deleted = index, set(info["live"]), set(info["deleted"])
        return True

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not self._live or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query, np.float32).reshape(1, -1)
        if allowed is not None:
            allowed_ids = [i for i in np.asarray(allowed).tolist() if i in self._live]
            if not allowed_ids:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            keep = set(allowed_ids)
            k = min(k, len(keep))
            self._index.set_ef(max(self.ef_search, k))
            labels, dist = self._index.knn_query(q, k=k, num_threads=1, filter=keep.__contains__)
        else:
            k = min(k, len(self._live))
            self._index.set_ef(max(self.ef_search, k))
            labels, dist = self._index.knn_query(q, k=k, num_threads=1)
        return labels[0].astype(np.int64), (1.0 - dist[0]).astype(np.float32)


@VECTOR_INDEXES.register("faiss", summary="faiss flat inner-product index, exact (extra: palimpsest[faiss])")
class FaissIndex:
    """faiss `IndexIDMap2(IndexFlatIP)`: exact like `exact`, with faiss's SIMD kernels; restricted
    searches use faiss's id selectors."""

    name = "faiss"

    def __init__(self, dim: int) -> None:
        try:
            import faiss
        except ImportError as err:
            raise PalimpsestError("the faiss index needs faiss", expected="faiss-cpu installed",
                                  got=f"{type(err).__name__}: {err}",
                                  fix="pip install 'palimpsest[faiss]' (or use index='exact')") from None
        self._faiss, self.dim = faiss, _check(dim)
        self.clear()

    def clear(self) -> None:
        self._index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def nbytes(self) -> int:
        return self._index.ntotal * (self.dim * 4 + 8) + 100 * len(self._live)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        again = [i for i in ids.tolist() if i in self._live]
        if again:
            self._index.remove_ids(np.asarray(again, np.int64))
        self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
        self._live.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> None:
        gone = [i for i in np.asarray(ids, np.int64).tolist() if i in self._live]
        if gone:
            self._index.remove_ids(np.asarray(gone, np.int64))
            self._live.difference_update(gone)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not self._live or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        params = None
        if allowed is not None:
            allowed = np.asarray([i for i in np.asarray(allowed).tolist() if i in self._live], np.int64)
            if len(allowed) == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            params = self._faiss.SearchParameters(sel=self._faiss.IDSelectorBatch(allowed))
            k = min(k, len(allowed))
        k = min(k, len(self._live))
        scores, labels = self._index.search(q, k, params=params)
        keep = labels[0] >= 0
        return labels[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)


def create_index(name: str, dim: int, **settings):
    """A vector index by registered name: `create_index("hnsw", 384, ef_search=128)`."""
    return VECTOR_INDEXES.create(name, dim, **settings)


__all__ = ["ExactIndex", "FaissIndex", "HnswIndex", "create_index"]
