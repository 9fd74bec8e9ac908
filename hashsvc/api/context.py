"""Per-request context: request id, structured access log, metrics, last-resort errors.

One pure-ASGI middleware (no BaseHTTPMiddleware: it costs a task and a queue per
request) wraps every request:

- takes the caller's ``X-Request-ID`` when it is a plain token, else makes one, and
  returns it in the ``X-Request-ID`` header and in every JSON body;
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
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashsvc.api.errors import error_body
from hashsvc.api.limits import BodyTooLarge
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
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = _incoming_id(scope) or uuid.uuid4().hex
        token = _REQUEST_ID.set(rid)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
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
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                extra = scope.get("state", {}).get("log", {})
                access_log.info(
                    "request",
                    extra={
                        "fields": {
                            "request_id": rid,
                            "method": method,
                            "route": template,
                            "status": status,
                            "ms": round(elapsed * 1000, 2),
                            **extra,
                        }
                    },
                )
            _REQUEST_ID.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else None
    return None


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
        return json.dumps(out, default=str)


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
