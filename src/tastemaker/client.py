"""A Python client of the HTTP API: ``Client(base_url, api_key)``, one method per endpoint, typed results.

Every answer other than a success raises an :class:`ApiError` subclass chosen by status (401
:class:`AuthenticationError`, 403 :class:`PermissionDeniedError`, 404 :class:`NotFoundError`, 409
:class:`ConflictError`, 413 :class:`RequestTooLargeError`, 422 :class:`InvalidRequestError`, 5xx
:class:`ServerError`) carrying the body's ``status``, ``message`` and per-field ``errors``; a server that
cannot be reached raises :class:`ApiConnectionError`. The API key is sent as ``Authorization: Bearer KEY``
and appears in no message or repr.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tastemaker.errors import TastemakerError

__all__ = [
    "ApiConnectionError", "ApiError", "AuthenticationError", "Client", "ConflictError", "FieldError",
    "IngestResult", "InvalidRequestError", "ItemList", "ModelInfo", "Models", "NotFoundError",
    "PermissionDeniedError", "Recommendations", "RecommendedItem", "RequestTooLargeError", "ServerError",
    "UpsertResult",
]  # fmt: skip

Record = Mapping[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One problem the server found: the record's index in the batch (None outside batches), field, reason."""

    index: int | None
    field: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """Outcome of ``send_events``; ``event_ids[i]`` is record i's id (generated if not sent), None if rejected."""

    accepted: int
    duplicate: int
    rejected: int
    errors: tuple[FieldError, ...]
    event_ids: tuple[str | None, ...]


@dataclass(frozen=True)
class UpsertResult:
    accepted: int
    rejected: int
    errors: tuple[FieldError, ...]


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float | None
    position: int
    source: str
    reason: str
    propensity: float


@dataclass(frozen=True)
class Recommendations:
    """A user's list; send ``request_id`` back with the events it caused so they are attributed to it."""

    request_id: str
    variant: str
    model_version: str
    items: tuple[RecommendedItem, ...]


@dataclass(frozen=True)
class ItemList:
    """Similar or popular items; ``model_version`` is ``'popularity'`` when no model ranked them."""

    model_version: str
    items: tuple[RecommendedItem, ...]


@dataclass(frozen=True)
class ModelInfo:
    version: str
    created_at: str | None
    config_hash: str | None
    offline_metrics: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Models:
    """The registry's ``current`` version, the one this server is ``serving`` (None: popularity, ``error``
    says why) and every stored version, oldest first."""

    current: str | None
    serving: str | None
    error: str | None
    versions: tuple[ModelInfo, ...]


class ApiError(TastemakerError):
    """The server answered with an error status; ``errors`` names the fields it refused, when it did."""

    def __init__(self, status: int, message: str, errors: Iterable[FieldError] = ()) -> None:
        self.status, self.message, self.errors = status, message, tuple(errors)
        super().__init__(f"{message} (HTTP {status})")

    def __reduce__(self) -> tuple[Any, ...]:  # the default would call __init__ with the formatted text only
        return type(self), (self.status, self.message, self.errors)


class AuthenticationError(ApiError):
    """401: no API key was sent, or one the server does not know."""


class PermissionDeniedError(ApiError):
    """403: the API key lacks the scope the route needs."""


class NotFoundError(ApiError):
    """404: no such item, user or model version."""


class ConflictError(ApiError):
    """409: the registry cannot do that now (a rollback with nothing to roll back to, an unservable model)."""


class RequestTooLargeError(ApiError):
    """413: a batch over the server's limit, or a body over its byte limit."""


class InvalidRequestError(ApiError):
    """422: a parameter or body field is invalid; ``errors`` names them."""


class ServerError(ApiError):
    """5xx: the server failed or its store is unavailable; trying again later may succeed."""


