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
    """One row per (exposure, shown item): ``user`` and ``item`` indices, ``shown_us``, ``engaged`` (whether
    an event attributed to that exposure followed on that item) and, optionally, ``engaged_us`` (when): an
    engagement counts only before the asking request's now (without the column, at the exposure's time).
    Items added to the catalog after the log was built have no exposures."""

    def __init__(self, shown: pd.DataFrame, catalog: Catalog) -> None:
        when = shown["shown_us"].to_numpy(np.int64)
        order = np.argsort(when, kind="stable")
        when, user = when[order], shown["user"].to_numpy(np.int64)[order]
        engaged = shown["engaged"].to_numpy(bool)[order]
        engaged_us = shown["engaged_us"].to_numpy(np.float64)[order] if "engaged_us" in shown else when
        engaged_us = np.where(engaged, np.nan_to_num(engaged_us, nan=np.inf), np.inf)
        self._set(when, user, shown["item"].to_numpy(np.int64)[order], engaged_us, catalog, np.lexsort((when, user)))

    @classmethod
    def of_arrays(
        cls,
        shown_us: np.ndarray,
        user: np.ndarray,
        item: np.ndarray,
        engaged_us: np.ndarray,
        catalog: Catalog,
        by_user: np.ndarray,
    ) -> FeedbackLog:
        """The log from rows already in time order: ``engaged_us`` NaN or inf where nothing engaged, and
        ``by_user`` the rows' order by user, then time (what a caller keeping the log up to date maintains
        as rows come and go, instead of sorting every row again)."""
        log = cls.__new__(cls)
        log._set(np.asarray(shown_us, np.int64), np.asarray(user, np.int64), np.asarray(item, np.int64),
                 np.nan_to_num(np.asarray(engaged_us, np.float64), nan=np.inf), catalog, by_user)  # fmt: skip
        return log

    def _set(self, when: np.ndarray, user: np.ndarray, item: np.ndarray, engaged_us: np.ndarray, catalog: Catalog,
             by_user: np.ndarray) -> None:  # fmt: skip
        self._when, self._user, self._item, self._engaged_us = when, user, item, engaged_us
        engaged = engaged_us[np.isfinite(engaged_us)]
        self._engaged_sorted = np.sort(engaged)  # how many engagements came before a given now
        self._provider = catalog.provider[item] if len(item) else np.zeros(0, np.int64)
        self._providers = catalog.providers
        self._n_items = len(catalog)
        self._by_user = by_user  # rows by user, then time
        self._users_sorted = user[by_user]
        self._totals: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None
        self._shares: tuple[int, int, dict[str, float]] | None = None

    def item_counts(self, items: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        end = int(np.searchsorted(self._when, now_us, side="left"))
        # the rows counted are those shown before now (the first ``end``) and, as engaged, those of them
        # engaged before now: unchanged while both counts are, so a served request (its now after the whole
        # log) reuses the totals instead of counting the log again
        key = (end, int(np.searchsorted(self._engaged_sorted, now_us, side="left")))
        totals = self._totals
        if totals is None or totals[0] != key:
            engaged_now = self._engaged_us[:end] < now_us
            shown = np.bincount(self._item[:end], minlength=self._n_items).astype(np.float64)
            engaged = np.bincount(self._item[:end][engaged_now], minlength=self._n_items).astype(np.float64)
            totals = self._totals = (key, shown, engaged)
        _, shown, engaged = totals
        known = items < self._n_items
        at = np.where(known, items, 0)
        return np.where(known, shown[at], 0.0), np.where(known, engaged[at], 0.0)

    def user_ignored(self, user: int, items: np.ndarray, now_us: int, since_us: int) -> np.ndarray:
        """Exposures in the window with no engagement, counted after the user's last engagement with the item
        (an item the user came back to starts again from zero)."""
        lo, hi = np.searchsorted(self._users_sorted, [user, user + 1])
        rows = self._by_user[lo:hi]
        rows = rows[(self._when[rows] >= since_us) & (self._when[rows] < now_us)]
        if not len(rows):
            return np.zeros(len(items))
        engaged = self._engaged_us[rows] < now_us
        item, when = self._item[rows], self._when[rows]
        last = {int(i): int(t) for i, t in zip(item[engaged], when[engaged], strict=True)}  # rows are by time
        since_last = np.array([t > last.get(int(i), -1) for i, t in zip(item, when, strict=True)], bool)
        ignored = item[~engaged & since_last]
        if not len(ignored):
            return np.zeros(len(items))
        seen, counts = np.unique(ignored, return_counts=True)
        at = np.minimum(np.searchsorted(seen, items), len(seen) - 1)
        return np.where(seen[at] == items, counts[at], 0).astype(np.float64)

    def provider_shares(self, now_us: int, since_us: int) -> dict[str, float]:
        lo, hi = (int(i) for i in np.searchsorted(self._when, [since_us, now_us], side="left"))
        shares = self._shares
        if shares is None or shares[:2] != (lo, hi):
            counts = np.bincount(self._provider[lo:hi], minlength=len(self._providers))
            total = counts.sum()
            named = [(str(n), c) for n, c in zip(self._providers, counts, strict=True) if n and c]
            shares = self._shares = (lo, hi, {n: float(c / total) for n, c in named} if total else {})
        return shares[2]
