"""The exposure log's writer: served lists are queued on the request path and written in batches by one
background thread. Nothing queued is dropped: a failed write is retried (with a growing pause) until it
lands, and ``close`` writes everything still queued before it returns."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from tastemaker.errors import InvalidBatchError, TastemakerError
from tastemaker.store.base import Exposure, Store

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
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._max_batch = max_batch
        self._queue: queue.Queue[Exposure | None] = queue.Queue()
        self._on_written = on_written or (lambda n: None)
        self._on_failed = on_failed or (lambda n: None)
        self._pending = 0  # submitted and not yet written
        self._done = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
        self._thread.start()

    def submit(self, exposure: Exposure) -> None:
        with self._done:  # under the lock: nothing can be queued behind close()'s stop marker
            if self._closed:
                raise TastemakerError("the exposure writer is closed")
            self._pending += 1
            self._queue.put(exposure)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout`` passed first."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._done:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        """Each batch starts with the first exposure that arrives and takes what follows for up to
        ``flush_seconds`` (or ``max_batch`` exposures), then is written in one transaction."""
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self._flush_seconds
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if more is None:  # closing: write this batch, and nothing can follow the sentinel
                    stopping = True
                    break
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[Exposure]) -> None:
        total, pause, surprises = len(batch), 0.05, 0
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
                _log.warning("exposure write failed, retrying in %.2f s: %s", pause, exc)
            except Exception:  # a defect, not an outage: a few tries, then the batch is given up, loudly
                surprises += 1
                _log.exception("exposure write failed unexpectedly (attempt %d of 3)", surprises)
                if surprises == 3:
                    self._on_failed(len(batch))
                    break
            else:
                self._notify(len(batch))
                break
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        with self._done:
            self._pending -= total
            self._done.notify_all()

    def _notify(self, written: int) -> None:
        try:
            self._on_written(written)
        except Exception:  # a metric must not stop the writer
            _log.exception("exposure callback failed")
