"""Record validation: each rule, its message, and agreement between the fast path and the full checker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tastemaker.clock import to_us
from tastemaker.store.validation import (
    EVENT_FIELDS,
    ValidationConfig,
    _check_record,
    _event_checks,
    _fast_event,
    validate_events,
    validate_items,
    validate_users,
)

NOW = to_us("2026-11-26T12:00:00Z")
CONFIG = ValidationConfig()
GOOD = {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2026-11-26T11:00:00Z"}


def errors_of(record: dict[str, Any], config: ValidationConfig = CONFIG) -> list[tuple[str, str]]:
    _, errors = validate_events([record], config, NOW)
    return [(e.field, e.reason) for e in errors]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"user_id": None}, "user_id", "is required"),
        ({"item_id": "  "}, "item_id", "must not be empty"),
        ({"user_id": "u" * 257}, "user_id", "257 characters long; at most 256"),
        ({"type": "teleport"}, "type", "unknown event type 'teleport'; known: click, complete"),
        ({"value": float("nan")}, "value", "finite number"),
        ({"value": float("inf")}, "value", "finite number"),
        ({"value": "5"}, "value", "must be a number, got str"),
        ({"value": True}, "value", "must be a number"),
        ({"timestamp": "yesterday"}, "timestamp", "not ISO-8601 or epoch seconds"),
        ({"timestamp": 1.7e15}, "timestamp", "outside years 1-9999"),
        ({"timestamp": "2026-11-26T12:10:00Z"}, "timestamp", "more than 300 s in the future"),
        ({"context": ["mobile"]}, "context", "must be an object"),
        ({"context": {"x": {1, 2}}}, "context", "not JSON-serialisable"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"type": "rating"}, "value", "a 'rating' event needs a numeric value"),
    ],
)
def test_each_event_rule_names_the_field_and_the_reason(change: dict, field: str, reason: str) -> None:
    found = errors_of({**GOOD, **change})
    assert len(found) == 1 and found[0][0] == field
    assert reason in found[0][1]


def test_every_problem_of_a_record_is_reported_with_its_index() -> None:
    rows, errors = validate_events([GOOD, {"type": "nope", "value": float("nan")}], CONFIG, NOW)
    assert [i for i, _ in rows] == [0]
    assert [(e.index, e.field) for e in errors] == [(1, "user_id"), (1, "item_id"), (1, "type"), (1, "value")]


def test_the_json_size_limit_is_enforced() -> None:
    config = ValidationConfig(max_json_bytes=64)
    assert errors_of({**GOOD, "context": {"note": "x" * 100}}, config)[0][0] == "context"
    assert errors_of({**GOOD, "context": {"note": "x" * 10}}, config) == []


def test_timestamps_in_every_accepted_form_mean_the_same_instant() -> None:
    instant = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
    forms = [
        instant,
        instant.replace(tzinfo=None),  # naive means UTC
        instant.astimezone(timezone(timedelta(hours=-5))),
        "2026-11-26T10:30:00Z",
        "2026-11-26T05:30:00-05:00",
        instant.timestamp(),
        int(instant.timestamp()),
        pd.Timestamp(instant),
        np.datetime64("2026-11-26T10:30:00"),
    ]
    for form in forms:
        rows, errors = validate_events([{**GOOD, "timestamp": form}], CONFIG, NOW)
        assert errors == [], form
        assert rows[0][1]["timestamp_us"] == to_us(instant), form


def test_numeric_ids_are_read_as_strings_and_missing_time_is_now() -> None:
    rows, _ = validate_events([{"user_id": 7, "item_id": np.int64(9), "type": "view"}], CONFIG, NOW)
    assert (rows[0][1]["user_id"], rows[0][1]["item_id"], rows[0][1]["timestamp_us"]) == ("7", "9", NOW)


def test_item_and_user_rules() -> None:
    config = ValidationConfig(max_categories=2)
    _, errors = validate_items(
        [{"item_id": "a", "categories": ["x", "y", "z"]}, {"item_id": "b", "available": "yes"},
         {"item_id": "c", "created_at": "soon"}, {"item_id": "d", "title": "t" * 1001}],
        config,
    )  # fmt: skip
    assert [(e.index, e.field) for e in errors] == [
        (0, "categories"),
        (1, "available"),
        (2, "created_at"),
        (3, "title"),
    ]
    rows, errors = validate_users([{"user_id": "u", "created_at": None}, {"attributes": {}}], config)
    assert rows[0][1] == {"user_id": "u", "created_at_us": None}
    assert [(e.index, e.field, e.reason) for e in errors] == [(1, "user_id", "is required")]


# -- the fast path must agree with the full checker on everything it accepts ---------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.sampled_from(["view", "rating", "2026-11-26T11:59:00Z", "2026-11-27T00:00:00Z", "", " "]),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1)),
)  # fmt: skip
values = st.one_of(scalars, st.dictionaries(st.text(max_size=4), scalars, max_size=3))
event_records = st.dictionaries(st.sampled_from(sorted(EVENT_FIELDS | {"extra"})), values, max_size=9).map(
    lambda d: {"user_id": "u", "item_id": "i", "type": "view", **d}
)


@settings(max_examples=500, deadline=None)
@given(event_records)
def test_fast_path_accepts_only_what_the_full_checker_accepts_and_identically(record: dict[str, Any]) -> None:
    latest = NOW + round(CONFIG.max_future_skew_seconds * 1_000_000)
    errors: list = []
    full = _check_record(0, record, EVENT_FIELDS, _event_checks(CONFIG, NOW, latest), errors, partial=False)
    fast = _fast_event(record, frozenset(CONFIG.event_types), CONFIG, NOW, latest)
    if fast is not None:
        assert errors == []
        assert fast == full


def test_an_overflowing_value_is_an_error_not_a_crash() -> None:
    assert errors_of({**GOOD, "value": 10**400}) == [("value", "is too large for a 64-bit float")]
