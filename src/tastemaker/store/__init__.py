"""Storage of items, users, events and exposures, behind one interface chosen by URL."""

from __future__ import annotations

from tastemaker.clock import Clock, SystemClock
from tastemaker.store.base import (
    EVENT_COLUMNS,
    ExposedItem,
    Exposure,
    IngestResult,
    Mode,
    Store,
    UpsertResult,
    UserEvents,
)
from tastemaker.store.engine import DEFAULT_URL, make_engine, migrate
from tastemaker.store.sql import SqlStore
from tastemaker.store.validation import DEFAULT_EVENT_TYPES, ValidationConfig

__all__ = [
    "DEFAULT_EVENT_TYPES",
    "DEFAULT_URL",
    "EVENT_COLUMNS",
    "ExposedItem",
    "Exposure",
    "IngestResult",
    "Mode",
    "Store",
    "UpsertResult",
    "UserEvents",
    "ValidationConfig",
    "open_store",
]


def open_store(
    url: str = DEFAULT_URL,
    *,
    clock: Clock | None = None,
    validation: ValidationConfig | None = None,
    migrate_schema: bool = True,
) -> Store:
    """Open the store at ``url`` (``sqlite:///path`` or ``postgresql://...``), migrating it to the
    current schema unless ``migrate_schema`` is False."""
    engine = make_engine(url)
    if migrate_schema:
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
    return SqlStore(engine, clock or SystemClock(), validation or ValidationConfig())
