"""Random: a uniformly random list per user, from a stream derived from (seed, user id)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tastemaker._random import stream
from tastemaker.candidates.base import CandidateSource, pad_results
from tastemaker.data.snapshot import Snapshot

__all__ = ["RandomSource"]


class RandomSource(CandidateSource):
    name = "random"
    needs_history = False

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def _fit(self, snapshot: Snapshot) -> None:
        pass

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(users), n), -1, dtype=np.int64)
        for row, user in enumerate(users):
            banned = exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]
            rng = stream(self.seed, "random-source", self.user_ids[user])
            draw = rng.choice(self.n_items, size=min(n + len(banned), self.n_items), replace=False)
            draw = draw[~np.isin(draw, banned)][:n]
            ids[row, : len(draw)] = draw
        ranks = np.arange(n, 0, -1, dtype=np.float32) / n
        return pad_results(ids, np.where(ids >= 0, ranks, -np.inf), n)
