"""Body cap (413, with and without Content-Length) and media never touching the disk."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Env, jpeg_headers, make_app, running, upload_bytes

CAP = 200_000


@pytest.fixture
def capped(env: Env) -> Iterator[TestClient]:
    with running(make_app(env, max_body_bytes=CAP)) as c:
        yield c


def _chunks(total: int, size: int = 16_384) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"\xff" * n


def test_413_from_content_length_before_reading(capped: TestClient, env: Env) -> None:
    r = capped.post("/v1/match", content=b"\0" * (CAP + 1), headers=jpeg_headers(env))
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large" and str(CAP) in r.json()["detail"]
    assert r.headers["x-request-id"] == r.json()["request_id"]


def test_413_while_streaming_without_content_length(capped: TestClient, env: Env) -> None:
    for path in ("/v1/match", "/v1/hash"):
        r = capped.post(path, content=_chunks(CAP * 3), headers=jpeg_headers(env))
        assert r.status_code == 413, path
    # JSON routes too (FastAPI reads those bodies itself)
    r = capped.post(
        "/v1/match/hashes",
        content=_chunks(CAP + 10),
        headers={**env.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = capped.post(
        "/v1/lists/known/entries",
        content=_chunks(CAP + 10),
        headers={**env.auth(), "Content-Type": "text/csv"},
    )
    assert r.status_code == 413


def test_a_body_longer_than_its_content_length_is_cut_off_at_the_cap(
    capped: TestClient, env: Env
) -> None:
    """Declared small, sent large: below the server, the count of bytes received decides,
    not the header. The TestClient hands the app every byte sent whatever the header
    says, so a body past the cap is 413 `body_too_large` (naming the cap) although only
    10 bytes were declared, and one under the cap is served whole (a verdict, not a
    10-byte image). (uvicorn itself reads only the declared bytes and answers the rest
    as a malformed next request, with its own 400.)"""
    r = capped.post(
        "/v1/match",
        content=_chunks(CAP * 2),
        headers={**jpeg_headers(env), "Content-Length": "10"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "body_too_large" and str(CAP) in r.json()["detail"]

    data = upload_bytes(1)
    assert len(data) < CAP
    r = capped.post(
        "/v1/match", content=data, headers={**jpeg_headers(env), "Content-Length": "10"}
    )
    assert r.status_code == 200 and r.json()["verdict"] == "block"


def test_a_content_length_over_the_cap_is_refused_before_anything_else(
    capped: TestClient, env: Env
) -> None:
    """Declared over the cap, sent short: refused on the header alone, before routing
    and the key check, so a caller without a key gets the same 413 (not 401) and the
    short body changes nothing; declared exactly at the cap, the same request passes the
    cap and meets the key check."""
    for headers in (jpeg_headers(env), {"Content-Type": "image/jpeg"}):
        r = capped.post(
            "/v1/match", content=b"\xff" * 10, headers={**headers, "Content-Length": str(CAP + 1)}
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "body_too_large" and str(CAP) in r.json()["detail"]
    r = capped.post(
        "/v1/match",
        content=b"\xff" * 10,
        headers={"Content-Type": "image/jpeg", "Content-Length": str(CAP)},
    )
    assert r.status_code == 401


def test_at_the_cap_is_accepted(capped: TestClient, env: Env) -> None:
    data = upload_bytes(1)
    assert len(data) < CAP
    r = capped.post("/v1/match", content=data, headers=jpeg_headers(env))
    assert r.status_code == 200


def test_uploads_never_touch_the_disk(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watched temp dir stays empty while uploads stream in (multipart above
    Starlette's 1 MB spool size included), and no temp-file API is even called."""
    watched = tmp_path / "tmp"
    watched.mkdir()
    monkeypatch.setenv("TMPDIR", str(watched))
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    calls: list[str] = []
    for name in ("NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        real = getattr(tempfile, name)

        def spy(*a, _real=real, _name=name, **kw):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(tempfile, name, spy)

    big = upload_bytes(1, quality=100) + b"\0" * 3_000_000  # JPEG ignores trailing bytes
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    seen_during: list[list[str]] = []

    def body(payload: bytes) -> Iterator[bytes]:
        yield head
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]
            seen_during.append(os.listdir(watched))
        yield tail

    with running(make_app(env, max_body_bytes=8_000_000)) as c:
        headers = {**env.auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        r = c.post("/v1/match", content=body(big), headers=headers)
        assert r.status_code == 200 and r.json()["verdict"] == "block"
        r = c.post("/v1/match", content=iter([big]), headers=jpeg_headers(env))
        assert r.status_code == 200
        r = c.post("/v1/hash", files={"file": ("x.jpg", big, "image/jpeg")}, headers=env.auth())
        assert r.status_code == 200
    assert seen_during and all(s == [] for s in seen_during)
    assert os.listdir(watched) == [] and calls == []


def test_cpu_work_is_skipped_for_a_caller_that_hung_up() -> None:
    import anyio

    from hashsvc.api.limits import ClientGone, run_cpu_bound

    ran: list[int] = []

    class Gone:
        class app:  # noqa: N801
            class state:  # noqa: N801
                cpu_limiter: anyio.CapacityLimiter

        async def is_disconnected(self) -> bool:
            return True

    async def main() -> None:
        Gone.app.state.cpu_limiter = anyio.CapacityLimiter(1)
        with pytest.raises(ClientGone):
            await run_cpu_bound(Gone(), ran.append, 1)  # type: ignore[arg-type]

    anyio.run(main)
    assert ran == []


def test_a_caller_gone_mid_upload_is_499_not_a_server_error(
    client: TestClient, env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Half an upload, then the connection drops: the request ends as the client's doing
    (499, logged as such), not as an unhandled error: no traceback, no 500 in the
    metrics. Driven at the ASGI level, where the disconnect is a message."""
    data = upload_bytes(1)
    sent: list[dict[str, Any]] = []
    headers = [(k.lower().encode(), v.encode()) for k, v in jpeg_headers(env).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/match", "raw_path": b"/v1/match", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    messages = [{"type": "http.request", "body": data[: len(data) // 2], "more_body": True}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    with caplog.at_level(logging.INFO, logger="hashsvc"):
        assert client.portal is not None
        client.portal.call(call)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    metrics = client.get("/metrics", headers=env.auth("metrics")).text
    assert 'route="/v1/match",status="499"' in metrics
    assert 'route="/v1/match",status="500"' not in metrics
