"""Vector retrieval: exact inner product for small catalogs, FAISS HNSW above a configured size.

Every vector source (ALS, content) retrieves through :class:`VectorIndex`. Items are rows of the vector
matrix, so ids are item indices and new items (``add``) take the next ids.

Below ``exact_below`` items the search is one BLAS matrix product per block of queries with excluded items
masked before the top-n selection: exact, and faster than a FAISS flat index whose result heap must be
widened by every excluded item. Above it, FAISS ``IndexHNSWFlat`` (inner product) answers; excluded items
are filtered after the search, fetching wider only for the rows that came up short.
"""

from __future__ import annotations

from typing import Literal, Self

import faiss
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from tastemaker.candidates.base import top_n
from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError, NotFittedError, UnknownNameError

__all__ = ["AnnConfig", "VectorIndex"]

_EXACT_BLOCK = 1 << 24  # scores per dense block of an exact search (64 MiB of float32)


class AnnConfig(ConfigModel):
    """How vectors are searched. ``exact_below``: catalogs smaller than this use exact search."""

    exact_below: int = Field(default=100_000, ge=0)
    hnsw_m: int = Field(default=32, ge=4, le=128)
    ef_construction: int = Field(default=200, ge=8)
    ef_search: int = Field(default=256, ge=8)
    #: FAISS threads for search and build (1 keeps request latency predictable beside other work)
    threads: int = Field(default=1, ge=1)


class VectorIndex:
    """Maximum-inner-product search over item vectors."""

    def __init__(self, config: AnnConfig | None = None) -> None:
        self.config = config or AnnConfig()
        self._index: faiss.Index | None = None
        self._vectors = np.zeros((0, 0), np.float32)  # kept for exact search

    @property
    def kind(self) -> Literal["exact", "hnsw"]:
        return "hnsw" if isinstance(self._require(), faiss.IndexHNSW) else "exact"

    @property
    def vectors(self) -> np.ndarray:
        """The indexed vectors, one row per item (reconstructed from FAISS for HNSW)."""
        index = self._require()
        return self._vectors if self.kind == "exact" else index.reconstruct_n(0, index.ntotal)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._require().d)

    def build(self, vectors: np.ndarray, *, kind: Literal["auto", "exact", "hnsw"] = "auto") -> Self:
        """Index ``vectors`` (one row per item). ``kind="auto"`` picks by ``config.exact_below``."""
        vectors = _as_f32(vectors)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ConfigError(f"vectors must be a 2-d array with at least one column, got shape {vectors.shape}")
        if kind not in ("auto", "exact", "hnsw"):
            raise UnknownNameError("index kind", kind, ["auto", "exact", "hnsw"])
        if kind == "auto":
            kind = "exact" if len(vectors) < self.config.exact_below else "hnsw"
        faiss.omp_set_num_threads(self.config.threads)
        if kind == "exact":
            index: faiss.Index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vectors.shape[1], self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.ef_construction
            index.hnsw.efSearch = self.config.ef_search
        index.add(vectors)
        self._index = index
        self._vectors = vectors if kind == "exact" else np.zeros((0, vectors.shape[1]), np.float32)
        return self

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors; returns their ids (the next item indices)."""
        index = self._require()
        vectors = _as_f32(vectors).reshape(-1, index.d)
        start = index.ntotal
        faiss.omp_set_num_threads(self.config.threads)
        index.add(vectors)
        if self.kind == "exact":
            self._vectors = np.vstack([self._vectors, vectors])
        return np.arange(start, index.ntotal, dtype=np.int64)

    def search(
        self, queries: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` items of highest inner product per query, best first, never an item in the query's row
        of ``exclude``: ``(ids, scores)`` of shape ``(len(queries), n)``, padded with -1 / -inf."""
        index = self._require()
        queries = _as_f32(queries).reshape(-1, index.d)
        ids = np.full((len(queries), n), -1, np.int64)
        scores = np.full((len(queries), n), -np.inf, np.float32)
        if n < 1 or not len(queries) or index.ntotal == 0:
            return ids, scores
        if self.kind == "exact":
            return self._exact(queries, n, exclude)
        counts = np.diff(exclude.indptr) if exclude is not None else np.zeros(len(queries), np.int64)
        faiss.omp_set_num_threads(self.config.threads)
        # Fetch n plus a small margin for everyone, then again with room for every excluded item only for
        # the rows that came up short: heavy users do not make everyone's search wide.
        pending = np.arange(len(queries))
        fetch = min(int(index.ntotal), n + min(int(counts.max(initial=0)), n))
        while len(pending):
            found_scores, found = self._search(index, queries[pending], fetch)
            if exclude is not None and exclude.nnz:
                found = _drop_excluded(found, exclude[pending])
            keep = found >= 0
            enough = (keep.sum(axis=1) >= n) | (fetch >= index.ntotal) | (fetch >= n + counts[pending])
            done = pending[enough]
            order = np.argsort(~keep[enough], axis=1, kind="stable")[:, :n]  # valid first, order kept
            chosen = np.take_along_axis(found[enough], order, axis=1)
            width = chosen.shape[1]
            ids[done, :width] = np.where(chosen >= 0, chosen, -1)
            scores[done, :width] = np.where(
                chosen >= 0, np.take_along_axis(found_scores[enough], order, axis=1), -np.inf
            )
            pending = pending[~enough]
            fetch = min(int(index.ntotal), n + int(counts[pending].max(initial=0)))
        return ids, scores

    def _exact(self, queries: np.ndarray, n: int, exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(queries), n), -1, np.int64)
        scores = np.full((len(queries), n), -np.inf, np.float32)
        step = max(1, _EXACT_BLOCK // max(len(self._vectors), 1))
        for start in range(0, len(queries), step):
            block = queries[start : start + step] @ self._vectors.T
            rows = None if exclude is None else _fit_width(exclude[start : start + step], len(self._vectors))
            ids[start : start + step], scores[start : start + step] = top_n(block, n, rows)
        return ids, scores

    def _search(self, index: faiss.Index, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = max(self.config.ef_search, fetch)
        return index.search(queries, fetch)

    def _require(self) -> faiss.Index:
        if self._index is None:
            raise NotFittedError(type(self).__name__)
        return self._index


def _fit_width(matrix: sp.csr_matrix, width: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    return matrix[:, :width] if matrix.shape[1] > width else matrix


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _drop_excluded(found: np.ndarray, exclude: sp.csr_matrix) -> np.ndarray:
    """``found`` with every id in its row of ``exclude`` replaced by -1."""
    rows = np.repeat(np.arange(len(found)), found.shape[1])
    cols = found.ravel()
    valid = cols >= 0
    hit = np.zeros(len(cols), dtype=bool)
    if valid.any():
        width = exclude.shape[1]
        inside = valid & (cols < width)
        hit[inside] = np.asarray(exclude[rows[inside], cols[inside]]).ravel() != 0
    return np.where(hit.reshape(found.shape), -1, found)
