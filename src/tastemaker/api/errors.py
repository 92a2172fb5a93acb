"""Every error the API answers, mapped to a status in one place. A body is always
``{"status", "message", "errors": [{"index", "field", "reason"}]}``; nothing internal leaks into it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tastemaker.errors import (
    ArtifactError,
    ConfigError,
    DataFormatError,
    InvalidBatchError,
    OverloadedError,
    StoreError,
    TastemakerError,
)

__all__ = ["ApiError", "install"]

_log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, raised by a route: status, message and optionally the fields."""

    def __init__(self, status: int, message: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors or [], headers

    @classmethod
    def invalid(cls, field: str, reason: str) -> ApiError:
        """A 422 naming one bad field of the request."""
        return cls(422, f"invalid request: {field}: {reason}", [{"index": None, "field": field, "reason": reason}])


def body(status: int, message: str, errors: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "message": message, "errors": errors or []}, status, headers=headers)


def _field(loc: tuple) -> tuple[int | None, str]:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    index = next((int(p) for p in parts[1:2] if p.isdigit()), None) if parts else None
    return index, ".".join(parts) or "(body)"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return body(exc.status, exc.message, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            index, where = _field(tuple(err.get("loc", ())))
            errors.append({"index": index, "field": where, "reason": err.get("msg", "invalid")})
        shown = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:3])
        return body(422, f"invalid request: {shown}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return body(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(TastemakerError)
    async def _library(_: Request, exc: TastemakerError) -> JSONResponse:
        if isinstance(exc, InvalidBatchError):
            errors = [{"index": e.index, "field": e.field, "reason": e.reason} for e in exc.errors]
            return body(422, str(exc), errors)
        if isinstance(exc, ConfigError):
            return body(422, str(exc))
        if isinstance(exc, ArtifactError):
            return body(409, str(exc))
        if isinstance(exc, DataFormatError):  # a file of the server's own (the registry) is unreadable
            _log.error("%s", exc)
            return body(500, str(exc))
        if isinstance(exc, OverloadedError):
            _log.warning("%s", exc)
            return body(503, str(exc), headers={"Retry-After": "1"})
        if isinstance(exc, StoreError):
            _log.error("store error: %s", exc)
            return body(503, "the store is unavailable; try again", headers={"Retry-After": "1"})
        _log.exception("unexpected library error")
        return body(500, "internal error")

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:  # a defect: logged, answered in the usual shape
        _log.exception("unhandled error")
        return body(500, "internal error")
