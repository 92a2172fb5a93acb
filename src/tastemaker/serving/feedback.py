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

import time
from collections.abc import Callable

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
        pause: Callable[[float], None] | None = None,
        slice_us: int = 2_000_000,
    ) -> None:
        """``pause``: after the first update, exposures are read ``slice_us`` of them at a time and each slice is
        followed by ``pause(seconds the slice took)`` (the server sleeps): see :meth:`update`."""
        self._store, self._days, self._types = store, days, tuple(engagement_types)
        self._max_rows, self._margin = max_rows, margin_us
        self._pause, self._slice = pause, slice_us
        # the rows, by time (then request, slate, position), as parallel columns
        self._rows = _Columns(request=object, user=object, item=object, shown=np.int64, engaged=np.float64)
        self._first = 0  # the absolute number of row 0 (rows leave from the front)
        self._fresh = 0  # the absolute number of the first row the last update (re)read
        self._spans: dict[str, tuple[int, int]] = {}  # request id -> its rows, absolute [start, end)
        self._read_until: int | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def first(self) -> int:
        """The absolute number of row 0: rows are numbered from the first ever read, and leave from the front."""
        return self._first

    @property
    def fresh(self) -> int:
        """The absolute number of the first row the last :meth:`update` read (those after it are new; the rows
        before it are as they were, but for their ``engaged`` times)."""
        return self._fresh

    @property
    def users(self) -> np.ndarray:
        """Each row's user id (a view: read it, never write to it)."""
        return self._rows["user"]

    @property
    def items(self) -> np.ndarray:
        return self._rows["item"]

    @property
    def shown_us(self) -> np.ndarray:
        """When each row was shown (ascending)."""
        return self._rows["shown"]

    @property
    def engaged_us(self) -> np.ndarray:
        """When an engagement attributed to each row's exposure followed on its item (NaN: none yet)."""
        return self._rows["engaged"]

    @property
    def rows(self) -> pd.DataFrame:
        """The log as a frame: request_id, user_id, item_id, timestamp_us, engaged_us (NaN when nothing engaged)."""
        ids = {name: pd.Series(self._rows[column].copy(), dtype=object)  # (object: no conversion to str)
               for name, column in zip(_COLUMNS[:3], ("request", "user", "item"), strict=True)}  # fmt: skip
        return pd.DataFrame({**ids, "timestamp_us": self.shown_us.copy(), "engaged_us": self.engaged_us.copy()})

    def update(self, now_us: int) -> None:
        """Read what is new up to ``now_us`` (see the module docstring)."""
        since = now_us - int(self._days * DAY_US)
        first_read = self._read_until is None
        start = since if first_read else max(since, self._read_until - self._margin)
        # Paced (after the first read, which precedes serving): a few seconds of exposures at a time, each slice
        # followed by a pause. Read at once, a refresh of a server at 200 lists/s (15 s of exposures, ~90k rows)
        # took a core for ~0.2 s in each worker every 10 s, and the lists of that moment waited 40-90 ms. Rows
        # are read in time order, so each slice's rows go after the last one's.
        step = self._slice if self._pause is not None and not first_read else now_us + 1 - start
        kept: list[tuple[str, str, float]] = []
        at, fresh = start, None
        while True:
            until = min(at + max(step, 1), now_us + 1)
            began = time.perf_counter()  # a duration, not "now"
            kept += self._replace_from(at, self._store.shown_items(since_us=at, until_us=until, variant=PERSONALIZED))
            fresh = self._fresh if fresh is None else fresh  # (where the first slice began: what this update read)
            if until > now_us:
                break
            assert self._pause is not None
            self._pause(time.perf_counter() - began)
            at = until
        self._fresh = fresh
        if first_read:  # every engagement with the window's exposures
            engaged = self._store.engagements(since_us=since - ATTRIBUTION_SKEW_US, until_us=now_us + 1,
                                              types=self._types)  # fmt: skip
        else:  # those ingested since the last read (whatever time the client gave them)
            engaged = self._store.engagements(until_us=now_us + 1, types=self._types,
                                              ingested_since_us=self._read_until - self._margin)  # fmt: skip
        self._attribute(kept)
        self._attribute(engaged.itertuples(index=False, name=None))
        shown = self.shown_us
        self._trim(max(int(np.searchsorted(shown, since, side="left")), len(shown) - self._max_rows))
        self._read_until = now_us + 1

    def _replace_from(self, start: int, new: pd.DataFrame) -> list[tuple[str, str, float]]:
        """The rows shown at or after ``start`` replaced by ``new`` (a fresh read of them and any later ones);
        returns the engagements the replaced rows had, to attribute again."""
        rows = self._rows
        cut = int(np.searchsorted(rows["shown"], start, side="left"))
        request, item, engaged_us = rows["request"], rows["item"], rows["engaged"]
        engaged = np.flatnonzero(~np.isnan(engaged_us[cut:])) + cut
        kept = [(request[i], item[i], float(engaged_us[i])) for i in engaged]
        for replaced in dict.fromkeys(request[cut:].tolist()):
            self._spans.pop(replaced, None)
        n = len(new)
        requests = new["request_id"].to_numpy(object)
        rows.truncate(cut)
        rows.extend(request=requests, user=new["user_id"].to_numpy(object), item=new["item_id"].to_numpy(object),
                    shown=new["timestamp_us"].to_numpy(np.int64), engaged=np.full(n, np.nan))  # fmt: skip
        self._fresh = self._first + cut
        if n:  # a request's rows are contiguous (the read is ordered by time, then request)
            starts = np.flatnonzero(np.r_[True, requests[1:] != requests[:-1]])
            ends = np.r_[starts[1:], n]
            base = self._first + cut
            spans = zip((base + starts).tolist(), (base + ends).tolist(), strict=True)
            self._spans.update(zip(requests[starts].tolist(), spans, strict=True))
        return kept

    def _attribute(self, engaged: object) -> None:
        """Each (request id, item id, time): the item's rows of that request engaged then, or earlier."""
        items, engaged_us = self._rows["item"], self._rows["engaged"]
        for request, item, at in engaged:  # type: ignore[attr-defined]
            span = self._spans.get(request)
            if span is None:
                continue
            lo, hi = max(span[0] - self._first, 0), span[1] - self._first  # (its first rows may have left)
            rows = np.flatnonzero(items[lo:hi] == item) + lo
            engaged_us[rows] = np.fmin(engaged_us[rows], at)

    def _trim(self, drop: int) -> None:
        if drop <= 0:
            return
        for request in dict.fromkeys(self._rows["request"][:drop].tolist()):
            span = self._spans.get(request)
            if span is not None and span[1] - self._first <= drop:
                del self._spans[request]
        self._rows.drop_front(drop)
        self._first += drop
        self._fresh = max(self._fresh, self._first)


