"""Popular and trending items, globally or steered towards each user's categories.

``Popularity`` (model ``popularity``) ranks items by how many users interacted with them: the holdout's
control arm and the floor every personalised model must beat. ``PopularSource`` (model ``popular``) adds
time decay (``half_life_days``: each interaction counts ``0.5 ** (age / half_life)`` at the snapshot's
cutoff, so recent interest outweighs old) and per-category steering (``steer``): a user's score for an
item is its popularity times ``floor + share``, where ``share`` is the user's weight on the item's
categories, from their history and from ``attributes.preferred_categories`` (onboarding). A user with
neither gets the global list.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from tastemaker.candidates.base import (
    CandidateSource,
    Rows,
    UserRows,
    as_rows,
    local_columns,
    pad_results,
    take_rows,
    top_n,
)
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot

__all__ = ["PopularConfig", "PopularSource", "Popularity", "PoolCategories", "category_shares", "dense_rows"]

_DAY_US = 86_400 * 1_000_000
_CHUNK = 256  # users per dense block when steering
_FEW = 16  # up to this many users (a request's batch), steering reads only the pool's heads (``_steered_one``)


class Popularity(CandidateSource):
    name = "popularity"
    needs_history = False

    def _fit(self, snapshot: Snapshot) -> None:
        self.item_users = np.diff(snapshot.matrix.tocsc().indptr).astype(np.float32)
        self._order = np.lexsort((np.arange(snapshot.n_items), -self.item_users))  # ties: lower index

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return _global(self._order, self.item_users, len(users), n, exclude)


class PopularConfig(ConfigModel):
    #: None counts every interaction equally; a number decays them with this half-life
    half_life_days: float | None = Field(default=7.0, gt=0)
    #: rank within each user's categories (history + preferred_categories) instead of globally
    steer: bool = True
    #: weight of items outside the user's categories, relative to a category share of 1
    floor: float = Field(default=0.05, ge=0)
    #: how much a preferred category (onboarding) counts, in units of one history interaction share
    preferred_weight: float = Field(default=1.0, ge=0)
    #: only available items are proposed
    available_only: bool = True
    #: steering re-ranks only the ``pool`` most popular items (bounds the cost on big catalogs)
    pool: int = Field(default=10_000, ge=1)


class PopularSource(CandidateSource):
    name = "popular"
    needs_history = False

    def __init__(self, config: PopularConfig | None = None) -> None:
        self.config = config or PopularConfig()

    def _fit(self, snapshot: Snapshot) -> None:
        table = snapshot.interactions
        weight = np.ones(len(table))
        if self.config.half_life_days is not None:
            now = snapshot.cutoff_us
            if now is None:  # a snapshot without a cutoff ends at its last interaction
                now = int(table["last_timestamp_us"].max()) if len(table) else 0
            age_days = np.maximum(now - table["last_timestamp_us"].to_numpy(np.float64), 0) / _DAY_US
            weight = 0.5 ** (age_days / self.config.half_life_days)
        score = np.bincount(table["item_idx"], weights=weight, minlength=snapshot.n_items).astype(np.float32)
        if self.config.available_only:
            score[~snapshot.item_available] = -np.inf
        self.score = score
        self._order = np.lexsort((np.arange(len(score)), -score))
        self._item_categories = snapshot.item_categories.tocsr()
        self._categories = snapshot.categories
        self._set_pool()
        self._shares = UserRows(self._category_shares(np.arange(snapshot.n_users)))

    def _category_shares(self, users: np.ndarray) -> sp.csr_matrix:
        return category_shares(self, users, self._item_categories, self._categories, self.config.preferred_weight)

    def _folded(self, users: np.ndarray) -> None:
        grown = self._shares.grown(self.n_users, self._shares.shape[1])
        self._shares = grown.replaced(users, self._category_shares(users))

    def _steered(self, shares: np.ndarray, n: int, banned: Rows) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` pool positions by popularity × (floor + the user's share of the item's categories)."""
        if self._pool_categories.only is not None and len(shares) <= _FEW:
            ids = np.full((len(shares), n), -1, np.int64)
            best = np.full((len(shares), n), -np.inf, np.float32)
            banned = banned.nonzero()  # (a stored zero excludes nothing)
            for r in range(len(shares)):
                row = banned.indices[banned.indptr[r] : banned.indptr[r + 1]]
                ids[r], best[r] = self._steered_one(shares[r], n, row)
            return ids, best
        affinity = self._pool_categories.affinity(shares)
        return top_n(self._pool_score[None, :] * (self.config.floor + np.minimum(affinity, 1.0)), n, banned)

    def _steered_one(self, share: np.ndarray, n: int, banned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_steered` for one user of a catalog whose items have at most one category each, without
        scoring the whole pool: an item's factor is its category's, so within one category (and among the
        items of categories the user has no share in) the score follows the pool's order, the best ``n`` of
        each such group are its first ``n`` not excluded, and the top ``n`` overall are among those. The same
        scores, computed the same way, as over the whole pool."""
        only, floor = self._pool_categories.only, self.config.floor
        assert only is not None
        factor = floor + np.minimum(np.concatenate([share, np.zeros(1, share.dtype)]), 1.0)  # the last: no category
        blocked = np.zeros(len(self._pool), bool)
        blocked[banned] = True
        mine = np.flatnonzero(share > 0)
        parts = []
        heads = self.__dict__.get("_heads")
        if heads is None or heads[0] is not only:  # each category's pool positions in the pool's order, once a pool
            order = np.argsort(only, kind="stable")
            heads = self._heads = (only, order, np.searchsorted(only[order], np.arange(len(factor) + 1)))
        _, by_category, bounds = heads
        for category in mine.tolist():
            members = by_category[bounds[category] : bounds[category + 1]]
            parts.append(members[~blocked[members]][:n])
        in_mine = np.zeros(len(factor), bool)
        in_mine[mine] = True
        limit = min(len(self._pool), 4 * n + len(banned) + 64)
        while True:  # the other items, in the pool's order
            rest = np.flatnonzero(~in_mine[only[:limit]] & ~blocked[:limit])[:n]
            if len(rest) >= n or limit == len(self._pool):
                break
            limit = min(len(self._pool), 4 * limit)
        positions = np.sort(np.concatenate([rest, *parts]))  # ties then go to the lower pool position, as in top_n
        if not len(positions):  # every pool item excluded (or no pool): nothing to propose
            return np.full(n, -1, np.int64), np.full(n, -np.inf, np.float32)
        local, best = top_n((self._pool_score[positions] * factor[only[positions]])[None, :], n)
        return np.where(local[0] >= 0, positions[np.maximum(local[0], 0)], -1), best[0]

    def _set_pool(self) -> None:
        pool = self._order[: self.config.pool]
        self._pool = pool[np.isfinite(self.score[pool])]
        self._pool_score = self.score[self._pool]
        self._pool_categories = PoolCategories(self._item_categories, self._pool)
        self._position = np.full(len(self.score), -1, np.int64)
        self._position[self._pool] = np.arange(len(self._pool))

    def _items_added(self, items: np.ndarray, frame: pd.DataFrame) -> None:
        # new items have no interactions: they stay out of a popularity list until the next fit
        self.score = np.concatenate([self.score, np.full(len(items), -np.inf, np.float32)])
        blank = sp.csr_matrix((len(items), len(self._categories)), dtype=np.float32)
        self._item_categories = sp.vstack([self._item_categories, blank]).tocsr()
        self._order = np.concatenate([self._order, items])
        self._set_pool()

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        if not self.config.steer:
            return _global(self._order, self.score, len(users), n, exclude)
        shares = dense_rows(self._shares, users)
        ids = np.full((len(users), n), -1, np.int64)
        scores = np.full((len(users), n), -np.inf, np.float32)
        plain = ~shares.any(axis=1)
        if plain.any():
            rows = np.flatnonzero(plain)
            banned = exclude if len(rows) == len(users) else take_rows(exclude, rows)
            ids[rows], scores[rows] = _global(self._order, self.score, len(rows), n, banned)
        for start in range(0, len(users), _CHUNK):
            rows = np.flatnonzero(~plain[start : start + _CHUNK]) + start
            if not len(rows):
                continue
            banned = exclude if len(rows) == len(users) else take_rows(exclude, rows)
            local, scores[rows] = self._steered(shares[rows], n, local_columns(banned, self._position, len(self._pool)))
            ids[rows] = np.where(local >= 0, self._pool[np.maximum(local, 0)], -1)
        return ids, scores


class PoolCategories:
    """The categories of a pool's items, for a user's affinity to each pool item: the sum of the user's
    shares over the item's categories. One user is summed with a ``bincount`` over the pool's (item,
    category) entries; a batch with a sparse product."""

    def __init__(self, item_categories: sp.csr_matrix, pool: np.ndarray) -> None:
        self.matrix = sp.csr_matrix(item_categories[pool], dtype=np.float32)
        self._entry_item = np.repeat(np.arange(len(pool)), np.diff(self.matrix.indptr))
        self._entry_weight = self.matrix.data.astype(np.float64)
        # at most one category per item, of weight 1 (a common catalog): affinity is a lookup, no sum
        self._only: np.ndarray | None = None
        if (np.diff(self.matrix.indptr) <= 1).all() and (self.matrix.data == 1).all():
            self._only = np.full(len(pool), self.matrix.shape[1], np.int64)  # the last column reads 0
            self._only[self._entry_item] = self.matrix.indices

    @property
    def only(self) -> np.ndarray | None:
        """Each pool item's category (the number of categories for none) when no item has more than one."""
        return self._only

    def affinity(self, shares: np.ndarray) -> np.ndarray:
        """``(len(shares), pool)``: each user's summed share over each pool item's categories."""
        if self._only is not None:
            return np.concatenate([shares, np.zeros((len(shares), 1), shares.dtype)], axis=1)[:, self._only]
        if len(shares) == 1:
            weights = shares[0, self.matrix.indices] * self._entry_weight
            return np.bincount(self._entry_item, weights=weights, minlength=self.matrix.shape[0])[None, :]
        return np.asarray(self.matrix @ shares.T).T


def category_shares(
    source: CandidateSource,
    users: np.ndarray,
    item_categories: sp.csr_matrix,
    categories: pd.Index,
    preferred_weight: float = 1.0,
) -> sp.csr_matrix:
    """Each user's category distribution, sparse ``(len(users), len(categories))``: rows sum to 1, or are
    empty when nothing is known. The share of their interacted items per category, plus ``preferred_weight``
    times an even split over their ``attributes.preferred_categories``, renormalised. Sources compute it for
    every user at fit and for folded-in users at fold-in, so a request only reads a row."""
    users = np.asarray(users, dtype=np.int64)
    rows = source.user_rows(users).narrow(item_categories.shape[0]).nonzero()
    picked_rows, picked = [], []
    for row, user in enumerate(users):
        wanted = source.user_attributes(user).get("preferred_categories") or []
        if len(wanted):
            found = np.unique(categories.get_indexer([str(c) for c in wanted]))
            picked.append(found[found >= 0])
            picked_rows.append(np.full(len(picked[-1]), row))
    pref_rows = np.concatenate([np.zeros(0, np.int64), *picked_rows])
    pref_cols = np.concatenate([np.zeros(0, np.int64), *picked])
    shape = (len(users), item_categories.shape[1])
    if len(users) <= _DENSE_SHARES:  # a fold-in's few users: dense rows, a few array operations (no scipy calls)
        of_items = take_rows(item_categories, rows.indices)  # every interacted item's categories, counted once
        owner = rows.row_ids()[of_items.row_ids()]
        counts = np.bincount(owner * shape[1] + of_items.indices, minlength=shape[0] * shape[1])
        wanted = np.zeros(shape, np.float32)
        wanted[pref_rows, pref_cols] = 1.0
        history = counts.reshape(shape).astype(np.float32)
        shares = _dense_normalise(_dense_normalise(history) + np.float32(preferred_weight) * _dense_normalise(wanted))
        return sp.csr_matrix(shares)
    interacted = sp.csr_matrix((np.ones(rows.nnz, np.float32), rows.indices, rows.indptr), shape=rows.shape)
    in_category = sp.csr_matrix(item_categories, dtype=np.float32, copy=True)
    in_category.data[:] = 1.0
    history = interacted @ in_category
    preferred = sp.csr_matrix((np.ones(len(pref_cols), np.float32), (pref_rows, pref_cols)), shape=shape)
    return _normalise(_normalise(history) + preferred_weight * _normalise(preferred))


#: users whose category shares are computed as dense rows (above: sparse products)
_DENSE_SHARES = 64


def _dense_normalise(rows: np.ndarray) -> np.ndarray:
    """:func:`_normalise` of dense float32 rows."""
    totals = rows.sum(axis=1, dtype=np.float64)
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return rows * scale.astype(np.float32)[:, None]


def dense_rows(matrix: UserRows, users: np.ndarray) -> np.ndarray:
    """``matrix``'s rows of ``users`` as a dense float32 array, at the cost of a request."""
    rows = matrix.take(np.asarray(users, dtype=np.int64))
    out = np.zeros(rows.shape, np.float32)
    out[rows.row_ids(), rows.indices] = rows.data
    return out


def _normalise(matrix: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    out = (sp.diags(scale.astype(np.float32)) @ sp.csr_matrix(matrix, dtype=np.float32)).tocsr()
    out.eliminate_zeros()
    return out


def _global(
    order: np.ndarray, score: np.ndarray, rows: int, n: int, exclude: sp.csr_matrix | Rows
) -> tuple[np.ndarray, np.ndarray]:
    """The global order, minus each row's excluded items."""
    width = n + int(np.diff(exclude.indptr).max(initial=0))
    head = order[: min(width, len(order))]
    head = head[np.isfinite(score[head])]
    ids = np.broadcast_to(head, (rows, len(head)))
    if exclude.nnz:
        banned = as_rows(exclude).nonzero().contains(np.broadcast_to(head, (rows, len(head))))
        keep_first = np.argsort(banned, axis=1, kind="stable")  # allowed items first, order kept
        ids = np.take_along_axis(ids, keep_first, axis=1)
        ids = np.where(np.take_along_axis(banned, keep_first, axis=1), -1, ids)
    ids = ids[:, :n]
    scores = np.where(ids >= 0, score[np.maximum(ids, 0)], -np.inf)
    return pad_results(ids, scores, n)
