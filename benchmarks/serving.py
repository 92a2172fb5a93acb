#!/usr/bin/env python3
"""Serving: a user's list in-process and over HTTP, and event ingestion over HTTP, on the real server.

    python benchmarks/serving.py [--users 100000] [--items 100000] [--interactions 1000000]
                                 [--requests 500] [--passes 5] [--rate 200] [--low-rate 20] [--seconds 60]
                                 [--workers 1 2] [--refresh-seconds 3600] [--events 200000] [--batch 500]
                                 [--senders 1 2] [--parts inprocess http ingest]
                                 [--rebalance-pending N ...] [--background-niceness N ...] [--repeats 1]

The world is the candidate benchmark's (benchmarks/candidates.py: users with two favourite categories out
of 40, Zipf-like popularity, 90 days; seed 2 and 100k items, as in benchmarks/ranking.py), moved in time to
end a minute before the wall clock's now, with 2,000 providers of Zipf-like sizes. It is imported into a
fresh SQLite store (``import_dataset``: one ``view`` event per interaction) and an engine is trained and
promoted with ``tastemaker.models.registry.train``, as ``tastemaker train`` does; every run below starts
from a copy of that store. About 10 minutes in all. Targets:

1. ``inprocess``: ``Recommender.recommend`` (the store read of the user's events, fold-in, candidates,
   ranker, re-ranking chain), k=30, context device=mobile, nothing cached between requests: p50 <= 5 ms,
   p99 <= 15 ms. ``--requests`` personalized users (the holdout's control arm is served popularity);
   each request counts its fastest of ``--passes`` passes, as the other benchmarks do; the p99 over every
   pass and the split by stage are reported too. Objects built before timing are frozen out of the garbage
   collector (``gc.freeze``), as benchmarks/reranking.py does. Also timed: the cost per list when 1, 2, 4 or
   8 users are asked for in one call (what the server's list batcher does under load), and, once each, a
   request right after one new event of its user was stored, so that the list folds it in (real-time feedback).
2. ``http``: ``tastemaker serve`` in a subprocess (``--workers`` 1, then 2), an API key with every scope,
   ``GET /v1/users/{user}/recommendations?k=30&context.device=mobile`` over random users of the world
   (the control arm included). First the server's throughput closed-loop (4 connections a worker, each
   sending when answered, ``--capacity-seconds``); then open-loop at ``--low-rate`` and at ``--rate``
   requests/s for ``--seconds`` each: every request leaves at its scheduled instant whether or not earlier
   ones were answered, and its latency counts from that instant. Target at 200 requests/s: p99 <= 25 ms,
   0 errors (a non-200, a failed connection, or no answer within ``--timeout`` is an error). Each server
   runs with the default settings; ``--refresh-seconds S`` adds runs with the refresher (catalog view,
   popularity, exposure log) every S seconds instead of every 10, to show what the refresh costs. The load
   generator (asyncio + h11) runs on the same 2 cores as the server, its garbage collector off while it
   measures; its CPU share is reported.
3. ``ingest``: ``POST /v1/events`` in batches of ``--batch`` into a fresh SQLite store through the server
   (one worker), from ``--senders`` concurrent senders (1, then 2; a fresh store and server for each),
   records shaped like benchmarks/ingest.py's with timestamps in the hour before now: >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import httpx
import numpy as np
import orjson
import pandas as pd
from _common import write
from candidates import world

from tastemaker.clock import SystemClock, from_us
from tastemaker.data import Dataset, import_dataset
from tastemaker.models.registry import train
from tastemaker.serving import ListRequest, Recommender, ServerSettings
from tastemaker.serving.holdout import PERSONALIZED, assign
from tastemaker.store import open_store

P50_TARGET_MS, P99_TARGET_MS, HTTP_P99_TARGET_MS, EVENTS_TARGET = 5.0, 15.0, 25.0, 20_000
API_KEY = "serving-benchmark-key-0123456789"
TASTEMAKER = Path(sys.executable).with_name("tastemaker")


def ms(values: np.ndarray, at: float) -> float:
    return round(float(np.percentile(values, at)), 3)


# -- the world -------------------------------------------------------------------------------------------


def world_dataset(users: int, items: int, interactions: int, end_us: int) -> Dataset:
    """candidates.world as store records: one ``view`` per interaction, every instant moved so the world
    ends at ``end_us``; providers of Zipf-like sizes (the candidate world has one)."""
    snap = world(users, items, interactions, seed=2)
    shift = end_us - snap.end_us
    table = snap.interactions
    n = table["weight"].to_numpy(np.int64)  # a pair's weight is its number of interactions
    rows = np.repeat(np.arange(len(table)), n)
    events = pd.DataFrame({
        "event_id": [f"w{i}" for i in range(len(rows))],
        "user_id": snap.user_ids.to_numpy(object)[table["user_idx"].to_numpy()[rows]],
        "item_id": snap.item_ids.to_numpy(object)[table["item_idx"].to_numpy()[rows]],
        "type": "view", "value": np.nan, "timestamp_us": table["timestamp_us"].to_numpy(np.int64)[rows] + shift,
    })  # fmt: skip
    rng = np.random.default_rng(3)
    size = 1.0 / np.arange(1, 2_001) ** 1.1
    cats = snap.item_categories.tocsr()
    catalog = pd.DataFrame({
        "item_id": snap.item_ids.to_numpy(object), "title": snap.item_title, "text": "",
        "categories": [[str(snap.categories[c]) for c in cats.indices[cats.indptr[i] : cats.indptr[i + 1]]]
                       for i in range(snap.n_items)],
        "provider": [f"p{p}" for p in rng.choice(2_000, snap.n_items, p=size / size.sum())],
        "created_at_us": snap.item_created_at_us + shift, "available": True, "attributes": [{}] * snap.n_items,
    })  # fmt: skip
    return Dataset("serving-world", events, catalog)


def build(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A SQLite store holding the world and a promoted engine trained on it, under ``root``."""
    db, models = f"sqlite:///{root / 'world.db'}", root / "models"
    started = time.perf_counter()
    dataset = world_dataset(args.users, args.items, args.interactions, SystemClock().now_us() - 60_000_000)
    made = time.perf_counter()
    with open_store(db) as store:
        report = import_dataset(store, dataset, batch_size=5_000)
        imported = time.perf_counter()
        artifact = train(store, models, promote=True)
        trained = time.perf_counter()
    print(f"world: {len(dataset.events):,} events, {len(dataset.items):,} items; made in {made - started:.1f} s, "
          f"imported in {imported - made:.1f} s, trained in {trained - imported:.1f} s")  # fmt: skip
    return {
        "db": db, "models_dir": str(models), "user_ids": sorted(set(dataset.events["user_id"])),
        "info": {"events": report.events_accepted, "items": report.items, "version": artifact.version,
                 "import_seconds": round(imported - made, 1), "train_seconds": round(trained - imported, 1),
                 "trained_on": artifact.manifest["training_window"], "training_set": artifact.manifest["training_set"],
                 "sources": artifact.manifest["sources"]},
    }  # fmt: skip


