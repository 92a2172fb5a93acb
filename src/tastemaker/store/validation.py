"""Record validation for the store: one pass over a batch, every problem named by index and field.

Validation is separate from writing so strict and lenient modes share it: strict rejects the batch when
any record has an error, lenient writes the clean records and reports the rest. Everything accepted here
is storable by every back end (PostgreSQL refuses NUL characters and invalid UTF-8 that SQLite would
take), so a lenient batch never fails as a whole because of one record.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from pydantic import Field, field_validator

from tastemaker.clock import US_PER_SECOND, from_us, to_us
from tastemaker.config import ConfigModel
from tastemaker.errors import RecordError
from tastemaker.store.schema import ID_LENGTH, TYPE_LENGTH

__all__ = [
    "DEFAULT_EVENT_TYPES",
    "ValidationConfig",
    "content_event_id",
    "validate_events",
    "validate_exposures",
    "validate_items",
    "validate_users",
]

DEFAULT_EVENT_TYPES = (
    "view", "click", "play", "complete", "like", "dislike", "rating", "purchase", "skip",
)  # fmt: skip

EVENT_FIELDS = frozenset({"event_id", "user_id", "item_id", "type", "value", "timestamp", "context", "request_id"})
ITEM_FIELDS = frozenset({"item_id", "title", "text", "categories", "provider", "created_at", "available", "attributes"})
USER_FIELDS = frozenset({"user_id", "created_at", "attributes"})
_TEN_YEARS = 10 * 366 * 86_400


class ValidationConfig(ConfigModel):
    """What the store accepts. Lengths are in characters, JSON sizes in bytes of compact JSON."""

    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    value_required_for: tuple[str, ...] = ("rating",)
    max_future_skew_seconds: float = Field(300.0, ge=0, le=_TEN_YEARS, allow_inf_nan=False)
    max_id_length: int = Field(ID_LENGTH, ge=1, le=ID_LENGTH)
    max_title_length: int = Field(1_000, ge=1)
    max_text_length: int = Field(20_000, ge=1)
    max_categories: int = Field(32, ge=0)
    max_category_length: int = Field(128, ge=1)
    max_json_bytes: int = Field(16_384, ge=2)

    @field_validator("event_types")
    @classmethod
    def _storable_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        if not types:
            raise ValueError("at least one event type is needed")
        for name in types:
            if not name.strip() or len(name) > TYPE_LENGTH or not name.isprintable():
                raise ValueError(f"event type {name!r} must be 1-{TYPE_LENGTH} printable characters")
        return types


class _Bad(Exception):
    """A field's reason for rejection, raised inside a checker and caught per field."""


Row = dict[str, Any]


def validate_events(
    records: Sequence[Mapping[str, Any]], config: ValidationConfig, now_us: int
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Check events; return ``(index, row)`` pairs ready to insert (``context`` as JSON text), and the errors."""
    types = frozenset(config.event_types)
    needs_value = frozenset(config.value_required_for)
    latest = now_us + round(config.max_future_skew_seconds * US_PER_SECOND)
    checks = _event_checks(config, now_us, latest)
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
        "title": lambda v: _string(v, config.max_title_length, required=False, blank_ok=True),
        "text": lambda v: _string(v, config.max_text_length, required=False, blank_ok=True),
        "categories": lambda v: _categories(v, config),
        "provider": lambda v: _string(v, config.max_id_length, required=False),
        "created_at": lambda v: None if v is None else _instant(v),
        "available": _boolean,
        "attributes": lambda v: _json_object(v, config.max_json_bytes),
    }
    return _with_created_us(*_validate(records, ITEM_FIELDS, checks, partial=True, required=("item_id",)))


def validate_users(
    records: Sequence[Mapping[str, Any]], config: ValidationConfig
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Check user upserts. Only the fields a record carries are returned (absent ones are kept)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "user_id": lambda v: _string(v, config.max_id_length, required=True),
        "created_at": lambda v: None if v is None else _instant(v),
        "attributes": lambda v: _json_object(v, config.max_json_bytes),
    }
    return _with_created_us(*_validate(records, USER_FIELDS, checks, partial=True, required=("user_id",)))


def validate_exposures(exposures: Sequence[Any], config: ValidationConfig) -> list[RecordError]:
    """Check served responses (``store.base.Exposure``) so every back end can store them alike."""
    errors: list[RecordError] = []

    def check(index: int, field: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except _Bad as bad:
            errors.append(RecordError(index, field, str(bad)))

    ids, short = config.max_id_length, TYPE_LENGTH
    for i, e in enumerate(exposures):
        check(i, "request_id", _string, e.request_id, ids, required=True)
        check(i, "user_id", _string, e.user_id, ids, required=True)
        check(i, "variant", _string, e.variant, short, required=True)
        check(i, "model_version", _string, e.model_version, 2 * short, required=False)
        check(i, "config_hash", _string, e.config_hash, short, required=False)
        check(i, "timestamp_us", _bounded_int, e.timestamp_us, -(2**62), 2**62)
        check(i, "context", _json_text, e.context, config.max_json_bytes)
        for j, item in enumerate(e.items):
            check(i, f"items[{j}].item_id", _string, item.item_id, ids, required=True)
            check(i, f"items[{j}].slate", _string, item.slate, 2 * short, required=False, blank_ok=True)
            check(i, f"items[{j}].source", _string, item.source, short, required=False)
            check(i, f"items[{j}].position", _bounded_int, item.position, 0, 2**31 - 1)
            check(i, f"items[{j}].score", _number, item.score)
            check(i, f"items[{j}].propensity", _probability, item.propensity)
    return errors


def _with_created_us(
    rows: list[tuple[int, Row]], errors: list[RecordError]
) -> tuple[list[tuple[int, Row]], list[RecordError]]:
    """Upserts take ``created_at`` in any instant form; the table column is ``created_at_us``."""
    for _, row in rows:
        if "created_at" in row:
            row["created_at_us"] = row.pop("created_at")
    return rows, errors


def content_event_id(row: Mapping[str, Any]) -> str:
    """A deterministic id for an event sent without one, so the same event sent twice is stored once.

    It covers user, item, type, value, timestamp and request id; an event without a timestamp is stamped
    with the store's "now", so only events that carry their own timestamp (or id) are safe to resend.
    """
    key = orjson.dumps([row[k] for k in ("user_id", "item_id", "type", "value", "timestamp_us", "request_id")])
    return "h-" + hashlib.blake2b(key, digest_size=12).hexdigest()


def _event_checks(config: ValidationConfig, now_us: int, latest_us: int) -> dict[str, Callable[[Any], Any]]:
    """One checker per event field; each returns the clean value or raises ``_Bad`` with the reason."""
    types = frozenset(config.event_types)

    def check_time(v: Any) -> int:
        if v is None:
            return now_us
        ts = _instant(v)
        if ts > latest_us:
            raise _Bad(
                f"timestamp {from_us(ts).isoformat()} is more than {config.max_future_skew_seconds:g} s "
                f"in the future (now {from_us(now_us).isoformat()})"
            )
        return ts

    def check_type(v: Any) -> str:
        v = _string(v, TYPE_LENGTH, required=True)
        if v not in types:
            raise _Bad(f"unknown event type {v!r}; known: {', '.join(sorted(types))}")
        return v

    return {
        "event_id": lambda v: _string(v, config.max_id_length, required=False),
        "user_id": lambda v: _string(v, config.max_id_length, required=True),
        "item_id": lambda v: _string(v, config.max_id_length, required=True),
        "type": check_type,
        "value": _number,
        "timestamp": check_time,
        "context": lambda v: _json_text(v, config.max_json_bytes),
        "request_id": lambda v: _string(v, config.max_id_length, required=False),
    }


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
    for name in sorted(set(record) - known, key=str):
        errors.append(RecordError(index, str(name), f"unknown field; known: {', '.join(sorted(known))}"))
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
    the record then goes through the full checker, which names every problem. Anything this accepts,
    the full checker accepts with the same result (a hypothesis test holds it to that)."""
    if type(record) is not dict or not record.keys() <= EVENT_FIELDS:
        return None
    get = record.get
    user, item, kind = get("user_id"), get("item_id"), get("type")
    max_id = config.max_id_length
    if type(kind) is not str or kind not in types or not (_plain(user, max_id) and _plain(item, max_id)):
        return None
    event_id, request_id = get("event_id"), get("request_id")
    if not ((event_id is None or _plain(event_id, max_id)) and (request_id is None or _plain(request_id, max_id))):
        return None
    value = get("value")
    try:
        if value is not None:
            if type(value) not in (float, int):
                return None
            value = float(value)
            if not math.isfinite(value):
                return None
        stamp = get("timestamp")
        timestamp_us = now_us if stamp is None else to_us(stamp)
        context = get("context")
        context_json = None if context is None else _json_text(context, config.max_json_bytes)
    except (ValueError, OverflowError, _Bad):
        return None
    if timestamp_us > latest_us:
        return None
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": kind, "value": value,
            "timestamp": timestamp_us, "context": context_json, "request_id": request_id}  # fmt: skip


