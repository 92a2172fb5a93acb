"""Injected time.

Anything that needs "now" (skew checks, snapshots, recency, exposures) takes a :class:`Clock`; only
:class:`SystemClock` reads the wall clock. Inside tastemaker, instants are integers: microseconds since
the Unix epoch, UTC (``*_us`` names). :func:`to_us` turns what callers send into that form.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["Clock", "FixedClock", "SystemClock", "from_us", "to_us"]

US_PER_SECOND = 1_000_000
# Instants outside years 1..9999 are input mistakes (often milliseconds sent as seconds).
_MIN_US = -62_135_596_800 * US_PER_SECOND
_MAX_US = 253_402_300_799 * US_PER_SECOND


@runtime_checkable
class Clock(Protocol):
    """Source of the current instant."""

    def now_us(self) -> int:
        """Microseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    """The wall clock. The only place tastemaker reads real time."""

    def now_us(self) -> int:
        return time.time_ns() // 1000


class FixedClock:
    """A clock that moves only when told to: for tests, simulations and replays.

    Built from a ``datetime`` or ISO string; use :meth:`from_us` for epoch microseconds.
    """

    def __init__(self, start: datetime | str) -> None:
        if not isinstance(start, datetime | str):
            raise TypeError(
                f"FixedClock takes a datetime or ISO string; for microseconds use FixedClock.from_us({start!r})"
            )
        self._now = to_us(start)

    @classmethod
    def from_us(cls, instant_us: int) -> FixedClock:
        clock = cls.__new__(cls)
        clock._now = int(instant_us)
        return clock

    def now_us(self) -> int:
        return self._now

    def set(self, instant: datetime | str) -> None:
        self._now = to_us(instant)

    def advance(self, seconds: float) -> None:
        self._now += round(seconds * US_PER_SECOND)


def to_us(value: object) -> int:
    """Convert an instant to epoch microseconds (UTC).

    Accepts an aware or naive ``datetime`` (naive means UTC), a pandas ``Timestamp`` or numpy
    ``datetime64``, an ISO-8601 string (``Z`` allowed) or a number of seconds since the epoch.
    Raises ``ValueError`` with the reason when the value is none of these or lies outside years 1-9999.
    """
    instant = _to_us(value)
    if not _MIN_US <= instant <= _MAX_US:
        raise ValueError(f"timestamp {value!r} is outside years 1-9999 (seconds since the epoch expected)")
    return instant


def _to_us(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a timestamp, got the boolean {value!r}")
    if isinstance(value, int | np.integer):
        return int(value) * US_PER_SECOND
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise ValueError(f"timestamp {value!r} is not a finite number")
        return round(float(value) * US_PER_SECOND)
    if value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):
        raise ValueError("timestamp is missing (NaT)")
    if isinstance(value, pd.Timestamp):  # its own arithmetic is slow; as datetime64 it is UTC (wall if naive)
        return int(value.to_datetime64().astype("datetime64[us]").astype(np.int64))
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO-8601 or epoch seconds") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds
    raise ValueError(f"expected a timestamp, got {type(value).__name__} {value!r}")


def from_us(instant_us: int) -> datetime:
    """The aware UTC ``datetime`` of an epoch-microsecond instant."""
    return datetime.fromtimestamp(instant_us / US_PER_SECOND, tz=UTC)
