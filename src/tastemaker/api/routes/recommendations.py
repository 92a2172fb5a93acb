"""A user's list, and the popular list."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tastemaker.api.auth import require
from tastemaker.api.errors import ApiError
from tastemaker.api.routes._deps import PathId, ServerDep, check_k, encoded_tail, printable
from tastemaker.api.routes.users import get_user
from tastemaker.api.schemas import ErrorBody, ListResponse, RecommendationItem, RecommendationsResponse
from tastemaker.serving.service import ListItem, ListRequest, context_value

router = APIRouter(prefix="/v1", tags=["recommendations"], dependencies=[Depends(require("recommend"))],
                   responses={422: {"model": ErrorBody},
                              503: {"model": ErrorBody, "description": "the server is behind its load (the request "
                                    "waited over list_wait_seconds for its turn) or the store is unavailable; "
                                    "retry after Retry-After"}})  # fmt: skip
_CONTEXT = "context."
_EXCLUDE = "item ids never to show, repeated or comma-separated (so an id holding a comma cannot be excluded here)"
_ITEM_FIELDS = tuple(RecommendationItem.model_fields)  # what the documented item carries, in its order


@router.get("/users/{user_id:path}/recommendations", response_model=RecommendationsResponse)
async def recommendations(
    request: Request,
    user_id: PathId,
    server: ServerDep,
    k: Annotated[int, Query(ge=1, description="list length (at most the server's limit, 500)")] = 30,
    category: Annotated[str | None, Query(max_length=128, description="only items of this category")] = None,
    exclude: Annotated[list[str] | None, Query(description=_EXCLUDE)] = None,
) -> Response:
    """The user's ranked list. Users in the holdout (``variant = control``) get popularity through the same
    filters. Context goes in ``context.KEY=VALUE`` parameters (``context.device=mobile``; numeric keys the
    model declared). Each item carries its propensity; the response is written to the exposure log."""
    if encoded_tail(request, "recommendations"):  # ".../X%2Frecommendations": the user "X/recommendations"
        whole = f"{user_id}/recommendations"
        if len(whole) > 256:
            raise ApiError.invalid("user_id", "at most 256 characters")
        return JSONResponse(jsonable_encoder(await run_in_threadpool(get_user, whole, server)))
    check_k(k, server)
    limits = server.settings.limits
    excluded = tuple(x for value in exclude or () for x in value.split(",") if x)
    if len(excluded) > limits.max_exclude:
        raise ApiError.invalid("exclude", f"{len(excluded)} ids; at most {limits.max_exclude}")
    if any(len(x) > limits.max_id_length or not printable(x) for x in excluded):
        raise ApiError.invalid("exclude", f"ids of at most {limits.max_id_length} characters, no control characters")
    if category is not None and not printable(category):
        raise ApiError.invalid("category", "no control characters")
    context = _context(request, limits.max_context_keys)
    # the list is computed by the batcher's thread; the event loop waits for it without holding a worker thread
    served = await asyncio.wrap_future(server.batcher.submit(ListRequest(user_id, k, category, excluded, context)))
    response = _json({"request_id": served.request_id, "variant": served.variant,
                      "model_version": served.model_version, "items": _items(served.items)})  # fmt: skip
    settings = server.settings
    if settings.workers > 1 and 0 < settings.rebalance_pending <= server.batcher.pending:
        # this worker is behind: the client's next request should go to whichever worker accepts it first (the
        # workers share the listening socket) rather than wait here on a kept-alive connection
        response.headers["Connection"] = "close"
        server.metrics.rebalanced.inc()
    return response


@router.get("/popular", response_model=ListResponse)
def popular(
    server: ServerDep,
    k: Annotated[int, Query(ge=1)] = 30,
    category: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """The most engaged-with available items of the last ``popularity_days`` (of ``category``), through the
    served model's filters (blocked items, providers and categories, item age)."""
    check_k(k, server)
    return _json({"model_version": "popularity", "items": _items(server.recommender.popular(k, category))})


# The lists are typed dataclasses already: encoding them once beats FastAPI validating them against the
# response model (again, after the route built it) and then encoding: 0.071 -> 0.022 ms for 30 items.
# The models stay on the routes for the OpenAPI document; ``_ITEM_FIELDS`` keeps the body to what they say.
def _items(items: Sequence[ListItem]) -> list[dict[str, Any]]:
    return [{name: getattr(item, name) for name in _ITEM_FIELDS} for item in items]


def _json(body: dict[str, Any]) -> Response:
    # orjson writes NaN and infinities as null, as pydantic's JSON does; numpy scalars as numbers
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _context(request: Request, max_keys: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if not key.startswith(_CONTEXT):
            continue
        name = key[len(_CONTEXT) :]
        if not name or len(name) > 64 or len(value) > 256 or not printable(name + value):
            raise ApiError.invalid(key[:80].encode("unicode_escape").decode(),
                                   "context names of 1–64 characters, values of at most 256, no control characters")
        found[name] = context_value(name, value)
    if len(found) > max_keys:
        raise ApiError.invalid("context", f"{len(found)} keys; at most {max_keys}")
    return found