def copy_of(db: str, name: str) -> str:
    """A copy of the SQLite store ``db`` beside it (each run starts from the world as built, without the
    exposures and events earlier runs added)."""
    source = Path(db.removeprefix("sqlite:///"))
    target = source.with_name(f"{name}.db")
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


# -- 1. in-process ----------------------------------------------------------------------------------------


class Stages:
    """Milliseconds spent in the wrapped calls during one request, by stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + (time.perf_counter_ns() - t) / 1e6

        return timed


def in_process(db: str, models_dir: str, user_ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    clock = SystemClock()
    with open_store(db, clock=clock) as store:
        settings = ServerSettings(db=db, models_dir=Path(models_dir))
        loading = time.perf_counter()
        recommender = Recommender.from_settings(store, settings, clock)
        load_seconds = time.perf_counter() - loading
        loaded = recommender.slot.current
        assert loaded is not None, recommender.slot.error
        # as a server after loading: the engine and the catalog go to the permanent generation
        gc.collect()
        gc.freeze()
        rng = np.random.default_rng(1)
        candidates = rng.permutation(np.array(user_ids, dtype=object))[: args.requests * 2]
        personal = candidates[assign(list(candidates), settings.holdout) == PERSONALIZED][: args.requests]
        stages = Stages()  # the request's stages, timed in place (a wrapper costs ~1 µs)
        store.user_events = stages.wrap("store_read", store.user_events)  # type: ignore[method-assign]
        recommender._fold_in = stages.wrap("fold_in", recommender._fold_in)  # type: ignore[method-assign]
        loaded.engine.recommend = stages.wrap("engine", loaded.engine.recommend)  # type: ignore[method-assign]

        def ask(user: str) -> tuple[float, dict[str, float]]:
            stages.spent = {}
            t = time.perf_counter_ns()
            served = recommender.recommend([ListRequest(user, 30, context={"device": "mobile"})])[0]
            total = (time.perf_counter_ns() - t) / 1e6
            assert served.variant == PERSONALIZED and served.fallback is None and len(served.items) == 30, served
            return total, dict(stages.spent)

        for user in personal[:20]:  # warm-up
            ask(user)
        result = {"requests": len(personal), "passes": args.passes, "model_load_seconds": round(load_seconds, 1),
                  **_passes(ask, personal, args.passes)}  # fmt: skip
        result["batched"] = _batched(recommender, personal)
        result["after_a_new_event"] = _with_new_events(store, ask, personal[: args.requests // 5])
        gc.unfreeze()
    return result


def _passes(ask: Callable, users: np.ndarray, passes: int) -> dict[str, Any]:
    """Every user asked once a pass; each request's figures are those of its fastest pass."""
    every = np.empty((passes, len(users)))
    split = {name: np.empty((passes, len(users))) for name in ("store_read", "fold_in", "engine")}
    for p in range(passes):
        for i, user in enumerate(users):
            every[p, i], spent = ask(user)
            for name in split:
                split[name][p, i] = spent.get(name, 0.0)
    fastest, cols = every.argmin(axis=0), np.arange(len(users))
    best = every[fastest, cols]
    by_stage = {name: values[fastest, cols] for name, values in split.items()}
    by_stage["other"] = best - sum(by_stage.values())
    return {
        "p50_ms": ms(best, 50), "p99_ms": ms(best, 99), "mean_ms": round(float(best.mean()), 3),
        "every_pass_p50_ms": ms(every, 50), "every_pass_p99_ms": ms(every, 99), "max_ms": round(float(every.max()), 3),
        "stages_p50_ms": {name: ms(v, 50) for name, v in by_stage.items()},
        "stages_p99_ms": {name: ms(v, 99) for name, v in by_stage.items()},
    }  # fmt: skip


