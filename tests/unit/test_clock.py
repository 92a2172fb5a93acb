from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tastemaker.clock import FixedClock, SystemClock, from_us, to_us


def test_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock("2026-01-01T00:00:00Z")
    start = clock.now_us()
    assert clock.now_us() == start
    clock.advance(1.5)
    assert clock.now_us() == start + 1_500_000
    clock.set(datetime(2026, 1, 2, tzinfo=UTC))
    assert from_us(clock.now_us()) == datetime(2026, 1, 2, tzinfo=UTC)
    assert FixedClock.from_us(42).now_us() == 42


def test_fixed_clock_refuses_ambiguous_numbers() -> None:
    with pytest.raises(TypeError, match="FixedClock.from_us"):
        FixedClock(1_700_000_000)  # type: ignore[arg-type]


def test_system_clock_is_near_the_real_time() -> None:
    assert abs(SystemClock().now_us() - to_us(datetime.now(UTC))) < 5_000_000


def test_to_us_round_trips_and_rejects_what_is_not_time() -> None:
    assert to_us("1970-01-01T00:00:01Z") == 1_000_000
    assert to_us(1.25) == 1_250_000
    for bad, reason in [
        (True, "boolean"),
        ("soon", "ISO-8601"),
        (float("inf"), "finite"),
        (2e12, "1-9999"),
        ([1], "list"),
    ]:
        with pytest.raises(ValueError, match=reason):
            to_us(bad)