def _plain(s: Any, max_length: int) -> bool:
    """A string no check could object to: ASCII, printable, not blank, not too long."""
    return type(s) is str and 0 < len(s) <= max_length and s.isascii() and s.isprintable() and not s.isspace()


def _string(v: Any, max_length: int, *, required: bool, blank_ok: bool = False) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        if required:
            raise _Bad("is required")
        return None
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        try:
            v = str(v)  # numeric ids from CSV files are ids all the same
        except ValueError:
            raise _Bad("is an integer too long to be an id") from None
    if not isinstance(v, str):
        raise _Bad(f"must be a string, got {type(v).__name__}")
    if not blank_ok and not v.strip():
        raise _Bad("must not be empty" if required else "must not be empty; leave the field out instead")
    if len(v) > max_length:
        raise _Bad(f"is {len(v)} characters long; at most {max_length} allowed")
    _storable_text(v)
    return v


def _storable_text(v: str) -> None:
    if "\x00" in v:
        raise _Bad("contains a NUL character")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("is not valid UTF-8 (it contains an unpaired surrogate)") from None


def _number(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise _Bad(f"must be a number, got {type(v).__name__} {v!r}")
    try:
        v = float(v)
    except OverflowError:
        raise _Bad("is too large for a 64-bit float") from None
    if not math.isfinite(v):
        raise _Bad(f"must be a finite number, got {v!r}")
    return v


def _bounded_int(v: Any, low: int, high: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or not low <= v <= high:
        raise _Bad(f"must be an integer from {low} to {high}, got {v!r}")
    return int(v)


def _probability(v: Any) -> float | None:
    p = _number(v)
    if p is not None and not 0 < p <= 1:
        raise _Bad(f"must be in (0, 1], got {p!r}")
    return p


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
        if not isinstance(c, str) or not c.strip():
            raise _Bad(f"must be a list of non-empty strings, got element {c!r}")
        if len(c) > config.max_category_length:
            raise _Bad(f"category {c[:40]!r}... is longer than {config.max_category_length} characters")
        try:
            _storable_text(c)
        except _Bad as bad:
            raise _Bad(f"category {c[:40]!r} {bad}") from None
        out.append(c)
    return list(dict.fromkeys(out))


def _json_text(v: Any, max_bytes: int) -> str | None:
    """A JSON object as compact text, checked to be storable on every back end."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise _Bad(f"must be an object, got {type(v).__name__}")
    try:
        encoded = orjson.dumps(v, option=_JSON_OPTIONS)
    except TypeError as exc:  # non-string keys, non-JSON types, integers beyond 64 bits, invalid UTF-8
        raise _Bad(f"is not JSON-serialisable: {exc}") from None
    if b"null" in encoded and _has_nonfinite(v):  # orjson writes NaN and infinities as null
        raise _Bad("is not JSON-serialisable: NaN and infinity are not JSON numbers")
    if b"\\u0000" in encoded:
        raise _Bad("contains a NUL character")
    if len(encoded) > max_bytes:
        raise _Bad(f"is {len(encoded)} bytes as JSON; at most {max_bytes} allowed")
    return encoded.decode()


# Only JSON's own types (numpy scalars count as numbers): datetimes and dataclasses would not come back
# as what was sent, so they go to ``default`` and, there being none, are refused.
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_SERIALIZE_NUMPY


def _has_nonfinite(v: Any) -> bool:
    if isinstance(v, float | np.floating):
        return not math.isfinite(v)
    if isinstance(v, Mapping):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, list | tuple):
        return any(_has_nonfinite(x) for x in v)
    return False


def _json_object(v: Any, max_bytes: int) -> dict[str, Any]:
    """Item and user attributes: a checked JSON object; absent means empty."""
    text = _json_text(v, max_bytes)
    return {} if text is None else json.loads(text)
