#!/usr/bin/env python3
"""Event ingestion through the Python API: batches of 1,000 API-shaped records into a fresh store.

    python benchmarks/ingest.py [--events 200000] [--batch 1000] [--repeats 3] [--db URL]

Records look like what an app sends: random (UUID-like) event ids, ISO-8601 timestamps, a context
object. Reports events/s for new events and for a re-send of the same events (all duplicates).
Target: >= 20,000 events/s (SQLite).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write

from tastemaker.clock import FixedClock, from_us, to_us
from tastemaker.store import open_store

TARGET = 20_000


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    start = to_us("2026-11-01T00:00:00Z")
    stamps = np.sort(start + rng.integers(0, 20 * 86_400_000_000, n))
    users, items = rng.integers(0, 50_000, n), rng.integers(0, 20_000, n)
    kinds = rng.choice(["view", "click", "play", "complete", "like"], n, p=[0.5, 0.25, 0.1, 0.1, 0.05])
    devices = rng.choice(["mobile", "desktop", "tv"], n)
    ids = [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2))]  # random, like client UUIDs
    return [
        {"event_id": ids[i], "user_id": f"u{u}", "item_id": f"i{it}", "type": str(k),
         "timestamp": from_us(int(ts)).isoformat(), "context": {"device": str(d)}}
        for i, (u, it, k, ts, d) in enumerate(zip(users, items, kinds, stamps, devices, strict=True))
    ]  # fmt: skip


def run(url: str, payload: list[dict], batch: int) -> tuple[float, float]:
    with open_store(url, clock=FixedClock("2026-12-01T00:00:00Z")) as store:
        started = time.perf_counter()
        accepted = sum(store.ingest_events(payload[i : i + batch]).accepted for i in range(0, len(payload), batch))
        fresh = time.perf_counter() - started
        assert accepted == len(payload), accepted
        started = time.perf_counter()
        again = sum(store.ingest_events(payload[i : i + batch]).duplicates for i in range(0, len(payload), batch))
        resend = time.perf_counter() - started
        assert again == len(payload), again
    return len(payload) / fresh, len(payload) / resend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file per repeat)")
    args = parser.parse_args()
    payload = records(args.events)
    fresh, resend = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            url = args.db or f"sqlite:///{Path(tmp) / f'bench{r}.db'}"
            new_rate, dup_rate = run(url, payload, args.batch)
            fresh.append(new_rate)
            resend.append(dup_rate)
    backend = (args.db or "sqlite").split(":")[0].split("+")[0]
    write("ingest" if backend == "sqlite" else f"ingest_{backend}", {
        "events": args.events, "batch": args.batch, "repeats": args.repeats,
        "backend": backend,
        "events_per_second_new": round(statistics.median(fresh)),
        "events_per_second_duplicates": round(statistics.median(resend)),
        "all_runs_new": [round(x) for x in fresh],
        "target_events_per_second": TARGET,
        "meets_target": statistics.median(fresh) >= TARGET,
    })  # fmt: skip


if __name__ == "__main__":
    main()
