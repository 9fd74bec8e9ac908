"""Overload shedding (limits.py; done by context.RequestContextMiddleware): beyond
`max_in_flight` requests at once a worker answers 503 + Retry-After at once instead of
queueing without bound.

The middleware is tested on its own with requests held open by a gate, then wired into
the real app with uploads held inside the hashing step, so the count covers the whole
request and the shed answer has the service's error shape.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from hashsvc.api.context import RequestContextMiddleware
from hashsvc.api.metrics import Metrics
from hashsvc.config import Settings
from hashsvc.errors import ConfigError
from hashsvc.matcher import Matcher
from tests.api.conftest import Env, jpeg_headers, make_app, quick_matcher, running, upload_bytes


def _scope(path: str) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def test_requests_beyond_the_bound_are_shed_at_once() -> None:
    gate = anyio.Event()
    entered = 0

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal entered
        entered += 1
        if scope["path"] != "/healthz":
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = RequestContextMiddleware(slow_app, Metrics(), max_bytes=1024, max_in_flight=2)

    async def call(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await mw(_scope(path), _no_body, send)
        start, body = sent
        return start["status"], dict(start["headers"]), body["body"]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "/v1/match")
            tg.start_soon(call, "/v1/match")
            while entered < 2:
                await anyio.sleep(0.001)
            assert mw.in_flight == 2
            with anyio.fail_after(1):  # answered without waiting for the two held ones
                status, headers, body = await call("/v1/match/hashes")
            assert status == 503 and headers[b"retry-after"] == b"1"
            assert json.loads(body)["error"] == "overloaded"
            assert entered == 2  # the shed request never reached the app
            with anyio.fail_after(1):  # probes are never counted nor shed
                assert (await call("/healthz"))[0] == 200
            gate.set()
        assert mw.in_flight == 0
        assert (await call("/v1/match"))[0] == 200  # capacity is back once they finish

    anyio.run(main)


def test_zero_disables_and_negative_is_refused() -> None:
    assert Settings(max_in_flight=0).max_in_flight == 0
    with pytest.raises(ConfigError, match="MAX_IN_FLIGHT"):
        Settings().with_(max_in_flight=-1)
    assert Settings.from_env({"HASHSVC_MAX_IN_FLIGHT": "7"}).max_in_flight == 7


def test_the_app_sheds_uploads_held_in_hashing(env: Env) -> None:
    """Two uploads hold the only two slots (blocked inside hashing); a third request
    gets the JSON 503 with a request id in well under a second, and after they finish
    the worker serves again."""
    release = threading.Event()
    inside = threading.Semaphore(0)

    def held_matcher(settings: Settings) -> Matcher:
        matcher = quick_matcher(settings)
        real = matcher.hash_upload

        def hash_upload(data: bytes, *args: Any, **kw: Any) -> Any:
            inside.release()
            assert release.wait(10), "test never released the uploads"
            return real(data, *args, **kw)

        matcher.hash_upload = hash_upload  # type: ignore[method-assign]
        return matcher

    app = make_app(env, held_matcher, max_in_flight=2, hash_concurrency=4)
    with running(app) as client, ThreadPoolExecutor(2) as pool:
        post = lambda: client.post(  # noqa: E731
            "/v1/match", content=upload_bytes(5), headers=jpeg_headers(env)
        )
        held = [pool.submit(post) for _ in range(2)]
        for _ in range(2):
            assert inside.acquire(timeout=10), "uploads did not reach hashing"
        start = time.monotonic()
        r = client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=env.auth())
        elapsed = time.monotonic() - start
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "overloaded"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert elapsed < 1.0
        assert client.get("/readyz").status_code == 200  # probes still answer
        release.set()
        assert [f.result(timeout=20).status_code for f in held] == [200, 200]
        r = client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=env.auth())
        assert r.status_code == 200
