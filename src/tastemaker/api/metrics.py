"""Prometheus metrics of one app (its own registry, so several apps in one process do not mix). With
several workers each process counts its own; scrape each, or aggregate behind the load balancer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
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
        self.model = Gauge("tastemaker_model_info", "The model served (1 for the served version)", ["version"],
                           registry=self.registry)  # fmt: skip
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)

    def serving(self, version: str | None) -> None:
        self.model.clear()
        self.model.labels(version or "popularity").set(1)
