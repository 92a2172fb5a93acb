"""Feedback read from logged exposures: what :class:`~tastemaker.reranking.base.Feedback` asks, answered
from in-memory arrays (the serving layer fills them from the store's exposure log)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.reranking.base import Catalog

__all__ = ["FeedbackLog"]


class FeedbackLog:
    """One row per (exposure, shown item): ``user`` and ``item`` indices, ``shown_us``, and ``engaged``
    (whether an event attributed to that exposure followed on that item)."""

    def __init__(self, shown: pd.DataFrame, catalog: Catalog) -> None:
        self._user = shown["user"].to_numpy(np.int64)
        self._item = shown["item"].to_numpy(np.int64)
        self._when = shown["shown_us"].to_numpy(np.int64)
        self._engaged = shown["engaged"].to_numpy(bool)
        self._provider_names = catalog.providers[catalog.provider[self._item]] if len(self._item) else np.zeros(0)
        self._n_items = len(catalog)

    def item_counts(self, items: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        before = self._when < now_us
        shown = np.bincount(self._item[before], minlength=self._n_items).astype(np.float64)
        engaged = np.bincount(self._item[before & self._engaged], minlength=self._n_items).astype(np.float64)
        return shown[items], engaged[items]

    def user_ignored(self, user: int, items: np.ndarray, now_us: int, since_us: int) -> np.ndarray:
        mine = (self._user == user) & (self._when >= since_us) & (self._when < now_us) & ~self._engaged
        counts = np.bincount(self._item[mine], minlength=self._n_items).astype(np.float64)
        return counts[items]

    def provider_shares(self, now_us: int, since_us: int) -> dict[str, float]:
        window = (self._when >= since_us) & (self._when < now_us)
        names, counts = np.unique(self._provider_names[window].astype(str), return_counts=True)
        total = counts.sum()
        return {str(n): float(c / total) for n, c in zip(names, counts, strict=True) if n} if total else {}
