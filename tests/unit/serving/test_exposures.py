"""The exposure writer batches off the request path and loses nothing: not on a store outage, not at close."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tastemaker.clock import FixedClock, to_us
from tastemaker.errors import StoreError, TastemakerError
from tastemaker.serving.exposures import ExposureWriter
from tastemaker.store import ExposedItem, Exposure, open_store

NOW = "2026-11-26T12:00:00Z"


def shown(n: int, variant: str = "personalized") -> Exposure:
    return Exposure(f"r{n}", f"u{n}", variant, to_us(NOW), [ExposedItem(1, "m1", 0.5, "als", 1.0)])


@pytest.fixture
def store(tmp_path: Path):
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=FixedClock(NOW)) as s:
        yield s


def test_a_batch_waits_for_more_and_close_writes_what_is_queued(store) -> None:
    written: list[int] = []
    writer = ExposureWriter(store, flush_seconds=30.0, on_written=written.append)
    for n in range(25):
        writer.submit(shown(n))
    time.sleep(0.3)
    assert store.counts()["exposures"] == 0  # still gathering its batch
    writer.close()
    assert store.counts()["exposures"] == 25 and written == [25]
    with pytest.raises(TastemakerError, match="closed"):
        writer.submit(shown(99))


def test_batches_are_bounded_and_flush_waits_for_them(store) -> None:
    written: list[int] = []
    writer = ExposureWriter(store, flush_seconds=0.05, max_batch=10, on_written=written.append)
    for n in range(35):
        writer.submit(shown(n))
    assert writer.flush(timeout=10)
    assert store.counts()["exposures"] == 35 and max(written) <= 10 and sum(written) == 35
    writer.close()


class FlakyStore:
    """A real store that refuses the first ``failures`` writes, as a database going away would."""

    def __init__(self, store, failures: int) -> None:
        self.store, self.failures, self.calls = store, failures, 0

    def record_exposures(self, exposures):
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreError("could not record exposures: connection refused")
        return self.store.record_exposures(exposures)


def test_a_store_outage_is_retried_until_the_batch_lands(store) -> None:
    flaky = FlakyStore(store, failures=3)
    writer = ExposureWriter(flaky, flush_seconds=0.01)  # type: ignore[arg-type]
    for n in range(5):
        writer.submit(shown(n))
    writer.close()
    assert flaky.calls >= 4 and store.counts()["exposures"] == 5


def test_a_malformed_exposure_is_dropped_and_the_rest_written(store) -> None:
    failed: list[int] = []
    writer = ExposureWriter(store, flush_seconds=0.05, on_failed=failed.append)
    writer.submit(shown(1))
    writer.submit(shown(2, variant="v" * 100))  # longer than the store's variant column
    writer.submit(shown(3))
    writer.close()
    assert sorted(store.exposures_frame()["request_id"]) == ["r1", "r3"] and failed == [1]
