"""Lists asked for by many threads (the server's request handlers), computed in batches by one thread.

A list's cost is mostly fixed per call (a few hundred small array operations), and one process computes one
list at a time anyway (the engine's lock). So requests that arrive while a batch is being computed wait and
go together in the next call, at most ``max_batch`` of them: an idle server starts a lone request at once
(no added wait), a busy one spreads each call's fixed cost over the batch (on the serving benchmark's world,
2026-11-28, a list cost 21% less in batches of 4 and 38% less in batches of 8 than alone). A batch that fails is
retried one request at a time, so one request's failure is its own.

A server behind its load sheds: a request that waited ``max_wait_seconds`` in the queue is refused
(:class:`~tastemaker.errors.OverloadedError`, a 503 with Retry-After) when its turn comes, and one whose caller
gave up (its future cancelled) is dropped; neither is computed. Waits are measured on a monotonic clock: a
duration, not the "now" lists are computed at.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from tastemaker.errors import OverloadedError, TastemakerError
from tastemaker.serving.service import ListRequest, Recommender, ServedList

__all__ = ["ListBatcher"]

_log = logging.getLogger(__name__)


class ListBatcher:
    def __init__(
        self,
        recommender: Recommender,
        *,
        max_batch: int = 8,
        max_wait_seconds: float = 5.0,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refused`` hears each request not computed: ``"overloaded"`` (shed) or ``"abandoned"``."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        if not max_wait_seconds > 0:
            raise ValueError(f"max_wait_seconds must be above 0, got {max_wait_seconds!r}")
        self._recommender = recommender
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._queued: deque[tuple[ListRequest, Future[ServedList], float]] = deque()
        self._arrived = threading.Condition()
        self._closed = False
        #: batch sizes served so far (size -> calls), for tests and metrics
        self.sizes: dict[int, int] = {}
        #: requests refused for waiting too long, and dropped because their caller gave up
        self.shed = self.abandoned = 0
        self._pending = 0  # submitted and not yet answered (queued, or in the batch being computed)
        self._on_refused = on_refused or (lambda reason: None)
        self._thread = threading.Thread(target=self._run, name="list-batcher", daemon=True)
        self._thread.start()

    def recommend(self, request: ListRequest) -> ServedList:
        """The request's list, computed with whatever else is waiting; blocks the calling thread until then."""
        return self.submit(request).result()

    def submit(self, request: ListRequest) -> Future[ServedList]:
        done: Future[ServedList] = Future()
        with self._arrived:
            if self._closed:
                raise TastemakerError("the list batcher is closed")
            self._queued.append((request, done, time.monotonic()))
            self._pending += 1
            self._arrived.notify()
        done.add_done_callback(self._answered)  # (answered, refused or cancelled: no longer pending)
        return done

    @property
    def pending(self) -> int:
        """Lists submitted and not answered yet: queued, or in the batch being computed. A request's own list
        stops counting once its future is done, so a route reading this after its answer sees the others."""
        return self._pending

    def _answered(self, done: Future[ServedList]) -> None:
        with self._arrived:
            self._pending -= 1

    def close(self) -> None:
        """Serve what is queued, then stop the thread."""
        with self._arrived:
            self._closed = True
            self._arrived.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._arrived:
                self._arrived.wait_for(lambda: self._queued or self._closed)
                if not self._queued:  # closed, and nothing left
                    return
                batch = self._take()
            if batch:
                self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
                self._serve(batch)

    def _take(self) -> list[tuple[ListRequest, Future[ServedList]]]:
        """The next batch: up to ``max_batch`` queued requests still wanted, refusing those waited too long."""
        batch = []
        oldest = time.monotonic() - self._max_wait
        while self._queued and len(batch) < self._max_batch:
            request, done, queued_at = self._queued.popleft()
            if not done.set_running_or_notify_cancel():  # (from here on it cannot be cancelled: always answered)
                self.abandoned += 1
                self._on_refused("abandoned")
            elif queued_at < oldest:
                self.shed += 1
                self._on_refused("overloaded")
                done.set_exception(OverloadedError(
                    f"the server is behind its load: the list waited over {self._max_wait:g} s for its turn; "
                    "try again"))  # fmt: skip
            else:
                batch.append((request, done))
        return batch

    def _serve(self, batch: list[tuple[ListRequest, Future[ServedList]]]) -> None:
        try:
            lists = self._recommender.recommend([request for request, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            _log.warning("a batch of %d lists failed (%s); serving them one by one", len(batch), exc)
            for one in batch:
                self._serve([one])
            return
        for (_, done), served in zip(batch, lists, strict=True):
            done.set_result(served)
