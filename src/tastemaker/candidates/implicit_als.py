"""Plain implicit ALS with the library's defaults: the peer baseline every later layer must beat.

No tuning and no confidence transform beyond the snapshot's weights; BLAS held to one thread as
implicit requires.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from tastemaker.candidates.base import CandidateSource, pad_results
from tastemaker.data.snapshot import Snapshot

__all__ = ["ImplicitALS"]


class ImplicitALS(CandidateSource):
    name = "implicit-als"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def fit(self, snapshot: Snapshot) -> Self:
        with threadpool_limits(1, "blas"):  # implicit checks BLAS threads when the model is built
            self.model = AlternatingLeastSquares(random_state=self.seed)
            self.model.fit(sp.csr_matrix(snapshot.matrix, dtype=np.float32), show_progress=False)
        self._snapshot = snapshot
        return self

    def candidates(
        self, users: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        snap = self.snapshot
        users = np.asarray(users, dtype=np.int32)
        seen = exclude if exclude is not None else sp.csr_matrix((len(users), snap.n_items), dtype=np.float32)
        with threadpool_limits(1, "blas"):
            ids, scores = self.model.recommend(
                users,
                sp.csr_matrix(seen),
                N=min(n, snap.n_items),
                filter_already_liked_items=exclude is not None,
            )
        ids = np.atleast_2d(ids)
        scores = np.atleast_2d(scores)
        valid = (ids >= 0) & np.isfinite(scores)
        return pad_results(np.where(valid, ids, -1), np.where(valid, scores, -np.inf), n)
