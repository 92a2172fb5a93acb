"""Popularity: items ranked by how many users interacted with them in the snapshot.

The control arm of the holdout and the floor every personalised model must beat. (Time-decayed
trending and per-category popularity join this module with the candidate layer.)
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from tastemaker.candidates.base import CandidateSource, pad_results
from tastemaker.data.snapshot import Snapshot

__all__ = ["Popularity"]


class Popularity(CandidateSource):
    name = "popularity"

    def fit(self, snapshot: Snapshot) -> Self:
        self.item_users = np.diff(snapshot.matrix.tocsc().indptr).astype(np.float32)
        self._order = np.lexsort((np.arange(snapshot.n_items), -self.item_users))  # ties: lower index
        self._snapshot = snapshot
        return self

    def candidates(
        self, users: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        _ = self.snapshot
        users = np.asarray(users)
        width = n + (int(np.diff(exclude.indptr).max(initial=0)) if exclude is not None else 0)
        head = self._order[: min(width, len(self._order))]
        ids = np.broadcast_to(head, (len(users), len(head)))
        if exclude is not None and exclude.nnz:
            banned = exclude[:, head].toarray() != 0
            keep_first = np.argsort(banned, axis=1, kind="stable")  # allowed items first, order kept
            ids = np.take_along_axis(ids, keep_first, axis=1)
            ids = np.where(np.take_along_axis(banned, keep_first, axis=1), -1, ids)
        ids = ids[:, :n]
        scores = np.where(ids >= 0, self.item_users[np.maximum(ids, 0)], -np.inf)
        return pad_results(ids, scores, n)
