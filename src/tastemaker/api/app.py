"""The HTTP API: ``create_app(settings)`` builds a FastAPI app over one store and one model registry.

The app's lifespan opens the store, loads the promoted model, starts the exposure writer, the list batcher
(lists asked for together are computed in one call) and a refresher thread (registry, catalog view, exposure
log every ``refresh_seconds``), and on shutdown stops taking requests, then writes every queued exposure
before it closes the store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastemaker.api import errors
from tastemaker.api.auth import Keys
from tastemaker.api.metrics import Metrics
from tastemaker.api.routes import events, health, items, models, recommendations, users
from tastemaker.clock import Clock, SystemClock
from tastemaker.errors import ConfigError
from tastemaker.models.registry import Registry
from tastemaker.serving.batcher import ListBatcher
from tastemaker.serving.exposures import ExposureWriter
from tastemaker.serving.priority import lower_this_thread
from tastemaker.serving.service import Recommender
from tastemaker.serving.settings import ServerSettings
from tastemaker.store import Store, open_store

__all__ = ["Server", "check_bind", "create_app"]

_log = logging.getLogger(__name__)
LOCAL = "127.0.0.1"


@dataclass(eq=False)
class Server:
    """What the routes share: the store, the recommender (lists go through its batcher), the registry, the
    metrics."""

    settings: ServerSettings
    store: Store
    recommender: Recommender
    registry: Registry
    metrics: Metrics
    writer: ExposureWriter
    batcher: ListBatcher


def check_bind(settings: ServerSettings, host: str) -> None:
    """Without API keys the server may listen on 127.0.0.1 only."""
    if not settings.api_keys and host != LOCAL:
        raise ConfigError(
            f"refusing to bind to {host!r} without API keys: set TASTEMAKER_API_KEYS (KEY:SCOPE[+SCOPE...]) "
            f"or api_keys in the config file, or bind to {LOCAL}"
        )


def create_app(settings: ServerSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    clock = clock or SystemClock()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = _start(settings, clock, metrics)
        app.state.server = server
        stop = threading.Event()
        refresher = threading.Thread(target=_refresh_loop, args=(server, stop), name="refresher", daemon=True)
        refresher.start()
        try:
            yield
        finally:
            stop.set()
            refresher.join()
            server.batcher.close()  # (nothing is queued by now: the server stopped taking requests)
            server.writer.close()  # every queued exposure is written before the store closes
            server.store.close()
            metrics.close()

    app = FastAPI(
        title="tastemaker",
        version=_version(),
        description="Events and catalog in; ranked personal lists out, with an always-on popularity holdout.",
        lifespan=lifespan,
    )
    app.state.keys = Keys(settings.api_keys)
    app.state.metrics = metrics
    errors.install(app)
    for module in (events, items, recommendations, users, models, health):  # a user's list before the user
        app.include_router(module.router)
    app.add_middleware(_Timing, metrics=metrics)
    app.add_middleware(_BodyLimit, limit=settings.limits.max_body_bytes)
    return app


def _start(settings: ServerSettings, clock: Clock, metrics: Metrics) -> Server:
    store = open_store(settings.db, clock=clock)
    spill = settings.exposure_spill_dir or Path(settings.models_dir) / ".exposure-spill"
    writer = ExposureWriter(store, flush_seconds=settings.exposure_flush_seconds, on_written=metrics.exposures.inc,
                            spill_dir=spill, close_seconds=settings.exposure_close_seconds,
                            on_spilled=metrics.spilled.inc, max_queued=settings.exposure_max_queued,
                            niceness=settings.background_niceness)  # fmt: skip
    writer.replay()  # what an earlier run spilled at its shutdown (the store was away), in the background
    try:
        recommender = Recommender.from_settings(
            store, settings, clock, writer=writer, on_fallback=lambda reason: metrics.fallbacks.inc(),
            on_load_failed=lambda message: metrics.load_failures.inc(),
        )  # fmt: skip
    except BaseException:
        writer.close()
        store.close()
        raise
    slot = recommender.slot
    metrics.serving(slot.current.version if slot.current else None)
    batcher = ListBatcher(recommender, max_batch=settings.list_batch, max_wait_seconds=settings.list_wait_seconds,
                          on_refused=lambda reason: metrics.refused.labels(reason).inc())  # fmt: skip
    return Server(settings, store, recommender, slot.registry, metrics, writer, batcher)


def _refresh_loop(server: Server, stop: threading.Event) -> None:
    lower_this_thread(server.settings.background_niceness)
    while not stop.wait(server.settings.refresh_seconds):
        try:
            server.recommender.refresh()
            slot = server.recommender.slot
            server.metrics.serving(slot.current.version if slot.current else None)
        except Exception:  # the next round tries again; requests go on with what is loaded
            _log.exception("refresh failed")


#: the environment variable through which ``tastemaker serve --workers N`` hands its settings to each worker
SETTINGS_ENV = "TASTEMAKER_SERVER_SETTINGS"


def settings_json(settings: ServerSettings) -> str:
    """``settings`` as JSON, API keys included (for the server's own worker processes only)."""
    data = settings.model_dump(mode="json")
    data["api_keys"] = [{"key": k.key.get_secret_value(), "scopes": sorted(k.scopes)} for k in settings.api_keys]
    return json.dumps(data)


def app_from_env() -> FastAPI:
    """The app of one worker of ``tastemaker serve --workers N`` (a uvicorn factory)."""
    return create_app(ServerSettings.from_dict(json.loads(os.environ[SETTINGS_ENV])))


def _version() -> str:
    from tastemaker import __version__

    return __version__


class _BodyLimit:
    """413 for a body over ``limit`` bytes, whether it says its length or streams it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        payload = (b'{"status":413,"message":"request body over the limit of %d bytes","errors":[]}' % self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})  # fmt: skip


class _TooLarge(StarletteHTTPException):
    """Raised while a streamed body is read: FastAPI passes HTTP exceptions on (others become a 400), so the
    error handlers answer it like any other 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


class _Timing:
    """Request latency by route template (``/v1/users/{user_id}/recommendations``, not each user's path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.latency.labels(scope["method"], path, str(status)).observe(time.perf_counter() - started)