class _Columns:
    """Parallel columns that grow at the end and leave from the front, in buffers with room to spare: a refresh
    costs what it adds and removes, not a copy of every row kept (millions at a few hundred lists a second)."""

    def __init__(self, **dtypes: type) -> None:
        self._buffers = {name: np.empty(1024, dtype) for name, dtype in dtypes.items()}
        self._lo = self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    def __getitem__(self, name: str) -> np.ndarray:
        """The column's rows: a view into the buffer (writes reach the rows)."""
        return self._buffers[name][self._lo : self._hi]

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` rows."""
        end = self._lo + min(n, len(self))
        self._release(end, self._hi)
        self._hi = end

    def drop_front(self, n: int) -> None:
        start = self._lo + min(n, len(self))
        self._release(self._lo, start)
        self._lo = start

    def extend(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        capacity = len(next(iter(self._buffers.values())))
        if self._hi + n > capacity:  # move the rows to the front, into a buffer twice what they will need
            size = max(2 * (len(self) + n), 1024)
            for name, buffer in self._buffers.items():
                grown = np.empty(size, buffer.dtype) if size != capacity else buffer
                grown[: len(self)] = buffer[self._lo : self._hi]
                if grown is buffer:
                    self._release_buffer(buffer, len(self), capacity)
                self._buffers[name] = grown
            self._lo, self._hi = 0, len(self)
        for name, values in columns.items():
            self._buffers[name][self._hi : self._hi + n] = values
        self._hi += n

    def _release(self, start: int, end: int) -> None:
        for buffer in self._buffers.values():
            self._release_buffer(buffer, start, end)

    @staticmethod
    def _release_buffer(buffer: np.ndarray, start: int, end: int) -> None:
        if buffer.dtype == object and end > start:  # let go of the ids of rows no longer in the log
            buffer[start:end] = None
