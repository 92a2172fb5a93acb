"""Dependencies the routers share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from urllib.parse import unquote

from fastapi import Depends, Path, Request

from tastemaker.api.errors import ApiError

if TYPE_CHECKING:
    from tastemaker.api.app import Server


#: an id in a path: what the store can hold (no control characters, not blank)
ID_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
PathId = Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN)]


def encoded_tail(request: Request, tail: str) -> bool:
    """Whether a path's last part ``/TAIL`` (a route's own segment, as in ``/v1/items/{id}/similar``) was sent
    inside the id instead (``%2FTAIL``: the server decodes ``%2F`` before routing, the raw path tells)."""
    raw = request.scope.get("raw_path")
    return bool(raw) and unquote(raw.decode("latin-1").rsplit("/", 1)[-1]) != tail


def printable(text: str) -> bool:
    """No control characters (the store refuses them in ids; JSON columns refuse NUL)."""
    return not any(ord(c) < 32 or ord(c) == 127 for c in text)


async def _server(request: Request) -> Server:  # async: FastAPI would run a plain function on a worker thread
    return request.app.state.server


ServerDep = Annotated["Server", Depends(_server)]


def check_batch(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise ApiError(413, f"a batch of {size} {what} is over the limit of {limit} per request")
    if size == 0:
        raise ApiError.invalid(what, "an empty list")


def check_k(k: int, server: Server) -> None:
    """A list length within the server's limit (422 over it)."""
    if k > server.settings.limits.max_k:
        raise ApiError.invalid("k", f"{k} is over the limit of {server.settings.limits.max_k}")


def record_errors(errors: list) -> list[dict]:
    return [{"index": e.index, "field": e.field, "reason": e.reason} for e in errors]
