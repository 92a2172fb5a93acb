"""Request and response bodies of the HTTP API (separate from the library's own types)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorBody", "EventBatch", "IngestResponse", "ItemBatch", "ItemPatch", "ListResponse", "ModelsResponse",
    "RecommendationItem", "RecommendationsResponse", "UpsertResponse", "UserBatch",
]  # fmt: skip

_EVENT = {"event_id": "e-123", "user_id": "u1", "item_id": "m1", "type": "click",
          "timestamp": "2026-11-27T20:00:00Z", "context": {"device": "mobile"}, "request_id": "9f1c…"}  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventBatch(_Body):
    """Events to store. Each is checked on its own: the good ones are stored, the bad ones reported."""

    events: list[dict[str, Any]] = Field(json_schema_extra={"examples": [[_EVENT]]})


class FieldError(BaseModel):
    index: int | None = Field(None, description="the record's position in the batch (batch bodies)")
    field: str
    reason: str


class IngestResponse(BaseModel):
    accepted: int = Field(description="events stored by this call (committed before the response was sent)")
    duplicate: int = Field(description="events whose id was already stored, or repeated in the batch")
    rejected: int
    errors: list[FieldError]
    event_ids: list[str | None] = Field(description="each record's id (generated when not sent); null if rejected")


class ItemBatch(_Body):
    items: list[dict[str, Any]] = Field(
        json_schema_extra={"examples": [[{"item_id": "m1", "title": "Heat", "categories": ["Crime"],
                                          "provider": "studio-9", "created_at": "1995-12-15T00:00:00Z"}]]}
    )  # fmt: skip


class ItemPatch(_Body):
    """Fields to change; those left out keep their stored values."""

    title: str | None = None
    text: str | None = None
    categories: list[str] | None = None
    provider: str | None = None
    created_at: str | int | float | None = None
    available: bool | None = None
    attributes: dict[str, Any] | None = None


class UserBatch(_Body):
    users: list[dict[str, Any]] = Field(
        json_schema_extra={"examples": [[{"user_id": "u1", "attributes": {"preferred_categories": ["Jazz"]}}]]}
    )


class UpsertResponse(BaseModel):
    accepted: int
    rejected: int
    errors: list[FieldError]


class RecommendationItem(BaseModel):
    item_id: str
    score: float | None = Field(description="the ranker's score (popularity share for popular lists)")
    position: int = Field(description="1-based place in the list")
    source: str = Field(description="the candidate source that proposed it most strongly, 'exploration', 'popular'")
    reason: str = Field(description="why, in words a person can read")
    propensity: float = Field(description="the chance the policy put this item at this position")


class RecommendationsResponse(BaseModel):
    request_id: str = Field(description="send it back with events caused by this list (attribution)")
    variant: str = Field(description="'personalized' or 'control' (the holdout, served popularity)")
    model_version: str = Field(description="the model artifact, or 'popularity'")
    items: list[RecommendationItem]


class ListResponse(BaseModel):
    model_version: str
    items: list[RecommendationItem]


class ModelInfo(BaseModel):
    version: str
    created_at: str | None
    config_hash: str | None
    offline_metrics: dict[str, Any]


class ModelsResponse(BaseModel):
    current: str | None = Field(description="the version the registry points at")
    serving: str | None = Field(description="the version this server serves (null: popularity)")
    error: str | None = Field(description="why no model is served, when none is")
    versions: list[ModelInfo]


class ErrorBody(BaseModel):
    status: int
    message: str
    errors: list[FieldError] = []
