"""Start a real `hashsvc serve` (uvicorn worker processes) on a free loopback port.

Shared by the tests that need a real server rather than the TestClient:
tests/api/test_server.py and tests/reliability/ (soak, schemathesis over HTTP, security).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    tmpdir: Path  # the server's TMPDIR
    port: int
    log: Path  # the server's stdout and stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(
    root: Path,
    data_dir: Path,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[LiveServer]:
    """`hashsvc serve` on `data_dir` with TMPDIR=root/tmp and the HASHSVC_* settings in
    `env`, logging to root/server.log; yielded once every worker answers /readyz, and
    stopped (SIGTERM to its process group, then SIGKILL) on exit."""
    tmpdir = root / "tmp"
    tmpdir.mkdir(exist_ok=True)
    port = free_port()
    child_env = {**os.environ, "TMPDIR": str(tmpdir), **(env or {})}
    cmd = [
        sys.executable,
        "-c",
        "from hashsvc.cli import main; main()",
        "serve",
        "--workers",
        str(workers),
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "info",
    ]
    log_path = root / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, env=child_env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    srv = LiveServer(f"http://127.0.0.1:{port}", proc, tmpdir, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout_s  # a loaded box: workers load kernels
        ready = 0
        while ready < 3 * workers:  # fresh connections in a row: every worker is up
            assert proc.poll() is None, srv.log_text()
            assert time.monotonic() < deadline, f"server did not become ready:\n{srv.log_text()}"
            try:
                ok = httpx.get(f"{srv.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                ok = False
            ready = ready + 1 if ok else 0
            if not ok:
                time.sleep(0.05)
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