def _batched(recommender: Recommender, users: np.ndarray) -> dict[str, float]:
    """Milliseconds per list when ``size`` users are asked for in one call (what the server's list batcher does
    under load), over the same users, each size's best of 3 passes."""
    out = {}
    for size in (1, 2, 4, 8):
        best = np.inf
        for _ in range(3):
            started = time.perf_counter()
            for start in range(0, len(users), size):
                batch = users[start : start + size]
                recommender.recommend([ListRequest(u, 30, context={"device": "mobile"}) for u in batch])
            best = min(best, (time.perf_counter() - started) / len(users) * 1e3)
        out[f"ms_per_list_batch_{size}"] = round(best, 3)
    return out


def _with_new_events(store: Any, ask: Callable, users: np.ndarray) -> dict[str, Any]:
    """Each request right after one new event of its user is stored (untimed): the list folds it in. One pass:
    the next request of the same user without a new event would not fold again."""
    total, fold = np.empty(len(users)), np.empty(len(users))
    rng = np.random.default_rng(5)
    for i, user in enumerate(users):
        event = {"event_id": f"new-{user}-{i}", "user_id": str(user), "item_id": str(rng.integers(0, 1_000)),
                 "type": "click", "timestamp": from_us(store.clock.now_us() - 1_000).isoformat()}  # fmt: skip
        assert store.ingest_events([event]).accepted == 1
        total[i], spent = ask(user)
        fold[i] = spent.get("fold_in", 0.0)
    return {"requests": len(users), "p50_ms": ms(total, 50), "p99_ms": ms(total, 99),
            "fold_in_p50_ms": ms(fold, 50), "fold_in_p99_ms": ms(fold, 99)}  # fmt: skip


