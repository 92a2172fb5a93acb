"""The model registry: list, promote (the server hot-swaps to it), roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from tastemaker.api.auth import require
from tastemaker.api.errors import ApiError
from tastemaker.api.routes._deps import ServerDep
from tastemaker.api.schemas import ErrorBody, ModelsResponse
from tastemaker.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require("admin"))],
                   responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})  # fmt: skip


@router.get("/models", response_model=ModelsResponse)
def list_models(server: ServerDep) -> ModelsResponse:
    return _state(server)


@router.post("/models/{version}/promote", response_model=ModelsResponse)
def promote(version: Annotated[str, Path(min_length=1, max_length=128)], server: ServerDep) -> ModelsResponse:
    """Serve ``version`` from now on: this server swaps to it before answering (others within their refresh
    interval). Requests in flight finish on the model they began with."""
    if version not in {a.version for a in server.registry.versions()}:
        raise ApiError(404, f"unknown model version {version!r}")
    server.registry.promote(version)
    return _swapped(server)


@router.post("/models/rollback", response_model=ModelsResponse)
def rollback(server: ServerDep) -> ModelsResponse:
    """Serve the version promoted before the current one."""
    try:
        server.registry.rollback()
    except ConfigError as exc:
        raise ApiError(409, str(exc)) from None
    return _swapped(server)


def _swapped(server: ServerDep) -> ModelsResponse:
    slot = server.recommender.slot
    slot.forget_failure()
    server.recommender.refresh()  # the new model starts with the exposure log and the catalog's new items
    server.metrics.serving(slot.current.version if slot.current else None)
    return _state(server)


def _state(server: ServerDep) -> ModelsResponse:
    slot = server.recommender.slot
    versions = [
        {"version": a.version, "created_at": a.manifest.get("created_at"), "config_hash": a.manifest.get("config_hash"),
         "offline_metrics": a.manifest.get("offline_metrics", {})}
        for a in server.registry.versions()
    ]  # fmt: skip
    current = slot.current
    return ModelsResponse(current=server.registry.current, serving=current.version if current else None,
                          error=slot.error, versions=versions)  # fmt: skip
