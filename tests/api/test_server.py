"""A real `hashsvc serve` (uvicorn, 2 worker processes) on a free loopback port.

What only a real server shows: the body cap on a raw socket (chunked, and a declared
Content-Length), a list change made by another process reaching the workers within a
second, metrics aggregated over the workers, a temp dir that stays empty, and a report
that is on disk when its response arrives (the server is SIGKILLed right after).
Tests run in file order; the last one kills the server.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hashsvc import hashing, reports
from hashsvc.enrollment import entries_for_media
from hashsvc.store import Store
from tests.api.conftest import Env, build_env, enrolled_bytes, upload_bytes
from tests.api.live import live_server

CAP = 4_000_000
pytestmark = pytest.mark.slow


@dataclass
class Server:
    env: Env
    url: str
    proc: subprocess.Popen[bytes]
    tmpdir: Path
    port: int

    def client(self, who: str = "all") -> httpx.Client:
        # no keep-alive: every request opens a new connection, so both workers answer
        return httpx.Client(
            base_url=self.url,
            headers=self.env.auth(who),
            timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0),
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    env = build_env(root / "data")
    settings = {
        "HASHSVC_INDEX_REFRESH_SECONDS": "0.1",
        "HASHSVC_RATE_LIMIT_PER_MINUTE": "0",
        "HASHSVC_MAX_BODY_BYTES": str(CAP),
    }
    with live_server(root, env.data_dir, workers=2, env=settings) as live:
        yield Server(env, live.url, live.proc, live.tmpdir, live.port)


def _raw(port: int, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request on a raw socket; stop sending as soon as the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for chunk in body_chunks:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered (or closed): stop sending
            try:
                s.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = s.recv(65536)
            if not data:
                break
            reply += data
        return reply


def test_413_on_a_real_socket(server: Server) -> None:
    auth = server.env.auth()["Authorization"].encode()
    declared = (
        b"POST /v1/match HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth
        + b"\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (CAP + 1)
    )
    assert _raw(server.port, declared, iter([])).startswith(b"HTTP/1.1 413")

    chunked = (
        b"POST /v1/match HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth
        + b"\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n" % 65536 + b"\xff" * 65536 + b"\r\n"
    reply = _raw(server.port, chunked, iter([piece] * (CAP // 65536 + 40)))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]


def test_uploads_leave_the_temp_dir_empty(server: Server) -> None:
    big = upload_bytes(1, quality=100) + b"\0" * 2_500_000
    with server.client() as c:
        r = c.post("/v1/match", files={"file": ("photo.jpg", big, "image/jpeg")})
        assert r.status_code == 200 and r.json()["verdict"] == "block"
        r = c.post("/v1/hash", content=big, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200
    # the only thing in TMPDIR is prometheus_client's per-worker sample files
    left = [p.relative_to(server.tmpdir) for p in server.tmpdir.rglob("*") if p.is_file()]
    assert all(p.parts[0].startswith("hashsvc-metrics-") and p.suffix == ".db" for p in left), left
    data_files = sorted(p.name for p in server.env.data_dir.iterdir())
    assert all(n.startswith("hashsvc.db") or n == "search" for n in data_files), data_files


def test_list_changes_by_another_process_reach_every_worker(server: Server) -> None:
    fresh = enrolled_bytes(11)
    pdq = hashing.hash_media(fresh).pdq
    assert pdq is not None
    body = {"pdq": pdq.hex}
    with server.client() as c:
        assert c.post("/v1/match/hashes", json=body).json()["verdict"] == "allow"
        with Store.open(server.env.data_dir / "hashsvc.db") as store:
            store.import_entries("known", entries_for_media(fresh), source_name="t", file_sha256="")
            entry_id = store.exact_lookup(pdq.signal, pdq.value)[0]
        written = time.monotonic()
        _until_all_say(c, body, "block", written)

        with Store.open(server.env.data_dir / "hashsvc.db") as store:
            store.set_enabled(entry_id, False)
        _until_all_say(c, body, "allow", time.monotonic())


def _until_all_say(c: httpx.Client, body: dict[str, str], verdict: str, since: float) -> None:
    """Within 1 s of a write, 6 answers in a row (each on a new connection, so from
    either worker) give the new verdict."""
    streak = 0
    while streak < 6:
        streak = (
            streak + 1 if c.post("/v1/match/hashes", json=body).json()["verdict"] == verdict else 0
        )
        assert time.monotonic() - since < 1.0, f"not every worker says {verdict} after 1 s"


def test_metrics_aggregate_every_worker(server: Server) -> None:
    with server.client() as c:
        for _ in range(30):
            c.post("/v1/match/hashes", json={"md5": "0" * 32})
        text = c.get("/metrics", headers=server.env.auth("metrics")).text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hashsvc_http_requests_total{")
        and 'route="/v1/match/hashes"' in line
        and 'status="200"' in line
    )
    assert total >= 30  # a single worker saw only part of them
    assert 'hashsvc_index_entries{signal="pdq"}' in text


def test_a_report_is_on_disk_before_its_response(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/match", content=upload_bytes(3), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["verdict"] == "report"
    os.killpg(server.proc.pid, signal.SIGKILL)  # no graceful shutdown, no flush
    server.proc.wait(10)
    with Store.open(server.env.data_dir / "hashsvc.db") as store:
        rep = reports.get_report(store, r.json()["report_id"])
    assert rep.request_id == r.json()["request_id"] and rep.verdict.value == "report"
    assert json.dumps(rep.hashes)  # the upload's hashes, kept for the hotline export