class ApiConnectionError(TastemakerError):
    """No answer: the server cannot be reached, or it did not answer within the timeout."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError,
    413: RequestTooLargeError, 422: InvalidRequestError,
}  # fmt: skip


class Client:
    """The tastemaker HTTP API. Usable as a context manager; ``close()`` releases its connections.

    ``transport`` replaces httpx's network transport (``httpx.MockTransport``, a proxy, retries).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # events, items, users

    def send_events(self, events: Iterable[Record]) -> IngestResult:
        """Store events; the good ones are committed, each bad one is named in ``errors`` (scope ``ingest``)."""
        body = self._call("POST", "/v1/events", body={"events": list(events)})
        return IngestResult(body["accepted"], body["duplicate"], body["rejected"], _field_errors(body["errors"]),
                            tuple(body["event_ids"]))  # fmt: skip

    def upsert_items(self, items: Iterable[Record]) -> UpsertResult:
        """Insert or update items; fields a record leaves out keep their stored values (scope ``ingest``)."""
        return _upsert(self._call("POST", "/v1/items", body={"items": list(items)}))

    def get_item(self, item_id: str) -> dict[str, Any]:
        return self._call("GET", _path("/v1/items", item_id))

    def update_item(self, item_id: str, **fields: Any) -> dict[str, Any]:
        """Change some of an item's fields (title, text, categories, provider, created_at, available,
        attributes); returns the item as stored."""
        return self._call("PATCH", _path("/v1/items", item_id), body=fields)

    def delete_item(self, item_id: str) -> dict[str, Any]:
        """Mark an item unavailable (its history is kept); returns the item as stored."""
        return self._call("DELETE", _path("/v1/items", item_id))

    def upsert_users(self, users: Iterable[Record]) -> UpsertResult:
        return _upsert(self._call("POST", "/v1/users", body={"users": list(users)}))

    def get_user(self, user_id: str) -> dict[str, Any]:
        return self._call("GET", _path("/v1/users", user_id))

    # lists

    def recommendations(self, user_id: str, k: int = 30, *, category: str | None = None, exclude: Iterable[str] = (),
                        context: Mapping[str, object] | None = None) -> Recommendations:  # fmt: skip
        """The user's ranked list of ``k`` items; ``context`` is sent as ``context.KEY=VALUE`` parameters."""
        if isinstance(exclude, str):  # one id, not its characters
            exclude = (exclude,)
        exclude = list(exclude)
        if any("," in item for item in exclude):  # the server splits each value on commas
            raise ValueError(f"ids holding a comma cannot be excluded through the query: {exclude!r}")
        params: list[tuple[str, str | int]] = [("k", k)]
        params += [("category", category)] if category is not None else []
        params += [("exclude", item) for item in exclude]
        params += [(f"context.{key}", str(value)) for key, value in (context or {}).items()]
        body = self._call("GET", _path("/v1/users", user_id, "recommendations"), params=params)
        return Recommendations(body["request_id"], body["variant"], body["model_version"], _items(body["items"]))

    def similar(self, item_id: str, k: int = 10) -> ItemList:
        body = self._call("GET", _path("/v1/items", item_id, "similar"), params={"k": k})
        return ItemList(body["model_version"], _items(body["items"]))

    def popular(self, k: int = 30, category: str | None = None) -> ItemList:
        params: dict[str, str | int] = {"k": k} | ({"category": category} if category is not None else {})
        body = self._call("GET", "/v1/popular", params=params)
        return ItemList(body["model_version"], _items(body["items"]))

    # models (scope ``admin``)

    def models(self) -> Models:
        return _models(self._call("GET", "/v1/models"))

    def promote(self, version: str) -> Models:
        """Serve ``version`` from now on; this server has swapped to it when this returns."""
        return _models(self._call("POST", _path("/v1/models", version, "promote")))

    def rollback(self) -> Models:
        """Serve the version promoted before the current one (:class:`ConflictError` if there is none)."""
        return _models(self._call("POST", "/v1/models/rollback"))

    # operations

    def health(self) -> bool:
        """True when the server answers its liveness probe; False when it answers otherwise or not at all."""
        try:
            response = self._http.get("/healthz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def ready(self) -> dict[str, Any]:
        """``{"ready", "model_version", "reason"}``; a server whose store does not answer is not ready (its
        503 is returned, not raised)."""
        response = self._send("GET", "/readyz")
        if response.status_code == 503:
            with suppress(ValueError):
                body = response.json()
                if isinstance(body, dict) and "ready" in body:
                    return body
        return self._check(response)

    def metrics(self) -> str:
        """The Prometheus text exposition (scope ``admin``)."""
        response = self._send("GET", "/metrics")
        _raise_for(response)
        return response.text

    # plumbing

    def _call(self, method: str, path: str, *, params: Any = None, body: object = None) -> Any:
        return self._check(self._send(method, path, params=params, body=body))

    def _check(self, response: httpx.Response) -> Any:
        _raise_for(response)
        return _json(response)

    def _send(self, method: str, path: str, *, params: Any = None, body: object = None) -> httpx.Response:
        content = None if body is None else json.dumps(body, default=_encode).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise ApiConnectionError(f"{self.base_url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})") from exc


def _path(prefix: str, ident: str, *rest: str) -> str:
    """``prefix/IDENT/rest``, the id escaped whole (``/``, ``?``, ``#``, ``..`` cannot change the route)."""
    if not isinstance(ident, str) or not ident:
        raise ValueError(f"an id must be a non-empty string, got {ident!r}")
    escaped = quote(ident, safe="")
    if escaped in (".", ".."):  # httpx would resolve these as path segments
        escaped = escaped.replace(".", "%2E")
    return "/".join((prefix, escaped, *rest))


def _encode(value: object) -> object:
    """JSON for what ``json`` cannot write itself: datetimes and dates as ISO 8601 (naive means UTC)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON: {value!r}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, f"the server's answer is not JSON: {response.text[:200]!r}") from None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message, errors = body["message"], _field_errors(body.get("errors") or [])
    else:  # not the API's error body (a proxy's page, say)
        message, errors = response.text[:200] or response.reason_phrase, ()
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    raise kind(status, message, errors)


def _field_errors(rows: list[dict[str, Any]]) -> tuple[FieldError, ...]:
    return tuple(FieldError(r.get("index"), r.get("field", ""), r.get("reason", "")) for r in rows)


def _items(rows: list[dict[str, Any]]) -> tuple[RecommendedItem, ...]:
    return tuple(
        RecommendedItem(r["item_id"], r["score"], r["position"], r["source"], r["reason"], r["propensity"])
        for r in rows
    )


def _upsert(body: dict[str, Any]) -> UpsertResult:
    return UpsertResult(body["accepted"], body["rejected"], _field_errors(body["errors"]))


def _models(body: dict[str, Any]) -> Models:
    versions = tuple(
        ModelInfo(v["version"], v.get("created_at"), v.get("config_hash"), v.get("offline_metrics") or {})
        for v in body["versions"]
    )
    return Models(body["current"], body["serving"], body.get("error"), versions)
