"""Vector retrieval: exact inner product for small catalogs, a FAISS ANN index above a configured size.

Every vector source (ALS, content) retrieves through :class:`VectorIndex`. Items are rows of the vector
matrix, so ids are item indices and new items (``add``) take the next ids.

Below ``exact_below`` items the search is one BLAS matrix product per block of queries with excluded items
masked before the top-n selection: exact, and faster than a FAISS flat index whose result heap must be
widened by every excluded item. Above it, ``config.large`` picks the FAISS index (inner product):

- ``ivf`` (default): ``IndexIVFFlat``, k-means lists trained at build (``ivf_lists``, default 4·√items),
  ``nprobe`` lists searched per query — and more when a request asks for many items, so that at least
  ``ivf_scan`` × the requested count of vectors is scanned. On the 1M-item benchmark it is the index that
  meets recall@100 ≥ 0.95 within 1 ms (docs/BENCHMARKS.md), and it builds in minutes, not tens of minutes.
- ``hnsw``: ``IndexHNSWFlat`` (``hnsw_m``, ``ef_construction``; ``ef_search`` per query, raised to the
  requested count). No training, but slower to build and below IVF's recall on the benchmark.

Excluded items are filtered after an ANN search, fetching wider only for the rows that came up short.
Search parameters are passed per call, never set on the shared index, so concurrent searches are safe.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import faiss
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from tastemaker.candidates.base import Rows, as_rows, member, take_rows, top_n
from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError, NotFittedError, UnknownNameError

__all__ = ["AnnConfig", "VectorIndex"]

_EXACT_BLOCK = 1 << 24  # scores per dense block of an exact search (64 MiB of float32)


class AnnConfig(ConfigModel):
    """How vectors are searched. ``exact_below``: catalogs smaller than this use exact search."""

    exact_below: int = Field(default=100_000, ge=0)
    #: the index for catalogs of ``exact_below`` items or more
    large: Literal["ivf", "hnsw"] = "ivf"
    #: IVF: inverted lists (None: 4·√items, at most items / 39 so k-means has enough points per list)
    ivf_lists: int | None = Field(default=None, ge=1)
    #: IVF: lists searched per query, at least
    nprobe: int = Field(default=16, ge=1)
    #: IVF: search enough lists to scan about this many vectors per item asked for (deep requests)
    ivf_scan: float = Field(default=8.0, gt=0)
    #: IVF: k-means trains on at most this many sampled vectors per list
    ivf_train_per_list: int = Field(default=64, ge=39)
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
        self._params: dict[tuple[str, int], faiss.SearchParameters] = {}

    def __getstate__(self) -> dict[str, Any]:
        """FAISS indexes are written by FAISS itself (they are not picklable); the parameter cache is rebuilt."""
        state = self.__dict__.copy()
        state["_index"] = None if self._index is None else faiss.serialize_index(self._index)
        state["_params"] = {}
        state.pop("_quantizer", None)  # owned by the deserialized IVF index
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        index = state["_index"]
        state["_index"] = None if index is None else faiss.deserialize_index(index)
        self.__dict__.update(state)

    @property
    def kind(self) -> Literal["exact", "hnsw", "ivf"]:
        index = self._require()
        return "hnsw" if isinstance(index, faiss.IndexHNSW) else "ivf" if isinstance(index, faiss.IndexIVF) else "exact"

    @property
    def vectors(self) -> np.ndarray:
        """The indexed vectors, one row per item (reconstructed from FAISS for HNSW and IVF)."""
        index = self._require()
        return self._vectors if self.kind == "exact" else index.reconstruct_n(0, index.ntotal)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._require().d)

    def build(self, vectors: np.ndarray, *, kind: Literal["auto", "exact", "hnsw", "ivf"] = "auto") -> Self:
        """Index ``vectors`` (one row per item). ``kind="auto"`` is exact below ``config.exact_below`` items
        and ``config.large`` from there."""
        vectors = _as_f32(vectors)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ConfigError(f"vectors must be a 2-d array with at least one column, got shape {vectors.shape}")
        if kind not in ("auto", "exact", "hnsw", "ivf"):
            raise UnknownNameError("index kind", kind, ["auto", "exact", "hnsw", "ivf"])
        if kind == "auto":
            kind = "exact" if len(vectors) < self.config.exact_below else self.config.large
        faiss.omp_set_num_threads(self.config.threads)
        if kind == "exact":
            index: faiss.Index = faiss.IndexFlatIP(vectors.shape[1])
        elif kind == "ivf":
            index = self._trained_ivf(vectors)
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
        self, queries: np.ndarray, n: int, *, exclude: sp.csr_matrix | Rows | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` items of highest inner product per query, best first, never an item in the query's row
        of ``exclude``: ``(ids, scores)`` of shape ``(len(queries), n)``, padded with -1 / -inf."""
        index = self._require()
        queries = _as_f32(queries).reshape(-1, index.d)
        ids = np.full((len(queries), n), -1, np.int64)
        scores = np.full((len(queries), n), -np.inf, np.float32)
        if n < 1 or not len(queries) or index.ntotal == 0:
            return ids, scores
        if exclude is not None:
            exclude = as_rows(exclude).nonzero()
        if self.kind == "exact":
            return self._exact(queries, n, exclude)
        faiss.omp_set_num_threads(self.config.threads)  # (a loaded index never set it: FAISS takes every core)
        if len(queries) == 1:  # one request: the same steps on one row, without the batch bookkeeping
            return self._one(index, queries, n, exclude, ids, scores)
        counts = np.diff(exclude.indptr) if exclude is not None else np.zeros(len(queries), np.int64)
        # Fetch n plus a small margin for everyone, then again with room for every excluded item only for
        # the rows that came up short: heavy users do not make everyone's search wide.
        pending = np.arange(len(queries))
        fetch = min(int(index.ntotal), n + min(int(counts.max(initial=0)), n))
        while len(pending):
            found_scores, found = self._search(index, queries[pending], fetch)
            if exclude is not None and exclude.nnz:
                found = np.where(take_rows(exclude, pending).contains(found), -1, found)
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

    def _one(
        self, index: faiss.Index, query: np.ndarray, n: int, exclude: Rows | None, ids: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        banned = np.sort(exclude.indices[exclude.indptr[0] : exclude.indptr[1]]) if exclude is not None else None
        excluded = 0 if banned is None else len(banned)
        fetch = min(int(index.ntotal), n + min(excluded, n))
        while True:
            found_scores, found = self._search(index, query, fetch)
            keep = found[0] >= 0
            if excluded:
                keep &= ~member(found[0], banned)
            if keep.sum() >= n or fetch >= index.ntotal or fetch >= n + excluded:
                break
            fetch = min(int(index.ntotal), n + excluded)
        chosen = found[0][keep][:n]
        ids[0, : len(chosen)] = chosen
        scores[0, : len(chosen)] = found_scores[0][keep][:n]
        return ids, scores

    def _exact(self, queries: np.ndarray, n: int, exclude: Rows | None) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(queries), n), -1, np.int64)
        scores = np.full((len(queries), n), -np.inf, np.float32)
        step = max(1, _EXACT_BLOCK // max(len(self._vectors), 1))
        for start in range(0, len(queries), step):
            block = queries[start : start + step] @ self._vectors.T
            block_rows = np.arange(start, min(start + step, len(queries)))
            rows = None if exclude is None else take_rows(exclude, block_rows).narrow(len(self._vectors))
            ids[start : start + step], scores[start : start + step] = top_n(block, n, rows)
        return ids, scores

    def _trained_ivf(self, vectors: np.ndarray) -> faiss.IndexIVFFlat:
        cfg = self.config
        lists = cfg.ivf_lists or int(round(4 * np.sqrt(len(vectors))))
        lists = max(1, min(lists, len(vectors) // 39))
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        sample = min(len(vectors), lists * cfg.ivf_train_per_list)
        picked = np.sort(np.random.default_rng(0).choice(len(vectors), sample, replace=False))  # same every build
        index.train(vectors[picked] if sample < len(vectors) else vectors)
        index.make_direct_map()  # ids -> vectors, for ``vectors`` (kept through ``add``)
        self._quantizer = quantizer  # the IVF index refers to it; it must outlive this call
        return index

    def _search(self, index: faiss.Index, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        # per-call parameters, never the index's own: concurrent searches must not race on shared state
        if isinstance(index, faiss.IndexIVF):
            average = index.ntotal / index.nlist
            probes = max(self.config.nprobe, int(np.ceil(self.config.ivf_scan * fetch / max(average, 1.0))))
            key = ("ivf", min(probes, index.nlist))
        else:
            key = ("hnsw", max(self.config.ef_search, fetch))
        params = self._params.get(key)
        if params is None:  # building one costs more than a small search; they are only read, so shared
            params = (
                faiss.SearchParametersIVF(nprobe=key[1])
                if key[0] == "ivf"
                else faiss.SearchParametersHNSW(efSearch=key[1])
            )
            if len(self._params) > 256:  # keys follow request widths: keep the cache bounded
                self._params.clear()
            self._params[key] = params
        return index.search(queries, fetch, params=params)

    def _require(self) -> faiss.Index:
        if self._index is None:
            raise NotFittedError(type(self).__name__)
        return self._index


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)
