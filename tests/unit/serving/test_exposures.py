"""The exposure writer batches off the request path and loses nothing: not on a store outage, not at close."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import orjson
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


class DownStore:
    """A store that is away: every write fails as a refused connection would."""

    def __init__(self) -> None:
        self.calls = 0

    def record_exposures(self, exposures):
        self.calls += 1
        raise StoreError("could not record exposures: connection refused")


def test_a_store_away_at_shutdown_spills_to_disk_and_the_next_start_writes_it_back(store, tmp_path: Path) -> None:
    """``close`` gives up on a store that stays away after ``close_seconds`` instead of holding the shutdown for
    the whole outage; nothing is lost: the exposures land in a spill file, and a later writer writes them back
    (once, even when two replay the same file) and deletes it."""
    spill, spilled = tmp_path / "spill", []
    down = DownStore()
    writer = ExposureWriter(down, flush_seconds=0.01, max_batch=4, spill_dir=spill, close_seconds=0.3,  # type: ignore[arg-type]
                            on_spilled=spilled.append)  # fmt: skip
    context = {"device": "tv", "hour": 20.5}
    exposures = [dataclasses.replace(shown(n), context=context if n % 2 else None) for n in range(10)]
    for exposure in exposures:
        writer.submit(exposure)
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 10 and down.calls >= 1
    files = list(spill.glob("exposures-*.jsonl"))
    assert len(files) == 1 and sum(spilled) == 10 and len(files[0].read_bytes().splitlines()) == 10
    copy = spill / "exposures-0-copy.jsonl"  # the same file seen twice (two workers starting together)
    copy.write_bytes(files[0].read_bytes())
    again = ExposureWriter(store, flush_seconds=0.01, spill_dir=spill)
    replaying = again.replay()
    assert replaying is not None
    replaying.join(30)
    again.close()
    frame = store.exposures_frame()
    assert sorted(frame["request_id"].unique()) == sorted(e.request_id for e in exposures)
    assert store.counts()["exposures"] == 10 and not list(spill.glob("*.jsonl"))
    assert {r: c for r, c in zip(frame["request_id"], frame["context"], strict=True)}["r1"] == context


def test_without_a_spill_folder_a_store_away_is_retried_until_it_answers(store) -> None:
    flaky = FlakyStore(store, failures=4)
    writer = ExposureWriter(flaky, flush_seconds=0.01, close_seconds=0.01)  # type: ignore[arg-type]
    writer.submit(shown(1))
    writer.close()  # past close_seconds, but with nowhere to spill: retried until it lands
    assert store.counts()["exposures"] == 1


class Outage:
    """A real store behind a switch: writes fail while ``down``."""

    def __init__(self, store) -> None:
        self.store, self.down = store, True

    def record_exposures(self, exposures):
        if self.down:
            raise StoreError("could not record exposures: connection refused")
        return self.store.record_exposures(exposures)


def test_a_long_outage_spills_past_the_bound_and_the_recovered_store_gets_everything(store, tmp_path: Path) -> None:
    """Memory stays bounded while the store is away (past ``max_queued`` the queue goes to disk); once it answers,
    the spilled exposures are written back in the same run and their file removed; a file left open by a process
    that crashed is replayed too, its cut-off last line skipped."""
    spill, spilled = tmp_path / "spill", []
    spill.mkdir()
    crashed = spill / "exposures-1-999999999-dead.jsonl.open"  # no such process
    crashed.write_bytes(orjson.dumps(dataclasses.asdict(shown(500))) + b"\n" + b'{"request_id": "r5')
    outage = Outage(store)
    writer = ExposureWriter(outage, flush_seconds=0.01, max_batch=2, max_queued=5, spill_dir=spill,  # type: ignore[arg-type]
                            on_spilled=spilled.append)  # fmt: skip
    for n in range(30):
        writer.submit(shown(n))
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while sum(spilled) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(spilled) >= 10 and len(writer._queued) <= 30 - sum(spilled)
    outage.down = False
    assert writer.flush(timeout=30)
    deadline = time.monotonic() + 30
    while (store.counts()["exposures"] < 31 or list(spill.glob("*.jsonl"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    stored = set(store.exposures_frame()["request_id"])
    assert stored == {f"r{n}" for n in range(30)} | {"r500"} and not list(spill.iterdir())


def test_a_spill_folder_that_cannot_be_written_falls_back_to_retrying_the_store(store, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    flaky = FlakyStore(store, failures=6)
    writer = ExposureWriter(flaky, flush_seconds=0.01, close_seconds=0.01, spill_dir=blocker / "spill")  # type: ignore[arg-type]
    for n in range(3):
        writer.submit(shown(n))
    writer.close()  # the spill fails (its parent is a file): the store is retried until it takes them
    assert store.counts()["exposures"] == 3


def test_replay_skips_a_file_a_live_writer_holds_drops_malformed_exposures_and_survives_a_removed_folder(
    store, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    good = [dataclasses.asdict(shown(n)) for n in range(3)]
    bad = {**dataclasses.asdict(shown(9)), "user_id": ""}  # never checked by the store before it was spilled
    (spill / "exposures-1-1-a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*good, bad]))
    live = spill / "exposures-2-2-b.jsonl.open"
    live.write_bytes(orjson.dumps(dataclasses.asdict(shown(7))) + b"\n")
    failed: list[int] = []
    with open(live, "ab") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as the writer that still appends to it holds it
        writer = ExposureWriter(store, flush_seconds=0.01, spill_dir=spill, on_failed=failed.append)
        writer.replay().join(30)  # type: ignore[union-attr]
        assert set(store.exposures_frame()["request_id"]) == {"r0", "r1", "r2"} and failed == [1]
        assert [f.name for f in spill.iterdir()] == [live.name]  # the finished file is gone, the live one kept
    writer.replay().join(30)  # type: ignore[union-attr]  # its writer is gone: replayed
    assert "r7" in set(store.exposures_frame()["request_id"]) and not list(spill.iterdir())
    writer.close()

    outage = Outage(store)  # a folder removed after a spill: the writer goes on
    writer = ExposureWriter(outage, flush_seconds=0.01, max_batch=2, max_queued=3, spill_dir=spill)  # type: ignore[arg-type]
    for n in range(20, 30):
        writer.submit(shown(n))
    deadline = time.monotonic() + 10
    while not list(spill.glob("*.open")) and time.monotonic() < deadline:
        time.sleep(0.02)
    shutil.rmtree(spill)
    outage.down = False
    assert writer.flush(timeout=30) and writer._thread.is_alive()
    writer.submit(shown(40))
    assert writer.flush(timeout=30) and "r40" in set(store.exposures_frame()["request_id"])
    writer.close()



@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")
def test_the_writer_thread_runs_at_a_lower_priority_than_the_requests(store) -> None:
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    writer = ExposureWriter(store, flush_seconds=0.01, niceness=7)
    try:
        writer.submit(shown(1))
        assert writer.flush(timeout=10)  # (written by the thread, after it lowered itself)
        tid = writer._thread.native_id
        assert tid is not None and os.getpriority(os.PRIO_PROCESS, tid) == min(main + 7, 19)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main
    finally:
        writer.close()
