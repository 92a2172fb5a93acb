"""Items: batch upsert, read, change, delete (= unavailable; history kept), and similar items."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from tastemaker.api.auth import require
from tastemaker.api.errors import ApiError
from tastemaker.api.routes._deps import PathId, ServerDep, check_batch, check_k, encoded_tail, record_errors
from tastemaker.api.schemas import ErrorBody, ItemBatch, ItemPatch, ListResponse, UpsertResponse
from tastemaker.clock import from_us

# ``:path``: an id may hold "/" (sent as %2F, which the server decodes before routing); the similar route
# comes first, so ".../X/similar" is X's similar list, while ".../X%2Fsimilar" (the raw path tells) is the item
# "X/similar"
router = APIRouter(prefix="/v1", tags=["items"], responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})
ItemId = PathId


@router.post("/items", response_model=UpsertResponse, dependencies=[Depends(require("ingest"))])
def post_items(batch: ItemBatch, server: ServerDep) -> UpsertResponse:
    """Insert or update items; fields a record leaves out keep their stored values."""
    check_batch(len(batch.items), server.settings.limits.max_batch, "items")
    result = server.store.upsert_items(batch.items, mode="lenient")
    stored = {str(r.get("item_id")) for i, r in enumerate(batch.items) if i not in {e.index for e in result.errors}}
    server.recommender.catalog.note_items(server.store.get_items(sorted(stored)))
    return UpsertResponse(accepted=result.accepted, rejected=result.rejected, errors=record_errors(result.errors))


@router.get("/items/{item_id:path}/similar", response_model=ListResponse, dependencies=[Depends(require("recommend"))])
def similar(
    request: Request, item_id: ItemId, server: ServerDep, k: Annotated[int, Query(ge=1)] = 10
) -> ListResponse | Response:
    """Items like this one, by the served model (popular items of its category when no model knows it), through
    the served model's filters."""
    if encoded_tail(request, "similar"):  # ".../X%2Fsimilar": the item "X/similar"
        whole = f"{item_id}/similar"
        if len(whole) > 256:
            raise ApiError.invalid("item_id", "at most 256 characters")
        return JSONResponse(jsonable_encoder(_public(_one(server, whole))))
    check_k(k, server)
    found = server.recommender.similar(item_id, k)
    if found is None:
        raise ApiError(404, f"unknown item {item_id!r}")
    version, found = found
    return ListResponse(model_version=version, items=[vars(i) for i in found])


@router.get("/items/{item_id:path}", dependencies=[Depends(require("recommend"))])
def get_item(item_id: ItemId, server: ServerDep) -> dict[str, Any]:
    return _public(_one(server, item_id))


@router.patch("/items/{item_id:path}", dependencies=[Depends(require("ingest"))])
def patch_item(item_id: ItemId, patch: ItemPatch, server: ServerDep) -> dict[str, Any]:
    """Change some of an item's fields."""
    _one(server, item_id)
    server.store.upsert_items([{"item_id": item_id, **patch.model_dump(exclude_unset=True)}])
    return _changed(server, item_id)


@router.delete("/items/{item_id:path}", dependencies=[Depends(require("ingest"))])
def delete_item(item_id: ItemId, server: ServerDep) -> dict[str, Any]:
    """Mark an item unavailable: it is not recommended any more; its events and exposures are kept."""
    _one(server, item_id)
    server.store.upsert_items([{"item_id": item_id, "available": False}])
    return _changed(server, item_id)


def _one(server: Any, item_id: str) -> dict[str, Any]:
    found = server.store.get_items([item_id])
    if not found:
        raise ApiError(404, f"unknown item {item_id!r}")
    return found[0]


def _changed(server: Any, item_id: str) -> dict[str, Any]:
    row = _one(server, item_id)
    server.recommender.catalog.note_items([row])
    return _public(row)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.endswith("_us")}
    out["created_at"] = from_us(row["created_at_us"]).isoformat() if row.get("created_at_us") is not None else None
    out["updated_at"] = from_us(row["updated_at_us"]).isoformat()
    return out
