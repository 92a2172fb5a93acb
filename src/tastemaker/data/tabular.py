"""Generic event files: CSV or Parquet, with a mapping from tastemaker's event fields to the file's columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tastemaker.data.dataset import Dataset
from tastemaker.errors import DataFormatError

__all__ = ["TimeUnit", "read_events_table"]

TimeUnit = Literal["s", "ms", "us", "iso"]
MAPPABLE = ("event_id", "user_id", "item_id", "type", "value", "timestamp")
_FACTORS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def read_events_table(
    path: str | Path,
    mapping: Mapping[str, str] | None = None,
    *,
    event_type: str | None = None,
    time_unit: TimeUnit = "s",
) -> Dataset:
    """Read events from ``path`` (``.csv``, ``.parquet``).

    ``mapping`` maps event fields (``user_id``, ``item_id``, ``timestamp``, optional ``event_id``,
    ``type``, ``value``) to column names; unmapped fields are looked up under their own name.
    ``event_type`` is used when the file has no type column. Numeric timestamps are read in
    ``time_unit``; ``iso`` parses text. Rows without an ``event_id`` get a content-derived id at ingest.
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPABLE))
    if unknown:
        raise DataFormatError(f"cannot map {unknown}; mappable fields: {', '.join(MAPPABLE)}")
    if time_unit not in (*_FACTORS, "iso"):
        raise DataFormatError(f"unknown time unit {time_unit!r}; known: iso, ms, s, us")
    columns = {f: mapping.get(f, f) for f in MAPPABLE}
    # Ids and types are text: "007" must not become 7, nor 1e3 a float.
    frame = _read(Path(path), text_columns=[columns[f] for f in ("event_id", "user_id", "item_id", "type")])
    for needed in ("user_id", "item_id", "timestamp"):
        if columns[needed] not in frame.columns:
            raise DataFormatError(
                f"{Path(path).name}: no column {columns[needed]!r} for {needed}; "
                f"map it with {needed}=COLUMN (columns: {', '.join(map(str, frame.columns))})"
            )
    if columns["type"] not in frame.columns and event_type is None:
        raise DataFormatError(f"{Path(path).name}: no type column {columns['type']!r}; map one or give event_type")

    def col(field: str) -> pd.Series | None:
        return frame[columns[field]] if columns[field] in frame.columns else None

    n = len(frame)
    event_id, kind, value = col("event_id"), col("type"), col("value")
    events = pd.DataFrame({
        "event_id": _text(event_id) if event_id is not None else [None] * n,
        "user_id": _text(frame[columns["user_id"]]),  # blanks stay missing: the store names them
        "item_id": _text(frame[columns["item_id"]]),
        "type": _text(kind) if kind is not None else event_type,
        "value": _values(value, Path(path).name) if value is not None else np.nan,
        "timestamp_us": _timestamps(frame[columns["timestamp"]], time_unit, Path(path).name),
    })  # fmt: skip
    return Dataset(name=f"events:{Path(path).name}", events=events)


def _text(column: pd.Series) -> np.ndarray:
    """Cells as strings (numeric ids included), missing cells as None."""
    return np.array([None if pd.isna(v) else str(v) for v in column], dtype=object)


def _values(raw: pd.Series, name: str) -> np.ndarray:
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = (numbers.isna() & raw.notna()).to_numpy()
    if bad.any():
        rows = ", ".join(f"row {r + 1} ({raw.iloc[r]!r})" for r in np.flatnonzero(bad)[:3])
        raise DataFormatError(f"{name}: {int(bad.sum())} values are not numbers: {rows}")
    return numbers.to_numpy(dtype=float, na_value=np.nan)


def _read(path: Path, text_columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataFormatError(f"no such file: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(
            path, sep="\t" if suffix == ".tsv" else ",", dtype=dict.fromkeys(text_columns, str),
            dtype_backend="numpy_nullable",
        )  # fmt: skip
    raise DataFormatError(f"{path.name}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")


def _timestamps(raw: pd.Series, unit: TimeUnit, name: str) -> pd.Series:
    """Numbers in ``unit``, or ISO-8601 text. With a numeric unit, a column where some cells are numbers is
    numeric and the other cells are errors; a column with no number at all is read as ISO text."""
    if pd.api.types.is_datetime64_any_dtype(raw):  # Parquet timestamps: naive means UTC
        stamps = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        _raise_if_bad(raw, stamps.isna().to_numpy(), "datetime", name)
        return stamps.astype("datetime64[us, UTC]").astype("int64").reset_index(drop=True)
    numbers = pd.to_numeric(raw, errors="coerce").astype(float) if unit != "iso" else None
    if numbers is not None and numbers.notna().any():
        _raise_if_bad(raw, numbers.isna().to_numpy(), unit, name)
        return (numbers * _FACTORS[unit]).round().astype(np.int64).reset_index(drop=True)
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    _raise_if_bad(raw, parsed.isna().to_numpy(), "iso", name)
    return parsed.astype("datetime64[us, UTC]").astype("int64").reset_index(drop=True)


def _raise_if_bad(raw: pd.Series, bad: np.ndarray, unit: str, name: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)[:3]
        shown = ", ".join(f"row {r + 1} ({raw.iloc[r]!r})" for r in rows)
        raise DataFormatError(f"{name}: {int(bad.sum())} timestamps could not be read as {unit!r}: {shown}")
