"""``POST /v1/events``: a batch of events, stored leniently and idempotently by ``event_id``.

The body is parsed with orjson and handed to the store's validation as plain dicts: the store checks every
record anyway (and names each bad one), so a pydantic pass over 500 records first would only cost time.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from tastemaker.api.auth import require
from tastemaker.api.errors import ApiError
from tastemaker.api.routes._deps import ServerDep, check_batch, record_errors
from tastemaker.api.schemas import ErrorBody, EventBatch, IngestResponse

router = APIRouter(prefix="/v1", tags=["events"], responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}})
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": EventBatch.model_json_schema()}}}}


@router.post("/events", response_model=IngestResponse, dependencies=[Depends(require("ingest"))], openapi_extra=_BODY)
async def post_events(request: Request, server: ServerDep) -> IngestResponse:
    """Store a batch of events (``{"events": [...]}``). Valid events are committed before the response is
    sent; an event whose id is already stored counts as a duplicate and is stored once; each invalid record
    is named with its index, field and reason, and the others are stored anyway. Send a list's
    ``request_id`` with the events it caused, so they are attributed to it."""
    events = _events(await request.body())
    check_batch(len(events), server.settings.limits.max_batch, "events")
    result = await run_in_threadpool(server.store.ingest_events, events, mode="lenient")
    server.metrics.events.labels("accepted").inc(result.accepted)
    server.metrics.events.labels("duplicate").inc(result.duplicates)
    server.metrics.events.labels("rejected").inc(result.rejected)
    return IngestResponse(accepted=result.accepted, duplicate=result.duplicates, rejected=result.rejected,
                          errors=record_errors(result.errors), event_ids=result.event_ids)  # fmt: skip


def _events(body: bytes) -> list[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError.invalid("(body)", f"not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError.invalid("(body)", 'expected an object {"events": [...]}')
    errors = [{"index": None, "field": str(k), "reason": "unknown field; the body holds only 'events'"}
              for k in sorted(set(payload) - {"events"})]  # fmt: skip
    events = payload.get("events")
    if not isinstance(events, list):
        errors.append({"index": None, "field": "events", "reason": "required: a list of event objects"})
    if errors:
        shown = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:3])
        raise ApiError(422, f"invalid request: {shown}", errors)
    return events
