"""Bulk import of a :class:`Dataset` into a store, in batches, idempotent by event id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from tastemaker.data.dataset import Dataset, frame_records
from tastemaker.errors import InvalidBatchError, RecordError
from tastemaker.store.base import Mode, Store

__all__ = ["ImportReport", "Progress", "import_dataset"]

#: Called as ``progress(stage, rows_done, rows_total)`` after every batch.
Progress = Callable[[str, int, int], None]


@dataclass
class ImportReport:
    items: int = 0
    users: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    errors: list[RecordError] = field(default_factory=list)

    @property
    def events_rejected(self) -> int:
        return len({e.index for e in self.errors})


def import_dataset(
    store: Store,
    dataset: Dataset,
    *,
    batch_size: int = 5_000,
    mode: Mode = "strict",
    progress: Progress | None = None,
) -> ImportReport:
    """Write items, users, then events of ``dataset`` to ``store`` in batches of ``batch_size``.

    Each batch is one transaction. In strict mode the first bad batch raises
    :class:`InvalidBatchError` with record indices counted from the start of the dataset's frame and the
    number of rows stored by earlier batches; re-running the import after a fix stores only what is missing.
    Error indices in the report are positions in ``dataset.events`` (or items/users).
    """
    report = ImportReport()
    stored = 0
    for stage, frame, write in (
        ("items", dataset.items, store.upsert_items),
        ("users", dataset.users, store.upsert_users),
        ("events", dataset.events, store.ingest_events),
    ):
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size]
            try:
                result = write(frame_records(_drop_empty(chunk)), mode=mode)
            except InvalidBatchError as exc:
                raise InvalidBatchError([_shift(e, start) for e in exc.errors], stored_before=stored) from None
            stored += len(chunk)
            report.errors.extend(_shift(e, start) for e in result.errors)
            if stage == "events":
                report.events_accepted += result.accepted
                report.events_duplicate += result.duplicates
            else:
                setattr(report, stage, getattr(report, stage) + result.accepted)
            if progress:
                progress(stage, min(start + batch_size, len(frame)), len(frame))
    return report


def _drop_empty(chunk: pd.DataFrame) -> pd.DataFrame:
    # Optional columns a reader filled with nothing are left out, so upserts keep stored values.
    empty = [c for c in chunk.columns if c not in ("item_id", "user_id") and chunk[c].isna().all()
             and c in ("title", "text", "provider", "created_at_us")]  # fmt: skip
    return chunk.drop(columns=empty)


def _shift(error: RecordError, offset: int) -> RecordError:
    return RecordError(error.index + offset, error.field, error.reason)
