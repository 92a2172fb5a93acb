"""Users: batch upsert with attributes (onboarding answers), and read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from tastemaker.api.auth import require
from tastemaker.api.errors import ApiError
from tastemaker.api.routes._deps import PathId, ServerDep, check_batch, record_errors
from tastemaker.api.routes.items import _public
from tastemaker.api.schemas import ErrorBody, UpsertResponse, UserBatch

router = APIRouter(prefix="/v1", tags=["users"], responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})


@router.post("/users", response_model=UpsertResponse, dependencies=[Depends(require("ingest"))])
def post_users(batch: UserBatch, server: ServerDep) -> UpsertResponse:
    """Insert or update users; fields a record leaves out keep their stored values."""
    check_batch(len(batch.users), server.settings.limits.max_batch, "users")
    result = server.store.upsert_users(batch.users, mode="lenient")
    return UpsertResponse(accepted=result.accepted, rejected=result.rejected, errors=record_errors(result.errors))


@router.get("/users/{user_id:path}", dependencies=[Depends(require("recommend"))])
def get_user(user_id: PathId, server: ServerDep) -> dict[str, Any]:
    found = server.store.get_users([user_id])
    if not found:
        raise ApiError(404, f"unknown user {user_id!r}")
    return _public(found[0])
