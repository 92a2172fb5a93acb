"""What the server knows of the catalog between trainings, read from the store: every item's categories
and availability, and popularity (events per item over recent days; when those cover fewer items than
the longest list, items engaged with only earlier follow them, by their all-time counts). It ranks the
control arm and the fallback, and tells the personalized arm which items became unavailable since its model
was trained.

Refreshed as a whole by :meth:`CatalogView.refresh` (the server calls it on a timer); an item write through
this server is applied at once by :meth:`note_items`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tastemaker.store.base import Store

__all__ = ["CatalogView", "Popular"]

DAY_US = 86_400 * 1_000_000
_ENOUGH = 500  # a window with fewer items than the longest list is filled from all of history


@dataclass(frozen=True)
class Popular:
    item_ids: list[str]
    scores: list[float]


class CatalogView:
    def __init__(self, store: Store, *, days: float = 30.0) -> None:
        self._store = store
        self._days = days
        self._lock = threading.Lock()
        self._categories: dict[str, tuple[str, ...]] = {}
        self._unavailable: set[str] = set()
        self._ranked: list[str] = []  # popular first
        self._counts: dict[str, float] = {}
        self._notes: list[tuple[int, dict[str, Any]]] = []  # item writes applied since the running refresh began
        self._note_seq = 0
        self.refreshed_us: int | None = None
        #: the items table as last read (what a served model may not know yet)
        self.items = pd.DataFrame({"item_id": []})

    def refresh(self, now_us: int) -> None:
        with self._lock:
            started = self._note_seq
        items = self._store.items_frame()
        events = self._store.events_frame(since_us=now_us - int(self._days * DAY_US), until_us=now_us + 1,
                                          columns=("item_id",))  # fmt: skip
        table = _counted(events)
        if len(table) < _ENOUGH:  # a quiet window (or an old store): older events rank the rest, after these
            older = _counted(self._store.events_frame(until_us=now_us + 1, columns=("item_id",)))
            older = older[~older["item_id"].isin(table["item_id"])]
            table = pd.concat([table, older.assign(n=older["n"] * 1e-9)], ignore_index=True)
        categories = {str(i): tuple(c or ()) for i, c in zip(items["item_id"], items["categories"], strict=True)}
        unavailable = set(items.loc[~items["available"].astype(bool), "item_id"].astype(str))
        with self._lock:
            self._categories, self._unavailable = categories, unavailable
            self._ranked = table["item_id"].tolist()
            self._counts = dict(zip(table["item_id"], table["n"], strict=True))
            self.refreshed_us = now_us
            self.items = items
            late = [row for seq, row in self._notes if seq > started]  # written while the items were read
            self._notes = []
            for row in late:
                self._apply(row)

    def note_items(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Apply items just stored (the store's own rows, as ``get_items`` returns them)."""
        with self._lock:
            for row in rows:
                self._note_seq += 1
                self._notes.append((self._note_seq, dict(row)))
                self._apply(row)

    def _apply(self, row: Mapping[str, Any]) -> None:
        item = str(row["item_id"])
        self._categories[item] = tuple(row.get("categories") or ())
        # copy on write: readers iterate the set they were handed without the lock
        if row.get("available", True):
            self._unavailable = self._unavailable - {item}
        else:
            self._unavailable = self._unavailable | {item}

    @property
    def unavailable(self) -> set[str]:
        return self._unavailable

    def categories(self, item_id: str) -> tuple[str, ...]:
        return self._categories.get(item_id, ())

    def popular(self, k: int, *, category: str | None = None, exclude: Sequence[str] | set[str] = ()) -> Popular:
        """The ``k`` most engaged-with available items (of ``category``), none of ``exclude``; scores are
        each item's share of the counted events."""
        with self._lock:
            ranked, counts, unavailable, cats = self._ranked, self._counts, self._unavailable, self._categories
        skip = set(exclude) | unavailable
        total = sum(counts.values()) or 1.0
        picked: list[str] = []
        for item in ranked:
            if item in skip or (category is not None and category not in cats.get(item, ())):
                continue
            picked.append(item)
            if len(picked) == k:
                break
        return Popular(picked, [counts[i] / total for i in picked])


def _counted(events: pd.DataFrame) -> pd.DataFrame:
    """Events per item, most first; ties by id so every process ranks alike."""
    counts = events["item_id"].astype(str).value_counts(sort=False) if len(events) else pd.Series(dtype=np.int64)
    table = pd.DataFrame({"item_id": counts.index.astype(str), "n": counts.to_numpy(np.float64)})
    return table.sort_values(["n", "item_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
