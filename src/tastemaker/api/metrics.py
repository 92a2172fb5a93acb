"""Prometheus metrics of one app (its own registry, so several apps in one process do not mix).

Several workers (``tastemaker serve --workers N``) count together: the CLI gives them one fresh
``PROMETHEUS_MULTIPROC_DIR`` (or the one set in the environment), each worker's metrics live in files there,
and whichever worker answers ``/metrics`` reports the sum over all of them (the served model: the gauge's
largest value over the live workers, so a version any of them serves reads 1). A worker that died without
closing (killed; the server starts another) leaves its live gauges behind: a scrape drops those of processes
that no longer exist.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

__all__ = ["MULTIPROCESS_ENV", "Metrics"]

#: where prometheus_client keeps the metrics of processes that count together
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        #: whether this process counts with others: what prometheus_client chose when first imported (from the
        #: variable as it was then), whatever the variable says now
        self.shared = values.ValueClass is not values.MutexValue
        self._lock = threading.Lock()  # the refresher and a promotion through the API may both report the model
        self.registry = CollectorRegistry()
        self.latency = Histogram("tastemaker_request_seconds", "HTTP request latency by route",
                                 ["method", "route", "status"], registry=self.registry, buckets=_BUCKETS)  # fmt: skip
        self.events = Counter("tastemaker_events", "Events received, by outcome", ["outcome"], registry=self.registry)
        self.fallbacks = Counter("tastemaker_fallbacks", "Personalized requests served popularity (no model)",
                                 registry=self.registry)  # fmt: skip
        self.load_failures = Counter("tastemaker_model_load_failures", "Model artifacts that could not be served",
                                     registry=self.registry)  # fmt: skip
        self.exposures = Counter("tastemaker_exposures_written", "Exposures written to the store",
                                 registry=self.registry)  # fmt: skip
        self.spilled = Counter("tastemaker_exposures_spilled", "Exposures spilled to disk at shutdown (the store "
                               "was away); written back at the next start", registry=self.registry)  # fmt: skip
        self.refused = Counter("tastemaker_lists_refused", "List requests not computed: 'overloaded' (waited over "
                               "list_wait_seconds, answered 503) or 'abandoned' (the caller gave up)", ["reason"],
                               registry=self.registry)  # fmt: skip
        self.rebalanced = Counter("tastemaker_lists_rebalanced", "List responses that asked their client to "
                                  "reconnect (Connection: close): the worker had rebalance_pending other lists "
                                  "pending", registry=self.registry)  # fmt: skip
        self.model = Gauge("tastemaker_model_info", "The model served (1 for the served version)", ["version"],
                           registry=self.registry, multiprocess_mode="livemax")  # fmt: skip
        self._version: str | None = None
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)
        for reason in ("overloaded", "abandoned"):
            self.refused.labels(reason)

    def serving(self, version: str | None) -> None:
        name = version or "popularity"
        with self._lock:
            if self._version is not None and self._version != name:
                if self.shared:  # (a shared gauge's file keeps a removed label: it reads 0 instead)
                    self.model.labels(self._version).set(0)
                else:
                    self.model.remove(self._version)
            self.model.labels(name).set(1)
            self._version = name

    def render(self) -> bytes:
        """The Prometheus text: this process's metrics, or every worker's summed when they count together."""
        if not self.shared:
            return generate_latest(self.registry)
        _forget_dead_workers(os.environ.get(MULTIPROCESS_ENV, ""))
        everyone = CollectorRegistry()
        multiprocess.MultiProcessCollector(everyone)
        return generate_latest(everyone)

    def close(self) -> None:
        """This process stops serving: its live gauges leave the shared files (its counts stay)."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid())


def _forget_dead_workers(folder: str) -> None:
    """The live gauges of processes that are gone (killed before :meth:`Metrics.close`) leave ``folder``."""
    if not folder:
        return
    for file in Path(folder).glob("gauge_live*_*.db"):
        found = re.search(r"_(\d+)\.db$", file.name)
        if found and not _alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
