"""Feedback read from logged exposures: what :class:`~tastemaker.reranking.base.Feedback` asks, answered
from in-memory arrays (the serving layer fills them from the store's exposure log).

Requests ask about "before now": rows are kept sorted by time, so a window is a slice found by binary
search; per-item totals and provider shares are cached for the last slice asked about (a served request's
now is after the whole log, so they are computed once per log), and a user's rows are a slice of a second
order by user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.reranking.base import Catalog

__all__ = ["FeedbackLog"]


class FeedbackLog:
    """One row per (exposure, shown item): ``user`` and ``item`` indices, ``shown_us``, and ``engaged``
    (whether an event attributed to that exposure followed on that item)."""

    def __init__(self, shown: pd.DataFrame, catalog: Catalog) -> None:
        when = shown["shown_us"].to_numpy(np.int64)
        order = np.argsort(when, kind="stable")
        self._when = when[order]
        self._user = shown["user"].to_numpy(np.int64)[order]
        self._item = shown["item"].to_numpy(np.int64)[order]
        self._engaged = shown["engaged"].to_numpy(bool)[order]
        self._provider = catalog.provider[self._item] if len(self._item) else np.zeros(0, np.int64)
        self._providers = catalog.providers
        self._n_items = len(catalog)
        self._by_user = np.lexsort((self._when, self._user))  # rows by user, then time
        self._users_sorted = self._user[self._by_user]
        self._totals: tuple[int, np.ndarray, np.ndarray] | None = None
        self._shares: tuple[int, int, dict[str, float]] | None = None

    def item_counts(self, items: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        end = int(np.searchsorted(self._when, now_us, side="left"))
        if self._totals is None or self._totals[0] != end:
            shown = np.bincount(self._item[:end], minlength=self._n_items).astype(np.float64)
            engaged = np.bincount(self._item[:end][self._engaged[:end]], minlength=self._n_items).astype(np.float64)
            self._totals = (end, shown, engaged)
        _, shown, engaged = self._totals
        return shown[items], engaged[items]

    def user_ignored(self, user: int, items: np.ndarray, now_us: int, since_us: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._users_sorted, [user, user + 1])
        rows = self._by_user[lo:hi]
        when = self._when[rows]
        rows = rows[(when >= since_us) & (when < now_us) & ~self._engaged[rows]]
        if not len(rows):
            return np.zeros(len(items))
        seen, counts = np.unique(self._item[rows], return_counts=True)
        at = np.minimum(np.searchsorted(seen, items), len(seen) - 1)
        return np.where(seen[at] == items, counts[at], 0).astype(np.float64)

    def provider_shares(self, now_us: int, since_us: int) -> dict[str, float]:
        lo, hi = (int(i) for i in np.searchsorted(self._when, [since_us, now_us], side="left"))
        if self._shares is None or self._shares[:2] != (lo, hi):
            counts = np.bincount(self._provider[lo:hi], minlength=len(self._providers))
            total = counts.sum()
            named = [(str(n), c) for n, c in zip(self._providers, counts, strict=True) if n and c]
            self._shares = (lo, hi, {n: float(c / total) for n, c in named} if total else {})
        return self._shares[2]
