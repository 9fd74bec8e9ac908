"""hashsvc exceptions -> HTTP status codes and one JSON error shape. Only here.

Every error body is ``{"error": <code>, "detail": <human text>, "request_id": ...}``,
plus ``problems`` (bad lines of a list upload) or ``errors`` (request validation). The
validation errors drop pydantic's ``input`` echo: a body may hold hashes, and an error
response has no reason to repeat them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from hashsvc.errors import (
    ConfigError,
    Conflict,
    HashListError,
    InvalidHash,
    InvalidValue,
    MediaRejected,
    NotFound,
    SearchError,
    StoreError,
)

#: exception class -> (status, error code); the first matching class wins
_MAP: tuple[tuple[type[Exception], int, str], ...] = (
    (MediaRejected, 422, "media_rejected"),
    (InvalidHash, 422, "invalid_hash"),
    (HashListError, 422, "invalid_list"),
    (InvalidValue, 422, "invalid_value"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (StoreError, 503, "store_unavailable"),
    (SearchError, 503, "index_unavailable"),
    (ConfigError, 500, "misconfigured"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "not_ready",
}


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    from hashsvc.api.context import request_id

    return {"error": code, "detail": detail, "request_id": request_id(), **extra}


def status_for(exc: Exception) -> tuple[int, str]:
    for cls, status, code in _MAP:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    for cls, _, _ in _MAP:
        app.add_exception_handler(cls, _hashsvc_error)


async def _hashsvc_error(request: Request, exc: Exception) -> JSONResponse:
    status, code = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, HashListError):
        extra["problems"] = [{"line": p.line, "message": p.message} for p in exc.problems[:1000]]
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_body(code, str(exc), **extra), status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and not isinstance(exc, ApiError):  # FastAPI's body parsing
        refused = await _key_check_first(request)
        if refused is not None:
            return refused
    code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    refused = await _key_check_first(request)
    if refused is not None:
        return refused
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(x) for x in first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    return JSONResponse(error_body("invalid_request", detail, errors=errors), 422)


async def _key_check_first(request: Request) -> JSONResponse | None:
    """The 401/403/429 a request gets before its 400/422, or None.

    FastAPI reads and JSON-decodes a route's body before it runs the route's dependencies,
    so a malformed body (not JSON, not UTF-8) would be answered 400/422 before the key was
    checked: without a key a caller would learn how its body was parsed. When the key
    check has not run yet for this request (it annotates the key id), it runs here."""
    from hashsvc.api.auth import KeyAuth, authenticate

    if "key_id" in request.scope.get("state", {}).get("log", {}):
        return None  # authenticated already: the error came after the key check
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return None
    needs_key, scopes, todo = False, set(), list(route.dependant.dependencies)
    while todo:
        dep = todo.pop()
        needs_key |= isinstance(dep.call, KeyAuth)
        scopes |= set(dep.own_oauth_scopes or [])
        todo.extend(dep.dependencies)
    if not needs_key:
        return None
    try:
        await authenticate(request, sorted(scopes))
    except ApiError as e:
        return await _http_error(request, e)
    return None


class ApiError(StarletteHTTPException):
    """An HTTP error raised by our own code, with a stable machine-readable `code`."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, detail, headers)
        self.code = code
