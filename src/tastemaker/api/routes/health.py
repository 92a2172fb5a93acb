"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tastemaker.api.auth import require
from tastemaker.api.routes._deps import ServerDep
from tastemaker.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(server: ServerDep) -> JSONResponse:
    """Ready when the store answers. ``model_version`` is null while popularity is served (``reason`` says
    why): the server is degraded, not down."""
    slot = server.recommender.slot
    try:
        server.store.ping()
    except StoreError:
        return JSONResponse({"ready": False, "reason": "the store does not answer"}, 503)
    current = slot.current
    return JSONResponse({"ready": True, "model_version": current.version if current else None,
                         "reason": None if current else slot.error})  # fmt: skip


@router.get("/metrics", dependencies=[Depends(require("admin"))])
def metrics(request: Request) -> Response:
    """Prometheus text: request latency by route, events by outcome, fallbacks, the served model."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
