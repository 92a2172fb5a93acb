"""The exposure log's writer: served lists are queued on the request path and written in batches by one
background thread. Nothing queued is dropped: a failed write is retried (with a growing pause) until it
lands, and ``close`` writes everything still queued before it returns.

A store that stays away at shutdown would hold ``close`` (and the server's exit) for as long as the outage
lasts, and a supervisor's kill at the end of its grace period would lose the queue. With a ``spill_dir``,
``close`` keeps retrying for ``close_seconds``, then appends what is still unwritten to a JSON-lines file
there (flushed to disk) and returns; ``replay`` (the server calls it at start) writes spilled files back in
a background thread and deletes each once it has landed. Writes are idempotent by request id, so a file
replayed twice (two workers starting together, a stop half-way) stores each exposure once. A long outage
while serving spills too, so the queue in memory stays bounded: past ``max_queued`` exposures, what is queued
goes to the file, and the first write that lands afterwards starts its replay."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import orjson

from tastemaker.errors import InvalidBatchError, TastemakerError
from tastemaker.serving.priority import lower_this_thread
from tastemaker.store.base import ExposedItem, Exposure, Store

__all__ = ["ExposureWriter"]

_log = logging.getLogger(__name__)


class ExposureWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_seconds: float = 0.2,
        max_batch: int = 500,
        on_written: Callable[[int], None] | None = None,
        on_failed: Callable[[int], None] | None = None,
        spill_dir: Path | None = None,
        close_seconds: float = 20.0,
        on_spilled: Callable[[int], None] | None = None,
        max_queued: int = 100_000,
        niceness: int = 0,
    ) -> None:
        """``niceness``: how much lower than the request threads' the writing threads' priority is (see
        :func:`~tastemaker.serving.priority.lower_this_thread`)."""
        self._store = store
        self._niceness = niceness
        self._max_queued = max_queued
        self._replaying: threading.Thread | None = None
        self._spill_dir = spill_dir
        self._close_seconds = close_seconds
        self._on_spilled = on_spilled or (lambda n: None)
        self._spill_file: Path | None = None  # this writer's, created at its first spill
        self._spill_handle: BinaryIO | None = None  # open and locked while it is
        self._give_up_at: float | None = None  # set by close(): past it, a store still away means spilling
        self._stop_replay = threading.Event()
        self._spilling = False
        self._flush_seconds = flush_seconds
        self._max_batch = max_batch
        self._queued: deque[Exposure] = deque()
        self._on_written = on_written or (lambda n: None)
        self._on_failed = on_failed or (lambda n: None)
        self._pending = 0  # submitted and not yet written
        self._closed = False
        # one lock; the writer waits on ``_arrived``, flush() on ``_done``
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)
        self._done = threading.Condition(lock)
        self._thread = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
        self._thread.start()

    def submit(self, exposure: Exposure) -> None:
        with self._arrived:  # under the lock: nothing can be queued once close() has begun
            if self._closed:
                raise TastemakerError("the exposure writer is closed")
            self._pending += 1
            self._queued.append(exposure)
            # Wake the writer only when it waits for this: the first of a batch, or a full batch. Waking it
            # for every exposure cost a thread switch (and the GIL) per request.
            if len(self._queued) == 1 or len(self._queued) >= self._max_batch:
                self._arrived.notify()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout`` passed first."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread (with a ``spill_dir``: within about ``close_seconds``,
        spilling what the store would not take)."""
        self._stop_replay.set()
        with self._arrived:
            if self._closed:
                return
            self._closed = True
            self._give_up_at = time.monotonic() + self._close_seconds
            self._arrived.notify()
        self._thread.join()
        self._finish_spill_file()

    def replay(self) -> threading.Thread | None:
        """Write back the exposures spilled in ``spill_dir`` by earlier runs, in a background thread (returned);
        each file is deleted once all of it has landed. A store still away is retried until it answers or this
        writer closes (the files then wait for the next start)."""
        if self._spill_dir is None or not self._spill_dir.is_dir():
            return None
        # finished files, and open ones whose writer is gone (it crashed while spilling: its lock went with it)
        files = sorted(self._spill_dir.glob("exposures-*.jsonl"))
        files += sorted(self._spill_dir.glob("exposures-*.jsonl.open"))
        if not files:
            return None
        thread = threading.Thread(target=self._replay, args=(files,), name="exposure-replay", daemon=True)
        self._replaying = thread
        thread.start()
        return thread

    def _replay(self, files: list[Path]) -> None:
        lower_this_thread(self._niceness)
        for path in files:
            try:
                handle = open(path, "rb")  # noqa: SIM115 - held (and locked) while the file is replayed
            except FileNotFoundError:  # another worker replayed it
                continue
            with handle:
                if path.name.endswith(".open"):
                    try:  # a live writer holds its open file's lock: skip it
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                try:
                    if not self._replay_file(path, handle.read()):
                        return  # closing: the file waits for the next start
                except Exception:  # a defect: the file is kept for a later start, the others still replayed
                    _log.exception("replaying %s failed; it is kept", path)
                    continue
                path.unlink(missing_ok=True)

    def _replay_file(self, path: Path, content: bytes) -> bool:
        """Write one spilled file's exposures; False if the writer closed first."""
        spilled = []
        for line in content.splitlines():
            try:
                spilled.append(_exposure(orjson.loads(line)))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):  # cut short by a crash mid-write
                _log.error("skipping an unreadable line in %s", path)
        for start in range(0, len(spilled), self._max_batch):
            batch, pause = spilled[start : start + self._max_batch], 0.05
            while batch:
                if self._stop_replay.is_set():
                    return False
                try:
                    self._store.record_exposures(batch)
                    break
                except InvalidBatchError as exc:  # never checked by the store before it was spilled: the rest goes
                    bad = {e.index for e in exc.errors}
                    _log.error("dropping %d malformed spilled exposures: %s", len(bad), exc)
                    self._on_failed(len(bad))
                    batch = [e for i, e in enumerate(batch) if i not in bad]
                except TastemakerError as exc:
                    _log.warning("replaying spilled exposures failed, retrying in %.2f s: %s", pause, exc)
                    self._stop_replay.wait(pause)
                    pause = min(pause * 2, 5.0)
        _log.info("replayed %d spilled exposures from %s", len(spilled), path)
        return True

    def _run(self) -> None:
        """Each batch starts with the first exposure that arrives and takes what follows for up to
        ``flush_seconds`` (or ``max_batch`` exposures), then is written in one transaction."""
        lower_this_thread(self._niceness)
        while True:
            with self._arrived:
                self._arrived.wait_for(lambda: self._queued or self._closed)
                if not self._queued:  # closed, and everything submitted is written
                    return
                # closing: what is queued goes out now, in batches of at most max_batch
                self._arrived.wait_for(lambda: len(self._queued) >= self._max_batch or self._closed,
                                       self._flush_seconds)  # fmt: skip
                batch = [self._queued.popleft() for _ in range(min(len(self._queued), self._max_batch))]
            self._write(batch)

    def _write(self, batch: list[Exposure]) -> None:
        total, pause, surprises = len(batch), 0.05, 0
        if self._spilling and self._spill(batch, TastemakerError("the store was away when the writer closed")):
            batch = []
        while batch:
            try:
                self._store.record_exposures(batch)  # idempotent by request id: a retry cannot double a row
            except InvalidBatchError as exc:  # a malformed exposure cannot succeed on retry: write the others
                bad = {e.index for e in exc.errors}
                _log.error("dropping %d malformed exposures: %s", len(bad), exc)
                self._on_failed(len(bad))
                batch = [e for i, e in enumerate(batch) if i not in bad]
                continue
            except TastemakerError as exc:  # the store is away: keep the batch, try again
                closing = self._give_up_at is not None and time.monotonic() >= self._give_up_at
                if closing and self._spill_dir is not None and self._spill(batch, exc):
                    self._spilling = True  # the batches still queued go to the file without waiting again
                    break
                if self._spill_dir is not None and len(self._queued) > self._max_queued:
                    self._spill_queued(exc)  # a long outage: memory stays bounded, nothing is lost
                _log.warning("exposure write failed, retrying in %.2f s: %s", pause, exc)
            except Exception:  # a defect, not an outage: a few tries, then the batch is given up, loudly
                surprises += 1
                _log.exception("exposure write failed unexpectedly (attempt %d of 3)", surprises)
                if surprises == 3:
                    self._on_failed(len(batch))
                    break
            else:
                self._notify(len(batch))
                if self._spill_handle is not None and not self._spilling:
                    self._replay_spilled()
                break
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        with self._done:
            self._pending -= total
            self._done.notify_all()

    def _spill(self, batch: list[Exposure], error: Exception) -> bool:
        """Append ``batch`` to this writer's spill file, flushed to disk (the store away at close, or too long);
        False if it cannot be written: spilling is then off, and the store is retried as without it. The file is
        ``….jsonl.open`` and locked while this writer may append to it."""
        if self._spill_dir is None:
            return False
        try:
            lines = b"".join(orjson.dumps(dataclasses.asdict(e), default=_plain) + b"\n" for e in batch)
            if self._spill_handle is None:
                self._spill_dir.mkdir(parents=True, exist_ok=True)
                name = f"exposures-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl.open"
                handle = open(self._spill_dir / name, "ab")  # noqa: SIM115 - kept open (and locked) between spills
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._spill_handle, self._spill_file = handle, self._spill_dir / name
            self._spill_handle.write(lines)
            self._spill_handle.flush()
            os.fsync(self._spill_handle.fileno())
        except (OSError, TypeError) as exc:  # a read-only or full disk, a folder removed; a value JSON cannot hold
            _log.error("cannot spill exposures to %s (%s): retrying the store instead", self._spill_dir, exc)
            self._spill_dir, self._spilling = None, False
            self._finish_spill_file()
            return False
        _log.error("the store is away (%s): %d exposures spilled to %s, to be written back once it answers or at "
                   "the next start", error, len(batch), self._spill_file)  # fmt: skip
        try:
            self._on_spilled(len(batch))
        except Exception:
            _log.exception("exposure callback failed")
        return True

    def _spill_queued(self, error: Exception) -> None:
        """Move everything queued to the spill file (the store has been away for ``max_queued`` exposures)."""
        with self._arrived:
            moved = list(self._queued)
            self._queued.clear()
        if not self._spill(moved, error):
            with self._arrived:
                self._queued.extendleft(reversed(moved))  # back in front of what arrived meanwhile, in order
            return
        with self._done:
            self._pending -= len(moved)
            self._done.notify_all()

    def _replay_spilled(self) -> None:
        """The store answers again after this writer spilled: later spills go to a new file, and the ones
        written so far are replayed in the background (unless a replay is still running: the next start will)."""
        self._finish_spill_file()
        if self._replaying is None or not self._replaying.is_alive():
            self._replaying = self.replay()

    def _finish_spill_file(self) -> None:
        """Nothing more goes to the current spill file: it becomes a finished one (``….jsonl``), then unlocked."""
        handle, path = self._spill_handle, self._spill_file
        self._spill_handle = self._spill_file = None
        if handle is None or path is None:
            return
        try:
            path.rename(path.with_suffix(""))  # drops ".open"
        except OSError as exc:  # removed meanwhile: an open file of a writer that is gone is replayed all the same
            _log.error("could not finish the spill file %s: %s", path, exc)
        finally:
            handle.close()

    def _notify(self, written: int) -> None:
        try:
            self._on_written(written)
        except Exception:  # a metric must not stop the writer
            _log.exception("exposure callback failed")


def _exposure(row: dict) -> Exposure:
    items = [ExposedItem(**item) for item in row.pop("items")]
    return Exposure(items=items, **row)


def _plain(value: object) -> object:
    """What JSON holds of a value orjson does not know (a NumPy scalar in a context): its Python value, or text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)
