"""The exposure log's writer: served lists are queued on the request path and written in batches by one
background thread. Nothing queued is dropped: a failed write is retried (with a growing pause) until it
lands, and ``close`` writes everything still queued before it returns."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
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
        """Write what is queued, then stop the thread."""
        with self._arrived:
            if self._closed:
                return
            self._closed = True
            self._arrived.notify()
        self._thread.join()

    def _run(self) -> None:
        """Each batch starts with the first exposure that arrives and takes what follows for up to
        ``flush_seconds`` (or ``max_batch`` exposures), then is written in one transaction."""
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
