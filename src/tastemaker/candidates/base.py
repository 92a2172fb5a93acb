"""The candidate-source contract, written once.

A source is configured in its constructor (which only stores the config), learns in :meth:`fit`, then
answers batch-first: :meth:`candidates` takes many users at once and returns parallel arrays.

Users and items are snapshot indices (rows and columns of ``snapshot.matrix``); the caller maps external
ids with ``snapshot.user_index`` / ``snapshot.item_index``. Results have shape ``(len(users), n)``: item
indices best first, padded with -1 where a user has fewer than ``n`` candidates, and scores padded with
``-inf``. Scores are comparable within one source only. Items in a user's row of ``exclude`` are never
returned. Calling :meth:`candidates` before :meth:`fit` raises :class:`~tastemaker.errors.NotFittedError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import NotFittedError

__all__ = ["CandidateSource", "pad_results"]


class CandidateSource(ABC):
    """Proposes items for users. See the module docstring for the contract."""

    name: ClassVar[str]
    _snapshot: Snapshot | None = None

    @abstractmethod
    def fit(self, snapshot: Snapshot) -> Self:
        """Learn from ``snapshot``; returns self."""

    @abstractmethod
    def candidates(
        self, users: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` items per user: ``(item_indices, scores)``, each of shape ``(len(users), n)``."""

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot the source was fitted on."""
        if self._snapshot is None:
            raise NotFittedError(type(self).__name__)
        return self._snapshot


def pad_results(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (or trim) result arrays to ``n`` columns with -1 / -inf."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if ids.shape[1] >= n:
        return ids[:, :n], scores[:, :n]
    pad = n - ids.shape[1]
    return (
        np.pad(ids, ((0, 0), (0, pad)), constant_values=-1),
        np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
    )
