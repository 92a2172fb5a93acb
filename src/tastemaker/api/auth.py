"""API keys and scopes. ``Authorization: Bearer KEY``; a missing or unknown key is a 401, a key without
the route's scope a 403. Keys are compared in constant time (``hmac.compare_digest``) against every
configured key, and never logged. With no key configured every route is open: the server then binds to
127.0.0.1 only (see :func:`tastemaker.api.app.check_bind`)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request

from tastemaker.api.errors import ApiError
from tastemaker.serving.settings import ApiKey

__all__ = ["Keys", "require"]


class Keys:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = [(k.key.get_secret_value().encode(), k.scopes) for k in keys]

    @property
    def open(self) -> bool:
        return not self._keys

    def scopes(self, sent: str) -> frozenset[str] | None:
        """The scopes of the key ``sent``, None if it is not a key; every key is compared (no early exit)."""
        given, found = sent.encode(), None
        for key, scopes in self._keys:
            if hmac.compare_digest(given, key):
                found = scopes
        return found


def require(scope: str) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: the request's key must carry ``scope``."""

    async def check(request: Request) -> None:  # async: FastAPI would run a plain function on a worker thread
        keys: Keys = request.app.state.keys
        if keys.open:
            return
        header = request.headers.get("authorization", "")
        kind, _, sent = header.partition(" ")
        if kind.lower() != "bearer" or not sent.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        scopes = keys.scopes(sent.strip())
        if scopes is None:
            raise ApiError(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes:
            raise ApiError(403, f"this API key lacks the {scope!r} scope this route needs")

    check.scope = scope  # type: ignore[attr-defined]  # read by tests that enumerate protected routes
    return check
