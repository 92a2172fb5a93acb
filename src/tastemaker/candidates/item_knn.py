"""Item-item nearest neighbours: items similar to what a user did most recently.

The item×item similarity keeps each item's ``neighbours`` best: ``implicit`` builds cosine or BM25-weighted
dot products; ``rp3`` is RP3β (Paudel et al. 2017, "Updatable, accurate, diverse, and scalable
recommendations for interactive applications"): the probability of a three-step random walk item → user →
item on the binarised interaction graph, each step's transition probability raised to ``rp3_alpha``, divided
by the target item's popularity to the power ``rp3_beta`` (which favours the long tail), computed here in
sparse blocks of items; ``sequence`` counts items near each other in users' histories (ordered by when each
pair began: what users take next, or took just before), each pair weighted down with its distance, and
divided by both items' user counts to a power (:func:`sequence_similarity`). A user's score for item ``j`` is
``Σ_i w_i · sim(i, j)`` over their ``recent_items`` newest items ``i``, where ``w_i`` is the interaction
weight, halved every ``half_life_days`` of age relative to the user's own newest interaction (so no clock is
needed) and every ``half_life_items`` newer items the user has (of those the similarity knows: items
added after ``fit`` are not counted). Ties in time are ordered by item index, lower first: in scoring the
lower counts as newer, in ``sequence_similarity``'s histories as earlier (a known inconsistency; 15.7% of
consecutive ml-latest-small ratings share a timestamp). Only items reached through a
neighbour are proposed. Scoring reads :meth:`~CandidateSource.user_items` and
:meth:`~CandidateSource.user_last_us`, so folded-in history counts without a retrain; items added after
``fit`` have no neighbours and are never proposed. :meth:`ItemKNN.because` names, per proposed item, the
history item that contributed most: the "because you liked X" reason.

The defaults (BM25) and the ``sequence`` source's settings (``tastemaker.candidates.merge``) come from grid
searches on validation splits carved from the train side of ml-latest-small (``recommenders`` and
``temporal``), never from a test split.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from implicit.utils import ParameterWarning
from pydantic import Field
from threadpoolctl import threadpool_limits

from tastemaker.candidates.base import CandidateSource, Rows, row_pointers, sparse_top_n, take_rows
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import DataFormatError

__all__ = ["ItemKNN", "ItemKNNConfig"]

_DAY_US = 86_400 * 1_000_000
_BLOCK = 1_024  # users per dense score block
_BY_HAND = 200_000  # neighbour entries a request may sum by hand (above: scipy's sparse product)
_WALK_ENTRIES = 20_000_000  # RP3β: at most about this many item×item walk entries are held at once
_SEQUENCE_PAIRS = 8_000_000  # sequence similarity: a block of rows lists about this many pairs at once


class ItemKNNConfig(ConfigModel):
    similarity: Literal["cosine", "bm25", "rp3", "sequence"] = "bm25"
    #: neighbours kept per item (implicit's ``K``)
    neighbours: int = Field(default=200, ge=1)
    #: BM25 saturation and length normalisation (implicit's ``K1``, ``B``); a low ``b`` normalises an item's
    #: similarities only a little by its popularity, which ranks better here than cosine's full normalisation
    bm25_k1: float = Field(default=1.2, ge=0)
    bm25_b: float = Field(default=0.1, ge=0, le=1)
    #: RP3β: the exponent of each random-walk step's probability, and of the target item's popularity it is
    #: divided by
    rp3_alpha: float = Field(default=0.5, gt=0)
    rp3_beta: float = Field(default=0.5, ge=0)
    #: ``sequence``: pairs at most this many positions apart in a user's history (ordered by when each pair
    #: began) count, each ``sequence_decay ** (distance - 1)``; a pair where the neighbour came later counts
    #: ``sequence_forward`` times that (begun at the same instant: the mean of both ways); the sum is divided by
    #: both items' user counts to ``sequence_power``
    sequence_window: int = Field(default=20, ge=1)
    sequence_decay: float = Field(default=0.9, gt=0, le=1)
    sequence_forward: float = Field(default=1.0, ge=0)
    sequence_power: float = Field(default=0.4, ge=0, le=1)
    #: how many of a user's newest items their candidates come from
    recent_items: int = Field(default=500, ge=1)
    #: None weighs every recent item alike; a number halves an item's weight per this many days of age
    half_life_days: float | None = Field(default=None, gt=0)
    #: None, or halve an item's weight per this many newer items the user has (position, not time; items last taken
    #: at one instant count as one position)
    half_life_items: float | None = Field(default=None, gt=0)


class ItemKNN(CandidateSource):
    name = "item_knn"

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config or ItemKNNConfig()

    def _fit(self, snapshot: Snapshot) -> None:
        cfg = self.config
        if cfg.similarity in ("rp3", "sequence"):
            found = (
                rp3_similarity(snapshot.matrix, cfg.rp3_alpha, cfg.rp3_beta, cfg.neighbours)
                if cfg.similarity == "rp3"
                else sequence_similarity(snapshot, cfg)
            )
            found.sort_indices()  # rows in column order: ``because`` looks pairs up by search
            self.similarity = found
            return
        # implicit warns (and slows down) with threaded BLAS; its own weighting hands itself COO input,
        # which it then warns about converting
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)
            if cfg.similarity == "cosine":
                model = CosineRecommender(K=cfg.neighbours)
            else:
                model = BM25Recommender(K=cfg.neighbours, K1=cfg.bm25_k1, B=cfg.bm25_b)
            model.fit(sp.csr_matrix(snapshot.matrix, dtype=np.float32), show_progress=False)
        similarity = sp.csr_matrix(model.similarity, dtype=np.float32)
        # an item is not its own reason: drop self-similarity so seen items score from the others
        similarity = (similarity - sp.diags(similarity.diagonal())).tocsr()
        similarity.eliminate_zeros()
        self.similarity = similarity

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(users), n), -1, np.int64)
        scores = np.full((len(users), n), -np.inf, np.float32)
        for start in range(0, len(users), _BLOCK):
            block = np.arange(start, min(start + _BLOCK, len(users)))
            reached = self._reach(self._recent(users[block]))  # only items some neighbour reaches
            banned = exclude if len(block) == len(users) else take_rows(exclude, block)
            ids[block], scores[block] = sparse_top_n(reached, n, banned)
        return ids, scores

    def _reach(self, recent: Rows) -> sp.csr_matrix | Rows:
        """``recent @ similarity``: each reached item's summed weighted similarity. A small request is summed
        by hand over the neighbour lists it touches; scipy's product would first clear two arrays as wide
        as the catalog, most of a one-user request's time on a large catalog."""
        lengths = self.similarity.indptr[recent.indices + 1] - self.similarity.indptr[recent.indices]
        if int(lengths.sum()) > _BY_HAND:
            return recent.csr() @ self.similarity
        neighbours = take_rows(self.similarity, recent.indices)
        width = self.similarity.shape[1]
        keys = np.repeat(recent.row_ids(), lengths) * width + neighbours.indices
        values = neighbours.data.astype(np.float64) * np.repeat(recent.data, lengths)
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        summed = np.add.reduceat(values, starts) if len(keys) else np.zeros(0)
        rows, cols = np.divmod(keys[starts], width)
        indptr = row_pointers(np.bincount(rows, minlength=recent.shape[0]))
        return Rows(indptr, cols, summed.astype(np.float32), (recent.shape[0], width))

    def recent_weights(self, users: np.ndarray) -> sp.csr_matrix:
        """``w_i`` of each user's ``recent_items`` newest items, as a users × trained-items matrix."""
        return self._recent(users).csr()

    def _recent(self, users: np.ndarray) -> Rows:
        """The last call's answer is kept: a request asks twice (its candidates, then ``because``)."""
        users = np.asarray(users)
        memo = getattr(self, "_memo", None)
        fresh = memo is not None and memo[1] is self._user_items and memo[2] is self._user_last
        if fresh and np.array_equal(memo[0], users):
            return memo[3]  # type: ignore[no-any-return]
        found = self._recent_of(users)
        self._memo = (users.copy(), self._user_items, self._user_last, found)  # replaced whole: thread-safe
        return found

    def _recent_of(self, users: np.ndarray) -> Rows:
        _ = self.snapshot
        width = self.similarity.shape[0]
        # a stored zero is no interaction and must not take a recent slot
        items = self.user_rows(users).narrow(width).nonzero()
        row, col = items.row_ids(), items.indices
        when = self.user_last_at(users, row, col).astype(np.float64)
        order = np.lexsort((col, -when, row))  # per user, newest first; ties by item index
        row, col, weight, when = row[order], col[order], items.data[order], when[order]
        counts = np.bincount(row, minlength=len(users))
        first = np.cumsum(counts) - counts
        keep = np.arange(len(row)) - first[row] < self.config.recent_items
        if self.config.half_life_days is not None:
            age_days = (when[first[row]] - when) / _DAY_US
            weight = weight * 0.5 ** (age_days / self.config.half_life_days)
        if self.config.half_life_items is not None:
            # items last taken at one instant share a position: that of the first of them (as many newer items)
            at = np.arange(len(row))
            new = np.ones(len(row), bool)
            new[1:] = (row[1:] != row[:-1]) | (when[1:] != when[:-1])
            position = np.maximum.accumulate(np.where(new, at, 0)) - first[row]
            weight = weight * 0.5 ** (position / self.config.half_life_items)
        indptr = row_pointers(np.bincount(row[keep], minlength=len(users)))
        return Rows(indptr, col[keep], weight[keep].astype(np.float32), (len(users), width))

    def because(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For each ``items[r, k]`` proposed to ``users[r]`` (-1 padded, like candidate ids), the index of
        the user's history item that contributed most to its score; -1 for padding or no contribution."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 2 or len(items) != len(users):
            raise DataFormatError(f"items has shape {items.shape}; expected ({len(users)}, n), one row per user")
        out = np.full(items.shape, -1, np.int64)
        for start in range(0, len(users), _BLOCK):
            out[start : start + _BLOCK] = self._because(users[start : start + _BLOCK], items[start : start + _BLOCK])
        return out

    def _because(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.full(items.shape, -1, np.int64)
        recent = self._recent(users)
        width = items.shape[1]
        # one row per (history entry, candidate slot) of the same user
        entry = np.repeat(np.arange(recent.nnz), width)
        slot = np.tile(np.arange(width), recent.nnz)
        user, source = recent.row_ids()[entry], recent.indices[entry]
        target = items[user, slot]
        ok = (target >= 0) & (target < self.similarity.shape[0])
        entry, slot, user, source, target = entry[ok], slot[ok], user[ok], source[ok], target[ok]
        if not len(entry):
            return out
        if self.similarity.has_sorted_indices:  # each history entry's neighbour row, the pairs looked up in it
            weights = take_rows(self.similarity, recent.indices).lookup(entry, target)
        else:  # (scipy's pair indexing: slower, for any order of a row's neighbours)
            weights = np.asarray(self.similarity[source, target]).ravel()
        contribution = recent.data[entry] * weights
        key = user * width + slot
        order = np.lexsort((source, -contribution, key))  # best contribution first; ties by item index
        key, source, contribution = key[order], source[order], contribution[order]
        best = np.r_[True, key[1:] != key[:-1]] & (contribution > 0)
        out[key[best] // width, key[best] % width] = source[best]
        return out


def rp3_similarity(matrix: sp.spmatrix, alpha: float, beta: float, neighbours: int) -> sp.csr_matrix:
    """RP3β's item×item matrix (see the module docstring), each row keeping its ``neighbours`` largest entries
    and no self-similarity: ``W[i, j] = Σ_u (1/pop_i)^α (1/deg_u)^α / pop_j^β`` over users ``u`` who interacted
    with both ``i`` and ``j``. Rows are computed in blocks sized so a block's walk entries stay bounded."""
    x = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    x.eliminate_zeros()  # a stored zero is no interaction
    x.data[:] = 1.0
    n_items = x.shape[1]
    degree = np.asarray(x.sum(axis=1), np.float64).ravel()
    popularity = np.asarray(x.sum(axis=0), np.float64).ravel()
    inverse = lambda v, p: np.where(v > 0, np.maximum(v, 1.0) ** -p, 0.0)  # noqa: E731
    # item -> user (items × users) and user -> item, the latter already divided by the target's popularity^β
    to_users = (sp.diags(inverse(popularity, alpha).astype(np.float32)) @ x.T.tocsr()).tocsr()
    to_items = (sp.diags(inverse(degree, alpha).astype(np.float32)) @ x @ sp.diags(
        inverse(popularity, beta).astype(np.float32))).tocsr()  # fmt: skip
    # walk entries of an item's row ≤ Σ over its users of their degree: size each block by that bound
    cost = np.asarray(x.T @ degree).ravel()
    blocks, start = [], 0
    while start < n_items:
        end = min(n_items, start + 1 + int(np.searchsorted(np.cumsum(cost[start + 1 :]), _WALK_ENTRIES)))
        walk = (to_users[start:end] @ to_items).tocsr()
        blocks.append(_row_top(walk, neighbours, first_row=start))
        start = end
    if not blocks:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.vstack(blocks, format="csr", dtype=np.float32)


def sequence_similarity(snapshot: Snapshot, config: ItemKNNConfig) -> sp.csr_matrix:
    """Items near each other in users' histories (see :class:`ItemKNNConfig`'s ``sequence_*``): ``W[i, j]`` sums
    ``decay ** (d - 1)`` over every user who had ``j`` at most ``window`` positions ``d`` after ``i`` (times
    ``forward``; ``(forward + 1) / 2`` when both began at the same instant) or before it, divided by
    ``(users_i · users_j) ** power``; each row keeps its ``neighbours`` largest entries. A history is ordered
    by when each pair began, ties by item index (which sets their distances, not their direction). Rows are
    built in blocks of items whose pairs number about ``_SEQUENCE_PAIRS``, so memory stays bounded by a block
    and the kept neighbours, whatever the histories' length."""
    table = snapshot.interactions
    n_items = snapshot.n_items
    users = table["user_idx"].to_numpy(np.int64)
    items = table["item_idx"].to_numpy(np.int64)
    when = table["timestamp_us"].to_numpy(np.int64)
    order = np.lexsort((items, when, users))
    users, items, when = users[order], items[order], when[order]
    count = np.bincount(items, minlength=n_items).astype(np.float64)
    scale = np.where(count > 0, np.maximum(count, 1.0) ** -config.sequence_power, 0.0)
    window = config.sequence_window
    # a pair that began at the same instant has no order: it counts the mean of both directions
    tied = (config.sequence_forward + 1.0) / 2.0
    distances = [d for d in range(-window, window + 1) if d]
    at = np.argsort(items, kind="stable")  # every position of item 0, then of item 1, ...
    starts = np.concatenate([[0], np.cumsum(count).astype(np.int64)])
    blocks, first = [], 0
    per_block = max(1, _SEQUENCE_PAIRS // (2 * window))  # positions a block may hold
    while first < n_items:
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + per_block, side="right")) - 1)
        last = min(last, n_items)
        mine = at[starts[first] : starts[last]]
        rows, cols, values = [], [], []
        for d in distances:
            other = mine + d
            ok = (other >= 0) & (other < len(items))
            ok[ok] = users[other[ok]] == users[mine[ok]]
            rows.append(items[mine[ok]] - first)
            cols.append(items[other[ok]])
            direction = np.where(when[other[ok]] == when[mine[ok]], tied, config.sequence_forward if d > 0 else 1.0)
            values.append(config.sequence_decay ** (abs(d) - 1) * direction)
        block = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(last - first, n_items)
        )  # duplicates (a pair met in several histories) are summed
        block = sp.diags(scale[first:last]) @ block @ sp.diags(scale)
        blocks.append(_row_top(block.tocsr().astype(np.float32), config.neighbours, first_row=first))
        first = last
    if not blocks:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.vstack(blocks, format="csr", dtype=np.float32)


def _row_top(matrix: sp.csr_matrix, n: int, first_row: int = 0) -> sp.csr_matrix:
    """``matrix`` (rows ``first_row``… of an item×item matrix) keeping each row's ``n`` largest positive
    entries off the diagonal (ties broken by position, reproducibly). A partition per long row: linear in the
    entries, where sorting them all would be several times slower."""
    indptr, data = matrix.indptr, matrix.data
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))
    keep = (data > 0) & (matrix.indices != rows + first_row)  # an item is not its own neighbour
    data = np.where(keep, data, 0)
    for row in np.flatnonzero(np.diff(indptr) > n):
        start, end = indptr[row], indptr[row + 1]
        segment = keep[start:end]
        segment[np.argpartition(-data[start:end], n - 1)[n:]] = False
    kept = np.concatenate([[0], np.cumsum(keep)])[indptr]  # entries kept before each row's start
    return sp.csr_matrix((data[keep], matrix.indices[keep], kept), shape=matrix.shape)
