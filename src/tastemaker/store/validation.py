"""Record validation for the store: one pass over a batch, every problem named by index and field.

Validation is separate from writing so strict and lenient modes share it: strict rejects the batch when
any record has an error, lenient writes the clean records and reports the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from tastemaker.clock import US_PER_SECOND, from_us, to_us
from tastemaker.config import ConfigModel
from tastemaker.errors import RecordError
from tastemaker.store.schema import ID_LENGTH

__all__ = ["DEFAULT_EVENT_TYPES", "ValidationConfig", "validate_events", "validate_items", "validate_users"]

DEFAULT_EVENT_TYPES = (
    "view", "click", "play", "complete", "like", "dislike", "rating", "purchase", "skip",
)  # fmt: skip

EVENT_FIELDS = frozenset({"event_id", "user_id", "item_id", "type", "value", "timestamp", "context", "request_id"})
ITEM_FIELDS = frozenset({"item_id", "title", "text", "categories", "provider", "created_at", "available", "attributes"})
USER_FIELDS = frozenset({"user_id", "created_at", "attributes"})


class ValidationConfig(ConfigModel):
    """What the store accepts. Lengths are in characters, JSON sizes in bytes of compact JSON."""

    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    value_required_for: tuple[str, ...] = ("rating",)
    max_future_skew_seconds: float = Field(300.0, ge=0)
    max_id_length: int = Field(ID_LENGTH, ge=1, le=ID_LENGTH)
    max_title_length: int = Field(1_000, ge=1)
    max_text_length: int = Field(20_000, ge=1)
    max_categories: int = Field(32, ge=0)
    max_category_length: int = Field(128, ge=1)
    max_json_bytes: int = Field(16_384, ge=2)


class _Bad(Exception):
    """A field's reason for rejection, raised inside a checker and caught per field."""


Row = dict[str, Any]