# -- the server -------------------------------------------------------------------------------------------


class Server:
    """``tastemaker serve`` in a subprocess on a free port of 127.0.0.1, with one API key of every scope."""

    def __init__(self, db: str, models_dir: str | Path, workers: int, log: Path, config: Path | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TASTEMAKER_API_KEYS": f"{API_KEY}:ingest+recommend+admin"}
        command = [str(TASTEMAKER), "serve", "--db", db, "--models-dir", str(models_dir), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", str(workers), "--log-level", "warning",
                   *(["--config", str(config)] if config else [])]  # fmt: skip
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.started = time.perf_counter()

    def wait(self, timeout: float = 600.0) -> float:
        """Seconds until /healthz answered (the model is loaded by then: the app's start-up loads it)."""
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer /healthz within {timeout} s")

    def family(self) -> dict[int, float]:
        """The server and its worker processes, each with its user + system CPU seconds so far (Linux)."""
        tick = os.sysconf("SC_CLK_TCK")
        found: dict[int, float] = {}
        for stat in sorted(Path("/proc").glob("[0-9]*/stat"), key=lambda p: int(p.parent.name)):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == self.process.pid or ppid in found:
                found[pid] = (int(fields[11]) + int(fields[12])) / tick
        return found

    def cpu_seconds(self) -> float:
        return sum(self.family().values())

    def stop(self) -> None:
        """Stop the server; its workers too, should they outlive it (they may still be working through
        requests their clients gave up on)."""
        family = self.family()
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in set(family) - {self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._out.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


HEADERS = {"Authorization": f"Bearer {API_KEY}"}


class Client:
    """Keep-alive HTTP/1.1 connections to one port through h11 (httpx's own protocol engine) on asyncio
    streams, opened as needed (an open-loop sender never waits for a free connection). httpx's per-request
    layers cost 0.9 ms of client CPU a request (measured on ``/healthz`` here), this 0.2 ms: the load
    generator shares the 2 cores with the server, so it should take as little of them as it can."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.headers = [(b"Host", b"127.0.0.1"), *((k.encode(), v.encode()) for k, v in HEADERS.items())]
        self.idle: list[tuple[h11.Connection, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Status and body; -1 when the request failed or took over ``timeout`` seconds."""
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else await self._open()
        try:
            got = await asyncio.wait_for(self._exchange(conn, method, path, body), self.timeout)
        except (OSError, h11.ProtocolError) as exc:  # TimeoutError is an OSError
            conn[2].close()
            if reused and not isinstance(exc, TimeoutError):  # the server closed an idle connection
                return await self.request(method, path, body)
            return -1, b""
        if conn[0].our_state is h11.DONE and conn[0].their_state is h11.DONE:
            conn[0].start_next_cycle()
            self.idle.append(conn)
        else:
            conn[2].close()
        return got

    async def _open(self) -> tuple[h11.Connection, asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return h11.Connection(h11.CLIENT), reader, writer

    async def _exchange(self, conn: tuple, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        h, reader, writer = conn
        headers = self.headers + ([(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
                                  if body else [])  # fmt: skip
        out = h.send(h11.Request(method=method, target=path, headers=headers))
        writer.write(out + (h.send(h11.Data(data=body)) if body else b"") + h.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await reader.read(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the server closed the connection")

    def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()
        self.idle.clear()


# -- 2. over HTTP -----------------------------------------------------------------------------------------


async def open_loop(
    port: int, paths: list[str], rate: float, timeout: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Send ``paths[i]`` at ``start + i / rate`` whatever the answers; latency from that instant (seconds),
    status (-1 for a failure or a timeout), and the seconds from the first send to the last send and to the
    last answer."""
    n = len(paths)
    latency, status = np.full(n, np.nan), np.zeros(n, np.int64)
    client = Client(port, timeout)

    async def one(i: int, at: float) -> None:
        status[i] = (await client.request("GET", paths[i]))[0]
        latency[i] = time.perf_counter() - at

    start = time.perf_counter() + 0.2
    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
    sending = time.perf_counter() - start
    await asyncio.gather(*tasks)
    client.close()
    return latency, status, sending, time.perf_counter() - start


async def closed_loop(port: int, paths: list[str], clients: int, seconds: float) -> tuple[np.ndarray, float]:
    """``clients`` connections, each sending its next request when the last is answered, for ``seconds``:
    the server's throughput when it is never idle. Latencies of the answered requests (seconds)."""
    client = Client(port, 60.0)
    for path in paths[:50]:  # warm the server's code paths, untimed
        assert (await client.request("GET", path))[0] == 200
    latencies: list[float] = []
    start = time.perf_counter()

    async def sender(first: int) -> None:
        i = first
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            assert (await client.request("GET", paths[i % len(paths)]))[0] == 200
            latencies.append(time.perf_counter() - t)
            i += clients

    await asyncio.gather(*(sender(c) for c in range(clients)))
    client.close()
    return np.array(latencies), time.perf_counter() - start


def over_http(db: str, models_dir: str, user_ids: list[str], workers: int, args: argparse.Namespace, log: Path,
              settings: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """One server (``workers`` processes; the default settings, or these ``[server]`` ones): its throughput
    closed-loop, then the open-loop load at ``args.low_rate``, the sweep's rates and ``args.rate``."""
    rng = np.random.default_rng(7 + workers)
    users = rng.choice(np.array(user_ids, dtype=object), int(args.rate * args.seconds))
    paths = [f"/v1/users/{u}/recommendations?k=30&context.device=mobile" for u in users]
    settings = settings or {}
    config = None
    if settings:
        config = log.with_suffix(".toml")
        config.write_text("[server]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    defaults = ServerSettings()
    with Server(db, models_dir, workers, log, config) as server:
        ready_s = server.wait()
        ready = httpx.get(f"{server.base}/readyz", timeout=60).json()
        assert ready["model_version"], ready
        done, seconds = asyncio.run(closed_loop(server.port, paths[::-1], 4 * workers, args.capacity_seconds))
        result = {
            "workers": workers, "refresh_seconds": settings.get("refresh_seconds", defaults.refresh_seconds),
            "rebalance_pending": settings.get("rebalance_pending", defaults.rebalance_pending),
            "background_niceness": settings.get("background_niceness", defaults.background_niceness),
            "server_start_seconds": round(ready_s, 1), "load_average_before": os.getloadavg()[0],
            "control_share": round(float((assign(list(users), defaults.holdout) != PERSONALIZED).mean()), 4),
            "closed_loop": {"clients": 4 * workers, "seconds": args.capacity_seconds,
                            "requests_per_second": round(len(done) / seconds, 1),
                            "p50_ms": ms(done * 1e3, 50), "p99_ms": ms(done * 1e3, 99)},
        }  # fmt: skip
        # the low rate first: a server that cannot keep up with the target rate is still working through
        # abandoned requests long after the load ends
        for rate in [*([args.low_rate] if args.low_rate else []), *sorted(args.sweep), args.rate]:
            result[f"open_loop_{rate:g}"] = _open_loop_run(server, paths[: int(rate * args.seconds)], rate, args)
    return result


def _open_loop_run(server: Server, paths: list[str], rate: float, args: argparse.Namespace) -> dict[str, Any]:
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    # the load generator's own garbage collection would pause every request in flight (a /tmp harness on this
    # open loop logged a full collection of 96 ms at the end of a 60 s run): off while it measures
    gc.collect()
    gc.disable()
    try:
        latency, status, sending, elapsed = asyncio.run(open_loop(server.port, paths, rate, args.timeout))
    finally:
        gc.enable()
    cpu_server, cpu_client = server.cpu_seconds() - cpu_server, time.process_time() - cpu_client
    lat, window = latency * 1e3, int(rate * 10)
    return {
        "requests": len(paths), "rate_asked": rate, "rate_sent": round((len(paths) - 1) / sending, 1),
        "answered_200_per_second": round(int((status == 200).sum()) / elapsed, 1), "errors": int((status != 200).sum()),
        "statuses": {str(s): int(c) for s, c in zip(*np.unique(status, return_counts=True), strict=True)},
        "p50_ms": ms(lat, 50), "p95_ms": ms(lat, 95), "p99_ms": ms(lat, 99), "max_ms": round(float(lat.max()), 1),
        "p99_ms_each_10s": [ms(lat[i : i + window], 99) for i in range(0, len(paths), window)],
        "cpu_cores_used": {"server": round(cpu_server / elapsed, 2), "load_generator": round(cpu_client / elapsed, 2)},
    }  # fmt: skip


# -- 3. ingestion over HTTP -------------------------------------------------------------------------------


def event_bodies(n: int, batch: int, seed: int) -> list[bytes]:
    """Batches shaped like benchmarks/ingest.py's records, with timestamps in the hour before now."""
    rng = np.random.default_rng(seed)
    now = SystemClock().now_us()
    stamps = np.sort(now - rng.integers(60_000_000, 3_600_000_000, n))
    users, items = rng.integers(0, 50_000, n), rng.integers(0, 20_000, n)
    kinds = rng.choice(["view", "click", "play", "complete", "like"], n, p=[0.5, 0.25, 0.1, 0.1, 0.05])
    devices = rng.choice(["mobile", "desktop", "tv"], n)
    ids = [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2))]
    records = [
        {"event_id": ids[i], "user_id": f"u{u}", "item_id": f"i{it}", "type": str(k),
         "timestamp": from_us(int(ts)).isoformat(), "context": {"device": str(d)}}
        for i, (u, it, k, ts, d) in enumerate(zip(users, items, kinds, stamps, devices, strict=True))
    ]  # fmt: skip
    return [orjson.dumps({"events": records[i : i + batch]}) for i in range(0, n, batch)]


async def send_all(port: int, bodies: list[bytes], senders: int) -> tuple[int, int, float]:
    """Each sender posts its share of ``bodies`` one after another: events accepted, failed requests, seconds."""
    client = Client(port, 120.0)
    accepted, failed = 0, 0

    async def sender(first: int) -> None:
        nonlocal accepted, failed
        for body in bodies[first::senders]:
            status, answer = await client.request("POST", "/v1/events", body)
            if status == 200:
                accepted += orjson.loads(answer)["accepted"]
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(sender(s) for s in range(senders)))
    seconds = time.perf_counter() - started
    client.close()
    return accepted, failed, seconds


def ingest(senders: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """A fresh store and server; ``args.events`` events in batches of ``args.batch`` from ``senders`` senders."""
    db = f"sqlite:///{root / f'ingest{senders}.db'}"
    with Server(db, root / f"models-ingest{senders}", 1, root / f"ingest{senders}.log") as server:
        server.wait()
        bodies = event_bodies(args.events, args.batch, seed=senders)  # made now: timestamps near the server's now
        cpu = server.cpu_seconds()
        accepted, failed, seconds = asyncio.run(send_all(server.port, bodies, senders))
        cpu = server.cpu_seconds() - cpu
    return {"senders": senders, "events": args.events, "batch": args.batch, "accepted": accepted,
            "failed_requests": failed, "seconds": round(seconds, 2), "events_per_second": round(accepted / seconds),
            "server_cpu_cores_used": round(cpu / seconds, 2)}  # fmt: skip


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the HTTP load")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the HTTP load")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes, one run each")
    parser.add_argument("--low-rate", type=float, default=20.0, help="also this rate (0: not)")
    parser.add_argument("--sweep", type=float, nargs="*", default=[],
                        help="also these rates (requests/s), between the low rate and the target one: p99 by load")
    parser.add_argument("--timeout", type=float, default=10.0, help="an HTTP request unanswered by then is an error")
    parser.add_argument("--capacity-seconds", type=float, default=20.0, help="length of the closed-loop run")
    parser.add_argument("--refresh-seconds", type=float, nargs="*", default=[],
                        help="also run the HTTP load with the refresher this slow (the default is 10 s)")  # fmt: skip
    parser.add_argument("--background-niceness", type=int, nargs="*", default=[],
                        help="also run the HTTP load with these background_niceness settings (0: the refresher and "
                        "the exposure writer at the request threads' priority; the default is 19)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the HTTP servers (the default and every variant, in turn) this many times")
    parser.add_argument("--rebalance-pending", type=int, nargs="*", default=[],
                        help="also run the HTTP load with these rebalance_pending settings (0: keep-alive "
                        "connections are never closed to rebalance; the default is 1)")  # fmt: skip
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 2], help="concurrent senders, one run each")
    parser.add_argument("--parts", nargs="+", default=["inprocess", "http", "ingest"],
                        choices=["inprocess", "http", "ingest"])  # fmt: skip
    parser.add_argument("--name", default="serving", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    results: dict[str, Any] = {"commit": commit}
    with tempfile.TemporaryDirectory(prefix="tastemaker-serving-") as tmp:
        root = Path(tmp)
        if {"inprocess", "http"} & set(args.parts):
            built = build(root, args)
            db, models, user_ids = built["db"], built["models_dir"], built["user_ids"]
            results["world"] = {"users": args.users, "items": args.items, "interactions": args.interactions,
                                **built["info"]}  # fmt: skip
            if "inprocess" in args.parts:
                results["in_process"] = in_process(copy_of(db, "inprocess"), models, user_ids, args)
                print("in-process:", results["in_process"])
            if "http" in args.parts:
                results["http"] = []
                variants = [{}, *({"refresh_seconds": r} for r in args.refresh_seconds),
                            *({"rebalance_pending": n} for n in args.rebalance_pending),
                            *({"background_niceness": n} for n in args.background_niceness)]  # fmt: skip
                # in turn, so that a change of the host's speed (±30% within an hour here) falls on every variant
                for repeat, settings, workers in itertools.product(range(args.repeats), variants, args.workers):
                    name = "-".join(["http", str(workers), *(f"{k}{v}" for k, v in settings.items())])
                    name += f"-{repeat}" if args.repeats > 1 else ""
                    one = over_http(copy_of(db, name), models, user_ids, workers, args, root / f"{name}.log",
                                    settings)  # fmt: skip
                    results["http"].append(one)
                    print("http:", one)
        if "ingest" in args.parts:
            results["ingest_http"] = [ingest(s, args, root) for s in args.senders]
            for one in results["ingest_http"]:
                print("ingest over http:", one)
    results["target"] = {"p50_ms": P50_TARGET_MS, "p99_ms": P99_TARGET_MS, "http_p99_ms": HTTP_P99_TARGET_MS,
                         "http_errors": 0, "events_per_second": EVENTS_TARGET}  # fmt: skip
    write(args.name, results)


if __name__ == "__main__":
    main()
