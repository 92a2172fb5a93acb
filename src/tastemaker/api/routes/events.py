"""``POST /v1/events``: a batch of events, stored leniently and idempotently by ``event_id``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tastemaker.api.auth import require
from tastemaker.api.routes._deps import ServerDep, check_batch, record_errors
from tastemaker.api.schemas import ErrorBody, EventBatch, IngestResponse

router = APIRouter(prefix="/v1", tags=["events"], responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}})


@router.post("/events", response_model=IngestResponse, dependencies=[Depends(require("ingest"))])
def post_events(batch: EventBatch, server: ServerDep) -> IngestResponse:
    """Store a batch of events. Valid events are committed before the response is sent; an event whose id is
    already stored counts as a duplicate and is stored once; each invalid record is named with its index,
    field and reason, and the others are stored anyway. Send a list's ``request_id`` with the events it
    caused, so they are attributed to it."""
    check_batch(len(batch.events), server.settings.limits.max_batch, "events")
    result = server.store.ingest_events(batch.events, mode="lenient")
    server.metrics.events.labels("accepted").inc(result.accepted)
    server.metrics.events.labels("duplicate").inc(result.duplicates)
    server.metrics.events.labels("rejected").inc(result.rejected)
    return IngestResponse(accepted=result.accepted, duplicate=result.duplicates, rejected=result.rejected,
                          errors=record_errors(result.errors), event_ids=result.event_ids)  # fmt: skip
