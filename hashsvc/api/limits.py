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

Overload is shed per worker: at most `max_in_flight` requests are being served at once,
and the next one gets 503 with ``Retry-After`` at once, before its body is read or its
key checked. Without it nothing bounds the queue: uvicorn starts a task for every request
it accepts, and uploads wait on the CPU limiter, so a burst above capacity turns into
latency that grows for as long as the burst lasts (the rate limit is per key and does not
help against many keys, or one key under its limit on a small box). The probes and
`/metrics` are not counted and never shed: an orchestrator must still see the worker
alive, and an operator must see the overload. 0 disables shedding.

The cap and the shedding are enforced by `context.RequestContextMiddleware`, the one ASGI
layer that does everything per-request.
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
from starlette.types import Send

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


#: what a shed request is told to wait, in seconds
RETRY_AFTER = "1"


async def shed(send: Send) -> None:
    """The overload answer: 503 + Retry-After, the service's error shape."""
    data = json.dumps(
        error_body("overloaded", "the server is at capacity; retry after the given delay")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"retry-after", RETRY_AFTER.encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": data})


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
