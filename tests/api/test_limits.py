"""Body cap (413, with and without Content-Length) and media never touching the disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


def test_a_lying_content_length_is_cut_off_at_the_cap(capped: TestClient, env: Env) -> None:
    # declared small, streamed large: the count of received bytes decides
    r = capped.post(
        "/v1/match",
        content=_chunks(CAP * 2),
        headers={**jpeg_headers(env), "Content-Length": "10"},
    )
    assert r.status_code in (413, 422)  # 422 if the transport honours the declared length


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