def validate_events(
    records: Sequence[Mapping[str, Any]], config: ValidationConfig, now_us: int
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Check events; return ``(index, row)`` pairs ready to insert, and the errors."""
    types = frozenset(config.event_types)
    needs_value = frozenset(config.value_required_for)
    latest = now_us + round(config.max_future_skew_seconds * US_PER_SECOND)

    def check_time(v: Any) -> int:
        if v is None:
            return now_us
        ts = _instant(v)
        if ts > latest:
            raise _Bad(
                f"timestamp {from_us(ts).isoformat()} is more than {config.max_future_skew_seconds:g} s "
                f"in the future (now {from_us(now_us).isoformat()})"
            )
        return ts

    def check_type(v: Any) -> str:
        v = _string(v, 64, required=True)
        if v not in types:
            raise _Bad(f"unknown event type {v!r}; known: {', '.join(sorted(types))}")
        return v

    checks: dict[str, Callable[[Any], Any]] = {
        "event_id": lambda v: _string(v, config.max_id_length, required=False),
        "user_id": lambda v: _string(v, config.max_id_length, required=True),
        "item_id": lambda v: _string(v, config.max_id_length, required=True),
        "type": check_type,
        "value": _number,
        "timestamp": check_time,
        "context": lambda v: _json_object(v, config.max_json_bytes),
        "request_id": lambda v: _string(v, config.max_id_length, required=False),
    }
    good: list[tuple[int, Row]] = []
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        row = _fast_event(record, types, config, now_us, latest)
        if row is None:
            row = _check_record(index, record, EVENT_FIELDS, checks, errors, partial=False)
            if row is None:
                continue
        if row["type"] in needs_value and row["value"] is None:
            errors.append(RecordError(index, "value", f"a {row['type']!r} event needs a numeric value"))
            continue
        row["timestamp_us"] = row.pop("timestamp")
        if row["event_id"] is None:
            row["event_id"] = content_event_id(row)
        good.append((index, row))
    return good, errors


def validate_items(
    records: Sequence[Mapping[str, Any]], config: ValidationConfig
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Check item upserts. Only the fields a record carries are returned (absent ones are kept)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "item_id": lambda v: _string(v, config.max_id_length, required=True),
        "title": lambda v: _string(v, config.max_title_length, required=False),
        "text": lambda v: _string(v, config.max_text_length, required=False),
        "categories": lambda v: _categories(v, config),
        "provider": lambda v: _string(v, config.max_id_length, required=False),
        "created_at": lambda v: None if v is None else _instant(v),
        "available": _boolean,
        "attributes": lambda v: _json_object(v, config.max_json_bytes) or {},
    }
    rows, errors = _validate(records, ITEM_FIELDS, checks, partial=True, required=("item_id",))
    for _, row in rows:
        if "created_at" in row:
            row["created_at_us"] = row.pop("created_at")
    return rows, errors


def validate_users(
    records: Sequence[Mapping[str, Any]], config: ValidationConfig
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Check user upserts. Only the fields a record carries are returned (absent ones are kept)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "user_id": lambda v: _string(v, config.max_id_length, required=True),
        "created_at": lambda v: None if v is None else _instant(v),
        "attributes": lambda v: _json_object(v, config.max_json_bytes) or {},
    }
    rows, errors = _validate(records, USER_FIELDS, checks, partial=True, required=("user_id",))
    for _, row in rows:
        if "created_at" in row:
            row["created_at_us"] = row.pop("created_at")
    return rows, errors


def content_event_id(row: Mapping[str, Any]) -> str:
    """A deterministic id for an event sent without one: the same event sent twice is stored once."""
    key = "\x1f".join(
        str(row[k]) for k in ("user_id", "item_id", "type", "value", "timestamp_us", "request_id")
    )
    return "h-" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def _validate(
    records: Sequence[Mapping[str, Any]],
    known: frozenset[str],
    checks: Mapping[str, Callable[[Any], Any]],
    *,
    partial: bool,
    required: tuple[str, ...] = (),
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    rows: list[tuple[int, Row]] = []
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        row = _check_record(index, record, known, checks, errors, partial=partial, required=required)
        if row is not None:
            rows.append((index, row))
    return rows, errors


def _check_record(
    index: int,
    record: Any,
    known: frozenset[str],
    checks: Mapping[str, Callable[[Any], Any]],
    errors: list[RecordError],
    *,
    partial: bool,
    required: tuple[str, ...] = (),
) -> Row | None:
    """Run each field's checker, appending every problem to ``errors``. ``partial`` (upserts) checks
    only the fields a record carries; otherwise (events) an absent field is checked as None."""
    if not isinstance(record, Mapping):
        errors.append(RecordError(index, "(record)", f"expected an object, got {type(record).__name__}"))
        return None
    row: Row = {}
    ok = True
    for name in sorted(map(str, set(record) - known)):
        errors.append(RecordError(index, name, f"unknown field; known: {', '.join(sorted(known))}"))
        ok = False
    for name in required:
        if name not in record:
            errors.append(RecordError(index, name, "is required"))
            ok = False
    for name, check in checks.items():
        if partial and name not in record:
            continue
        try:
            row[name] = check(record.get(name))
        except _Bad as bad:
            errors.append(RecordError(index, name, str(bad)))
            ok = False
    return row if ok else None


def _fast_event(
    record: Any, types: frozenset[str], config: ValidationConfig, now_us: int, latest_us: int
) -> Row | None:
    """The common, well-formed event checked inline (ingestion's hot path). None means "not sure":
    the record then goes through the full checker, which names every problem."""
    if type(record) is not dict or not record.keys() <= EVENT_FIELDS:
        return None
    get = record.get
    user, item, kind = get("user_id"), get("item_id"), get("type")
    max_id = config.max_id_length
    if type(user) is not str or type(item) is not str or type(kind) is not str or kind not in types:
        return None
    if not (0 < len(user) <= max_id and 0 < len(item) <= max_id) or user.isspace() or item.isspace():
        return None
    event_id, request_id = get("event_id"), get("request_id")
    for text in (event_id, request_id):
        if text is not None and (type(text) is not str or len(text) > max_id):
            return None
    value = get("value")
    if value is not None:
        if type(value) not in (float, int) or not math.isfinite(value):
            return None
        value = float(value)
    stamp = get("timestamp")
    try:
        timestamp_us = now_us if stamp is None else to_us(stamp)
    except (ValueError, OverflowError):
        return None
    context = get("context")
    if timestamp_us > latest_us or (context is not None and not (type(context) is dict and _small_flat(context, config.max_json_bytes))):
        return None
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": kind, "value": value,
            "timestamp": timestamp_us, "context": context, "request_id": request_id}  # fmt: skip


def _string(v: Any, max_length: int, *, required: bool) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        if required:
            raise _Bad("is required")
        return None
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        v = str(v)  # numeric ids from CSV files are ids all the same
    if not isinstance(v, str):
        raise _Bad(f"must be a string, got {type(v).__name__}")
    if required and not v.strip():
        raise _Bad("must not be empty")
    if len(v) > max_length:
        raise _Bad(f"is {len(v)} characters long; at most {max_length} allowed")
    return v


def _number(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise _Bad(f"must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise _Bad(f"must be a finite number, got {v!r}")
    return v


def _boolean(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    raise _Bad(f"must be true or false, got {v!r}")


def _instant(v: Any) -> int:
    try:
        return to_us(v)
    except (ValueError, OverflowError) as exc:
        raise _Bad(str(exc)) from None


def _categories(v: Any, config: ValidationConfig) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str) or not isinstance(v, Sequence | np.ndarray):
        raise _Bad(f"must be a list of strings, got {type(v).__name__}")
    if len(v) > config.max_categories:
        raise _Bad(f"has {len(v)} categories; at most {config.max_categories} allowed")
    out = []
    for c in v:
        if not isinstance(c, str) or not c:
            raise _Bad(f"must be a list of non-empty strings, got element {c!r}")
        if len(c) > config.max_category_length:
            raise _Bad(f"category {c[:40]!r}... is longer than {config.max_category_length} characters")
        out.append(c)
    return list(dict.fromkeys(out))


_SCALARS = (str, int, float, bool, type(None))


def _json_object(v: Any, max_bytes: int) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise _Bad(f"must be an object, got {type(v).__name__}")
    if _small_flat(v, max_bytes):
        return dict(v)
    try:
        encoded = json.dumps(v, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Bad(f"is not JSON-serialisable: {exc}") from None
    if len(encoded.encode()) > max_bytes:
        raise _Bad(f"is {len(encoded.encode())} bytes as JSON; at most {max_bytes} allowed")
    return dict(v)


def _small_flat(v: Mapping[str, Any], max_bytes: int) -> bool:
    """True when ``v`` is surely valid without encoding it: string keys, finite scalar values, and an
    upper bound on its JSON size (12 bytes per character covers any escape) within ``max_bytes``."""
    bound = 2
    for key, value in v.items():
        if type(key) is not str or type(value) not in _SCALARS:
            return False
        if type(value) is float and not math.isfinite(value):
            return False
        bound += 12 * (len(key) + len(str(value))) + 6
    return bound <= max_bytes
