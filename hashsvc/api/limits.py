"""Request limits: the body-size cap (413) and the per-key rate limit (429).

Neither Starlette nor uvicorn caps a request body by default, so the cap is ours and
is enforced at the ASGI layer for every route: a declared Content-Length above the cap is
refused before a byte of the body is read, and the bytes actually received are counted
as they stream in, so a chunked body (no Content-Length) or a lying Content-Length is
cut off at the cap as well. Nothing is buffered beyond the cap.

The rate limit is a token bucket per key and per worker process: a key may burst up to
its per-minute share and refills continuously. Each of W workers enforces
``rate_limit_per_minute / W``, so across workers a key never gets more than the limit.

CPU-bound work (decoding, hashing, batch searches) runs through `run_cpu_bound`: in a
thread, at most `hash_concurrency` at once per worker, and skipped when the caller hung
up while it waited for a slot, so abandoned requests cannot pile up a backlog that
delays everyone after them (measured: 20 s of stalls after a burst of 128 batches).

Overload is shed per worker by `OverloadMiddleware`: at most `max_in_flight` requests
are being served at once, and the next one gets 503 with ``Retry-After`` at once, before
its body is read or its key checked. Without it nothing bounds the queue: uvicorn starts a
task for every request it accepts, and uploads wait on the CPU limiter, so a burst above
capacity turns into latency that grows for as long as the burst lasts (the rate limit is
per key and does not help against many keys, or one key under its limit on a small box).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashsvc.api.errors import error_body

T = TypeVar("T")


class ClientGone(HTTPException):
    """The caller disconnected before its work started (nginx's 499; nobody reads it)."""

    def __init__(self) -> None:
        super().__init__(499, "client closed the request")


async def run_cpu_bound(request: Request, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a worker thread under the app's CPU limiter, unless the client
    disconnected while waiting for a slot."""
    limiter: anyio.CapacityLimiter = request.app.state.cpu_limiter
    async with limiter:
        if await request.is_disconnected():
            raise ClientGone()
        return await anyio.to_thread.run_sync(fn, *args)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the cap. An HTTPException, so
    FastAPI's own body parsing passes it through unchanged to our handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Caps every body while it streams in: `max_bytes`, or `video_max_bytes` for a raw
    `video/*` body (videos are larger; they are still held in memory only, and the
    hashing concurrency bounds how many are at once)."""

    def __init__(self, app: ASGIApp, max_bytes: int, video_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.video_max_bytes = video_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if _content_type(scope).startswith(b"video/"):
            limit = self.video_max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


class OverloadMiddleware:
    """At most `max_in_flight` requests in this worker; beyond that, an immediate 503.

    A count, not a timer: the event loop is single-threaded, so a plain integer is exact.
    The probes and `/metrics` are not counted and never shed: an orchestrator must still
    see the worker alive, and an operator must see the overload. 0 disables shedding."""

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
    RETRY_AFTER = "1"

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_in_flight <= 0 or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await _shed(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _shed(send: Send) -> None:
    data = json.dumps(
        error_body("overloaded", "the server is at capacity; retry after the given delay")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"retry-after", OverloadMiddleware.RETRY_AFTER.encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _content_type(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bytes(value).strip().lower()
    return b""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed one before we run
    return None


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets keyed by key id. `check` returns 0 when allowed, else the seconds
    to wait. Thread-safe; O(1) per call."""

    def __init__(
        self, per_minute: int, workers: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = per_minute > 0
        self.capacity = max(1.0, math.ceil(per_minute / max(1, workers))) if self.enabled else 0
        self.rate = self.capacity / 60.0  # tokens per second
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, _Bucket] = {}

    def check(self, key_id: int) -> float:
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key_id)
            if b is None:
                b = self._buckets[key_id] = _Bucket(self.capacity, now)
            b.tokens = min(self.capacity, b.tokens + (now - b.at) * self.rate)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate
