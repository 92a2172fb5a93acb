"""The store contract. Every back end passes the same suite (``tests/integration/test_store_contract.py``).

Writes are batch-first. Each write call is one transaction. Two modes:

* ``strict`` — any invalid record rejects the whole batch with :class:`~tastemaker.errors.InvalidBatchError`
  and nothing of it is written;
* ``lenient`` — valid records are written, each invalid one is reported in the result.

Either way each error names the record's index in the batch, the field and the reason. Events are
idempotent by ``event_id``: a repeated id (in the store or earlier in the same batch) is stored once and
reported as a duplicate. An event sent without an id gets a deterministic one derived from its content.
A call returns only after its transaction is committed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tastemaker.clock import Clock
from tastemaker.errors import RecordError
from tastemaker.store.validation import ValidationConfig

__all__ = [
    "ATTRIBUTION_SKEW_US",
    "EVENT_COLUMNS",
    "ExposedItem",
    "Exposure",
    "IngestResult",
    "Mode",
    "Store",
    "UpsertResult",
    "UserEvents",
]

Mode = Literal["strict", "lenient"]
Records = Iterable[Mapping[str, Any]]

#: Columns of :meth:`Store.events_frame` unless others are asked for.
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "type", "value", "timestamp_us")
#: how far before its exposure an attributed event's time (the client's clock) may put it
ATTRIBUTION_SKEW_US = 300_000_000


@dataclass
class IngestResult:
    """Outcome of one event batch. ``event_ids[i]`` is record i's id, or None if it was rejected."""

    accepted: int
    duplicate_ids: list[str] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_ids)

    @property
    def rejected(self) -> int:
        return len({e.index for e in self.errors})


@dataclass
class UpsertResult:
    """Outcome of one item or user batch: valid records (now stored as sent) and the errors."""

    accepted: int
    errors: list[RecordError] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len({e.index for e in self.errors})


@dataclass(frozen=True)
class ExposedItem:
    """One item as shown: its place in the list (and slate, for pages of rows) and how it got there."""

    position: int
    item_id: str
    score: float | None = None
    source: str | None = None
    propensity: float | None = None
    slate: str = ""


@dataclass(frozen=True)
class Exposure:
    """One served response. Events that carry ``request_id`` are attributed to it."""

    request_id: str
    user_id: str
    variant: str
    timestamp_us: int
    items: Sequence[ExposedItem]
    model_version: str | None = None
    config_hash: str | None = None
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class UserEvents:
    """One user's events as parallel arrays, ordered by time then id: the request path reads these per
    request, so no frame is built (``frame()`` makes one when needed)."""

    event_id: np.ndarray  # object (str)
    item_id: np.ndarray  # object (str)
    type: np.ndarray  # object (str)
    value: np.ndarray  # float64, NaN where the event has none
    timestamp_us: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[Any, ...]]) -> UserEvents:
        """From ``(event_id, item_id, type, value, timestamp_us)`` tuples, in order."""
        ids, items, types, values, times = zip(*rows, strict=True) if rows else ((), (), (), (), ())
        return cls(
            np.array(ids, dtype=object), np.array(items, dtype=object), np.array(types, dtype=object),
            np.array([np.nan if v is None else v for v in values], dtype=np.float64), np.array(times, dtype=np.int64),
        )  # fmt: skip

    def take(self, rows: np.ndarray) -> UserEvents:
        """The events at ``rows`` (positions or a mask), in their order."""
        return UserEvents(self.event_id[rows], self.item_id[rows], self.type[rows], self.value[rows],
                          self.timestamp_us[rows])  # fmt: skip

    def frame(self, user_id: str) -> pd.DataFrame:
        """As :meth:`Store.events_frame` would return them (its default columns)."""
        return pd.DataFrame({"event_id": self.event_id, "user_id": np.full(len(self), user_id, dtype=object),
                             "item_id": self.item_id, "type": self.type, "value": self.value,
                             "timestamp_us": self.timestamp_us})  # fmt: skip


EMPTY_EVENTS = UserEvents.of_rows([])


