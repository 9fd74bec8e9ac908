"""Per-request context: request id, structured access log, metrics, last-resort errors.

One pure-ASGI middleware (no BaseHTTPMiddleware: it costs a task and a queue per
request) wraps every request:

- takes the caller's ``X-Request-ID`` when it is a plain token, else makes one, and
  returns it in the ``X-Request-ID`` header and in every JSON body;
- sheds the request (503) when the worker is at `max_in_flight`, and caps its body
  (413): both are described in limits.py;
- logs one JSON line per request: method, route *template* (``/v1/reports/{report_id}``,
  never a raw path), status, duration, key id, request id. Handlers may add fields via
  `annotate` (verdict, report id) but never hashes, file names or list contents;
- counts the request and its latency in Prometheus, labelled by route template;
- turns anything that escaped the exception handlers into a JSON 500 (or the 413 that
  the body cap raises outside routing), so no traceback or HTML reaches a caller.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashsvc.api.errors import error_body
from hashsvc.api.limits import BodyTooLarge, shed
from hashsvc.api.metrics import Metrics

log = logging.getLogger("hashsvc.api")
access_log = logging.getLogger("hashsvc.api.access")

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id() -> str:
    return _REQUEST_ID.get()


def annotate(scope_or_request: Any, **fields: Any) -> None:
    """Add fields to this request's access-log line (verdict, report id, key id)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    scope.setdefault("state", {}).setdefault("log", {}).update(fields)


class RequestContextMiddleware:
    """Request id, overload shedding, the body cap, metrics and the access log, in one
    pure-ASGI layer: each layer costs every request a coroutine frame and closures, and
    the headers are read once here for all of them (see limits.py for what the cap and
    the shedding promise; their order is the order they apply in: a shed request is
    logged and counted but its body is never read)."""

    #: never shed: an orchestrator must still see the worker alive, an operator the
    #: overload (limits.py)
    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        max_bytes: int,
        video_max_bytes: int | None = None,
        max_in_flight: int = 0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.video_max_bytes = video_max_bytes or max_bytes
        self.max_in_flight = max_in_flight  # 0: no shedding
        self.in_flight = 0  # the event loop is single-threaded: a plain count is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming: bytes | None = None
        content_type: bytes | None = None
        length: bytes | None = None
        for name, value in scope.get("headers", ()):  # the first of each counts
            if name == b"x-request-id":
                if incoming is None:
                    incoming = value
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"content-length" and length is None:
                length = value
        rid = _sane_id(incoming) or _new_id()
        token = _REQUEST_ID.set(rid)
        status = 500
        started = False
        id_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        counted = self.max_in_flight > 0 and scope["path"] not in self.EXEMPT
        try:
            if counted and self.in_flight >= self.max_in_flight:
                await shed(send_with_id)
                return
            limit = self.max_bytes
            if content_type is not None and bytes(content_type).strip().lower().startswith(
                b"video/"
            ):
                limit = self.video_max_bytes
            received = 0

            async def capped() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            if counted:
                self.in_flight += 1
            try:
                declared = _int_or_none(length)
                if declared is not None and declared > limit:
                    raise BodyTooLarge(limit)  # refused before a byte of the body is read
                await self.app(scope, capped, send_with_id)
            finally:
                if counted:
                    self.in_flight -= 1
        except BodyTooLarge as exc:
            if not started:
                await _send_json(send_with_id, 413, error_body("body_too_large", exc.detail))
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid})
            if not started:
                await _send_json(send_with_id, 500, error_body("internal", "internal error"))
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.request_done(method, template, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                extra = scope.get("state", {}).get("log", {})
                fields = {
                    "request_id": rid,
                    "method": method,
                    "route": template,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    **extra,
                }
                # makeRecord + handle is what `info()` does, less its walk up the stack
                # for the caller's file and line, which the JSON line does not show
                access_log.handle(
                    access_log.makeRecord(
                        access_log.name, logging.INFO, "", 0, "request", (), None,
                        extra={"fields": fields},
                    )
                )  # fmt: skip
            _REQUEST_ID.reset(token)


def _sane_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1")
    return text if _SANE_ID.fullmatch(text) else None


def _new_id() -> str:
    """A random UUID4 as 32 hex digits (what ``uuid.uuid4().hex`` gives, at a third of
    the cost)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


def _int_or_none(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the server rejects a malformed one before we run


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or _REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _LOG_JSON.encode(out)


#: `json.dumps(out, default=str)` without building an encoder per line
_LOG_JSON = json.JSONEncoder(default=str)


#: how `hashsvc serve --log-level` reaches the worker processes' app factory
LOG_LEVEL_ENV = "HASHSVC_LOG_LEVEL"


def log_config(level: str = "info") -> dict[str, Any]:
    """A logging dictConfig for uvicorn and our loggers: JSON lines on stderr."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "hashsvc.api.context.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "hashsvc": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(level: str = "info") -> None:
    import logging.config

    logging.config.dictConfig(log_config(level))
