"""Dependencies the routers share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from tastemaker.api.errors import ApiError

if TYPE_CHECKING:
    from tastemaker.api.app import Server


def _server(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated["Server", Depends(_server)]


def check_batch(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise ApiError(413, f"a batch of {size} {what} is over the limit of {limit} per request")
    if size == 0:
        raise ApiError.invalid(what, "an empty list")


def record_errors(errors: list) -> list[dict]:
    return [{"index": e.index, "field": e.field, "reason": e.reason} for e in errors]