class Store(ABC):
    """Items, users, events and exposures behind one interface; the back end is chosen by URL."""

    clock: Clock
    validation: ValidationConfig

    @abstractmethod
    def ingest_events(self, records: Records, *, mode: Mode = "strict") -> IngestResult:
        """Validate and store a batch of events (see the module docstring for modes and ids)."""

    @abstractmethod
    def upsert_items(self, records: Records, *, mode: Mode = "strict") -> UpsertResult:
        """Insert or update items. Fields a record omits keep their stored values (or defaults); a row
        whose sent fields equal the stored ones is left untouched (``updated_at_us`` too)."""

    @abstractmethod
    def upsert_users(self, records: Records, *, mode: Mode = "strict") -> UpsertResult:
        """Insert or update users. Fields a record omits keep their stored values (or defaults)."""

    @abstractmethod
    def get_items(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored items among ``item_ids``, in the order asked; unknown ids are left out."""

    @abstractmethod
    def get_users(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored users among ``user_ids``, in the order asked; unknown ids are left out."""

    @abstractmethod
    def record_exposures(self, exposures: Sequence[Exposure]) -> int:
        """Store served responses with their items; a repeated request id is stored once. Returns new ones."""

    @abstractmethod
    def events_frame(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        columns: Sequence[str] = EVENT_COLUMNS,
        user_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Events with ``since_us <= timestamp_us < until_us`` (of ``user_ids`` only, when given), ordered by
        time then id."""

    @abstractmethod
    def user_events(self, user_ids: Sequence[str], *, until_us: int | None = None) -> dict[str, UserEvents]:
        """Each of ``user_ids``' events with ``timestamp_us < until_us``, ordered by time then id; users without
        any are left out. The request path's read: back ends answer it without building a frame."""

    @abstractmethod
    def items_frame(self, *, updated_since_us: int | None = None) -> pd.DataFrame:
        """Every item, one row each (only those with ``updated_at_us >= updated_since_us``, when given)."""

    @abstractmethod
    def count_items(self, *, updated_since_us: int | None = None) -> int:
        """How many items there are (only those with ``updated_at_us >= updated_since_us``, when given): a
        cheap check before reading what changed."""

    @abstractmethod
    def item_counts(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        ingested_since_us: int | None = None,
        ingested_until_us: int | None = None,
    ) -> pd.DataFrame:
        """Events per item (``item_id``, ``events``) with ``since_us <= timestamp_us < until_us`` and
        ``ingested_since_us <= ingested_at_us < ingested_until_us`` (each bound when given), counted by the
        database: cheap for a time range alone, or for what was ingested since a recent instant."""

    @abstractmethod
    def users_frame(self) -> pd.DataFrame:
        """Every user, one row each."""

    @abstractmethod
    def exposures_frame(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        engagement_types: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """One row per exposed item, with its exposure's columns, for exposures in the time range, and
        ``engaged_us``: the time of the first event that carries the exposure's request id on that item (of
        ``engagement_types`` only, when given), NaN when none did (the exposure's attribution)."""

    @abstractmethod
    def shown_items(self, *, since_us: int, until_us: int, variant: str | None = None) -> pd.DataFrame:
        """One row per exposed item (``request_id``, ``user_id``, ``item_id``, ``timestamp_us``) of the
        exposures with ``since_us <= timestamp_us < until_us`` (of ``variant`` only, when given), ordered by
        time, request id, slate and position: the serving exposure log's read, without scores, context or
        attribution (:meth:`exposures_frame` has them)."""

    @abstractmethod
    def engagements(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        types: Sequence[str] | None = None,
        ingested_since_us: int | None = None,
    ) -> pd.DataFrame:
        """Per (``request_id``, ``item_id``) of the events that carry a request id, with ``since_us <=
        timestamp_us < until_us`` (each bound when given; of ``types`` only, and ingested at or after
        ``ingested_since_us`` only, when given): the first one's time, ``engaged_us``."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Row counts of items, users, events and exposures."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~tastemaker.errors.StoreError` unless the store answers (a cheap round trip)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
