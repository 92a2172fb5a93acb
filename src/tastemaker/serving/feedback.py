"""The exposure log the re-rankers read (fatigue, provider fairness, exploration), kept in memory and read
from the store incrementally: each refresh reads the exposures since the last one (less a margin for
exposures still being written) and the engagements attributed since then, instead of the whole window.

Rows are the personalized arm's shown items of the last ``days`` days, at most ``max_rows`` of them (the
newest): at high traffic the window is the last ``max_rows`` impressions, not the whole ``days``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.serving.holdout import PERSONALIZED
from tastemaker.store.base import Store

__all__ = ["ExposureLog"]

DAY_US = 86_400 * 1_000_000
_KEY = ["request_id", "slate", "position"]
_COLUMNS = [*_KEY, "user_id", "item_id", "timestamp_us", "engaged_us"]


class ExposureLog:
    def __init__(
        self,
        store: Store,
        *,
        days: float,
        engagement_types: tuple[str, ...],
        max_rows: int = 2_000_000,
        margin_us: int = 30_000_000,
    ) -> None:
        self._store, self._days, self._types = store, days, tuple(engagement_types)
        self._max_rows, self._margin = max_rows, margin_us
        self._rows = pd.DataFrame({c: [] for c in _COLUMNS})
        self._read_until: int | None = None

    @property
    def rows(self) -> pd.DataFrame:
        return self._rows

    def update(self, now_us: int) -> pd.DataFrame:
        """Read what is new up to ``now_us``; returns the rows (request_id, slate, position, user_id, item_id,
        timestamp_us, engaged_us: NaN when nothing engaged)."""
        since = now_us - int(self._days * DAY_US)
        start = since if self._read_until is None else max(since, self._read_until - self._margin)
        shown = self._store.exposures_frame(since_us=start, until_us=now_us + 1, engagement_types=self._types)
        shown = shown.loc[shown["variant"] == PERSONALIZED, _COLUMNS] if len(shown) else shown.reindex(columns=_COLUMNS)
        rows = pd.concat([self._rows, shown], ignore_index=True) if len(self._rows) else shown
        rows = rows.drop_duplicates(_KEY, keep="last")
        if self._read_until is not None and len(rows):  # engagements with exposures read before
            rows = self._engaged_since(rows, self._read_until - self._margin, now_us)
        rows = rows[rows["timestamp_us"] >= since].sort_values("timestamp_us", kind="stable").tail(self._max_rows)
        self._rows, self._read_until = rows.reset_index(drop=True), now_us + 1
        return self._rows

    def _engaged_since(self, rows: pd.DataFrame, since_us: int, now_us: int) -> pd.DataFrame:
        events = self._store.events_frame(since_us=since_us, until_us=now_us + 1,
                                          columns=("request_id", "item_id", "type", "timestamp_us"))  # fmt: skip
        events = events[events["request_id"].notna() & events["type"].isin(self._types)]
        if not len(events):
            return rows
        first = events.groupby(["request_id", "item_id"])["timestamp_us"].min()
        keys = pd.MultiIndex.from_arrays([rows["request_id"], rows["item_id"]])
        later = first.reindex(keys).to_numpy(np.float64)
        rows = rows.copy()
        rows["engaged_us"] = np.fmin(rows["engaged_us"].to_numpy(np.float64), later)
        return rows
