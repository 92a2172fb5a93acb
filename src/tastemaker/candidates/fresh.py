"""Fresh: the newest available items, optionally those in each user's top categories first.

"Now" is the snapshot's cutoff (time is injected, never read from the wall clock); items upserted after
training (``add_items``) are the freshest of all and join at once. Only the newest ``pool`` items are
considered, so a request costs the same on a catalog of millions. Score: ``1 / (1 + age_days)``, plus 1
for an item in one of the user's ``top_categories`` (history and ``attributes.preferred_categories``) when
``steer`` is on, so in-category items come first and the global fresh list fills the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from tastemaker.candidates.base import CandidateSource, UserRows, local_columns, top_n
from tastemaker.candidates.popular import PoolCategories, category_shares, dense_rows
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import UNKNOWN_TIME, Snapshot

__all__ = ["FreshConfig", "FreshSource"]

_DAY_US = 86_400 * 1_000_000


class FreshConfig(ConfigModel):
    pool: int = Field(default=5_000, ge=1)
    #: items older than this are never "fresh" (None: no limit)
    max_age_days: float | None = Field(default=None, gt=0)
    steer: bool = True
    top_categories: int = Field(default=3, ge=1)


class FreshSource(CandidateSource):
    name = "fresh"
    needs_history = False

    def __init__(self, config: FreshConfig | None = None) -> None:
        self.config = config or FreshConfig()

    def _fit(self, snapshot: Snapshot) -> None:
        self._now = snapshot.cutoff_us
        if self._now is None:  # a snapshot without a cutoff ends at its newest item or interaction
            self._now = int(
                max(snapshot.item_created_at_us.max(initial=0), snapshot.user_last_active_us.max(initial=0))
            )
        self._created = snapshot.item_created_at_us.astype(np.int64)
        self._available = snapshot.item_available.astype(bool)
        self._item_categories = snapshot.item_categories.tocsr()
        self._categories = snapshot.categories
        self._refresh_pool()
        self._shares = UserRows(category_shares(self, np.arange(snapshot.n_users), self._item_categories,
                                                self._categories))  # fmt: skip

    def _folded(self, users: np.ndarray) -> None:
        shares = category_shares(self, users, self._item_categories, self._categories)
        self._shares = self._shares.grown(self.n_users, self._shares.shape[1]).replaced(users, shares)

    def _items_added(self, items: np.ndarray, frame: pd.DataFrame) -> None:
        created = pd.to_numeric(frame.get("created_at_us", pd.Series(np.nan, index=frame.index)), errors="coerce")
        self._created = np.concatenate([self._created, created.fillna(self._now).to_numpy(np.int64)])
        available = frame["available"].fillna(True) if "available" in frame else pd.Series(True, index=frame.index)
        self._available = np.concatenate([self._available, available.to_numpy(bool)])
        cats = frame["categories"] if "categories" in frame else pd.Series([[]] * len(frame))
        rows, cols = [], []
        for row, values in enumerate(cats):
            listed = list(values) if isinstance(values, list | tuple | np.ndarray) else []  # parquet gives arrays
            found = self._categories.get_indexer([str(c) for c in listed])
            rows += [row] * int((found >= 0).sum())
            cols += found[found >= 0].tolist()
        added = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(items), len(self._categories)))
        self._item_categories = sp.vstack([self._item_categories, added]).tocsr()
        self._refresh_pool()

    def _refresh_pool(self) -> None:
        age_days = (self._now - self._created) / _DAY_US
        ok = self._available & (self._created != UNKNOWN_TIME)
        if self.config.max_age_days is not None:
            ok &= age_days <= self.config.max_age_days
        candidates = np.flatnonzero(ok)
        newest = candidates[np.lexsort((candidates, -self._created[candidates]))][: self.config.pool]
        self._pool = newest
        self._pool_score = (1.0 / (1.0 + np.maximum(age_days[newest], 0.0))).astype(np.float32)
        self._pool_categories = PoolCategories(self._item_categories, newest)
        self._position = np.full(len(self._created), -1, np.int64)
        self._position[newest] = np.arange(len(newest))

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        scores = np.broadcast_to(self._pool_score, (len(users), len(self._pool))).copy()
        if self.config.steer and len(self._categories):
            shares = dense_rows(self._shares, users)
            top = _top_categories(shares, self.config.top_categories)
            in_top = self._pool_categories.affinity(top) > 0
            scores += in_top.astype(np.float32)
        pool_exclude = local_columns(exclude, self._position, len(self._pool)) if exclude.nnz else None
        local, best = top_n(scores, n, pool_exclude)
        ids = np.where(local >= 0, self._pool[np.maximum(local, 0)], -1)
        return ids, best


def _top_categories(shares: np.ndarray, k: int) -> np.ndarray:
    """A 0/1 matrix marking each user's ``k`` largest category shares."""
    dense = shares
    if dense.shape[1] > k:
        cut = -np.partition(-dense, k - 1, axis=1)[:, k - 1 : k]
        dense = np.where((dense >= cut) & (dense > 0), 1.0, 0.0)
    else:
        dense = (dense > 0).astype(float)
    return dense.astype(np.float32)
