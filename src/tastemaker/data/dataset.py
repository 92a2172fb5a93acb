"""An in-memory dataset: the three frames every reader produces and every importer consumes.

Column contract (instants are epoch microseconds, UTC):

* ``events``: event_id, user_id, item_id, type, value (NaN if none), timestamp_us, and optionally context
* ``items``: item_id, title, text, categories (list), provider, created_at_us (nullable), available,
  attributes (dict)
* ``users``: user_id, created_at_us (nullable), attributes (dict)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tastemaker.errors import DataFormatError

__all__ = ["EVENT_FIELDS", "ITEM_FIELDS", "USER_FIELDS", "Dataset", "frame_records"]

EVENT_FIELDS = ("event_id", "user_id", "item_id", "type", "value", "timestamp_us")
ITEM_FIELDS = (
    "item_id",
    "title",
    "text",
    "categories",
    "provider",
    "created_at_us",
    "available",
    "attributes",
)
USER_FIELDS = ("user_id", "created_at_us", "attributes")


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


@dataclass(frozen=True)
class Dataset:
    """Events with the catalog and users they refer to, under a name used in reports."""

    name: str
    events: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: _empty(ITEM_FIELDS))
    users: pd.DataFrame = field(default_factory=lambda: _empty(USER_FIELDS))

    def __post_init__(self) -> None:
        for label, frame, needed in (
            ("events", self.events, EVENT_FIELDS),
            ("items", self.items, ("item_id",)),
            ("users", self.users, ("user_id",)),
        ):
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                raise DataFormatError(f"dataset {self.name!r}: {label} lack columns {missing}")


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as store records: ``*_us`` columns become aware datetimes under the name without the
    suffix, NaN becomes None, numpy scalars become Python ones."""
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        col = frame[name]
        if name.endswith("_us"):
            stamps = pd.to_datetime(col.astype("Int64"), unit="us", utc=True)
            out[name[:-3]] = np.array([None if pd.isna(s) else s.to_pydatetime() for s in stamps], dtype=object)
        elif pd.api.types.is_float_dtype(col):
            values = col.to_numpy(dtype=float)
            out[name] = np.where(np.isnan(values), None, values).astype(object)
        else:
            out[name] = col.astype(object).where(col.notna(), None)
    return out.to_dict("records")
