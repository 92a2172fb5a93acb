"""The exposure log the re-rankers read (fatigue, provider fairness, exploration), kept in memory and read
from the store incrementally. Each refresh reads the shown items of exposures since the last one (less a margin
for exposures still being written: those rows are replaced, not merged) and the engagements attributed since,
by the time they were ingested (an event the client sends late still counts), looked up by request id: the
work of a refresh follows what is new, not the log's size.

Rows are the personalized arm's shown items of the last ``days`` days, at most ``max_rows`` of them (the
newest): at high traffic the window is the last ``max_rows`` impressions, not the whole ``days``. An exposure
written more than the margin after its request time (a store outage) is stored but not in this log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.serving.holdout import PERSONALIZED
from tastemaker.store.base import ATTRIBUTION_SKEW_US, Store

__all__ = ["ExposureLog"]

DAY_US = 86_400 * 1_000_000
_COLUMNS = ["request_id", "user_id", "item_id", "timestamp_us", "engaged_us"]


class ExposureLog:
    def __init__(
        self,
        store: Store,
        *,
        days: float,
        engagement_types: tuple[str, ...],
        max_rows: int = 2_000_000,
        margin_us: int = 5_000_000,
    ) -> None:
        self._store, self._days, self._types = store, days, tuple(engagement_types)
        self._max_rows, self._margin = max_rows, margin_us
        # the rows, by time (then request, slate, position), as parallel arrays
        self._request = np.zeros(0, dtype=object)
        self._user = np.zeros(0, dtype=object)
        self._item = np.zeros(0, dtype=object)
        self._shown = np.zeros(0, np.int64)
        self._engaged = np.zeros(0, np.float64)  # NaN: nothing attributed yet
        self._first = 0  # the absolute number of row 0 (rows leave from the front)
        self._spans: dict[str, tuple[int, int]] = {}  # request id -> its rows, absolute [start, end)
        self._read_until: int | None = None

    @property
    def rows(self) -> pd.DataFrame:
        """The log: request_id, user_id, item_id, timestamp_us, engaged_us (NaN when nothing engaged)."""
        ids = {name: pd.Series(values, dtype=object) for name, values in  # (object: no conversion to str)
               zip(_COLUMNS[:3], (self._request, self._user, self._item), strict=True)}  # fmt: skip
        return pd.DataFrame({**ids, "timestamp_us": self._shown, "engaged_us": self._engaged})

    def update(self, now_us: int) -> pd.DataFrame:
        """Read what is new up to ``now_us``; returns :attr:`rows`."""
        since = now_us - int(self._days * DAY_US)
        first_read = self._read_until is None
        start = since if first_read else max(since, self._read_until - self._margin)
        new = self._store.shown_items(since_us=start, until_us=now_us + 1, variant=PERSONALIZED)
        kept = self._replace_from(start, new)
        if first_read:  # every engagement with the window's exposures
            engaged = self._store.engagements(since_us=since - ATTRIBUTION_SKEW_US, until_us=now_us + 1,
                                              types=self._types)  # fmt: skip
        else:  # those ingested since the last read (whatever time the client gave them)
            engaged = self._store.engagements(until_us=now_us + 1, types=self._types,
                                              ingested_since_us=self._read_until - self._margin)  # fmt: skip
        self._attribute(kept)
        self._attribute(engaged.itertuples(index=False, name=None))
        self._trim(max(int(np.searchsorted(self._shown, since, side="left")), len(self._shown) - self._max_rows))
        self._read_until = now_us + 1
        return self.rows

    def _replace_from(self, start: int, new: pd.DataFrame) -> list[tuple[str, str, float]]:
        """The rows shown at or after ``start`` replaced by ``new`` (a fresh read of them and any later ones);
        returns the engagements the replaced rows had, to attribute again."""
        cut = int(np.searchsorted(self._shown, start, side="left"))
        engaged = np.flatnonzero(~np.isnan(self._engaged[cut:])) + cut
        kept = [(self._request[i], self._item[i], float(self._engaged[i])) for i in engaged]
        for request in dict.fromkeys(self._request[cut:].tolist()):
            self._spans.pop(request, None)
        n = len(new)
        requests = new["request_id"].to_numpy(object)
        self._request = np.concatenate([self._request[:cut], requests])
        self._user = np.concatenate([self._user[:cut], new["user_id"].to_numpy(object)])
        self._item = np.concatenate([self._item[:cut], new["item_id"].to_numpy(object)])
        self._shown = np.concatenate([self._shown[:cut], new["timestamp_us"].to_numpy(np.int64)])
        self._engaged = np.concatenate([self._engaged[:cut], np.full(n, np.nan)])
        if n:  # a request's rows are contiguous (the read is ordered by time, then request)
            starts = np.flatnonzero(np.r_[True, requests[1:] != requests[:-1]])
            ends = np.r_[starts[1:], n]
            base = self._first + cut
            spans = zip((base + starts).tolist(), (base + ends).tolist(), strict=True)
            self._spans.update(zip(requests[starts].tolist(), spans, strict=True))
        return kept

    def _attribute(self, engaged: object) -> None:
        """Each (request id, item id, time): the item's rows of that request engaged then, or earlier."""
        for request, item, at in engaged:  # type: ignore[attr-defined]
            span = self._spans.get(request)
            if span is None:
                continue
            lo, hi = max(span[0] - self._first, 0), span[1] - self._first  # (its first rows may have left)
            rows = np.flatnonzero(self._item[lo:hi] == item) + lo
            self._engaged[rows] = np.fmin(self._engaged[rows], at)

    def _trim(self, drop: int) -> None:
        if drop <= 0:
            return
        for request in dict.fromkeys(self._request[:drop].tolist()):
            span = self._spans.get(request)
            if span is not None and span[1] - self._first <= drop:
                del self._spans[request]
        self._request, self._user, self._item = self._request[drop:], self._user[drop:], self._item[drop:]
        self._shown, self._engaged = self._shown[drop:], self._engaged[drop:]
        self._first += drop
