"""The coalescing transport under uvicorn (api/corked.py): a response's head and body go
out in one write, nothing is held past the event-loop turn that wrote it, and HTTP on
the wire stays what uvicorn's own protocol sends (keep-alive, streaming, close)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from hashsvc.api.corked import CoalescingHttpToolsProtocol, CoalescingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:  # one send, as asyncio's and uvloop's are
        self.write(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _turns(body: Any) -> FakeTransport:
    async def run() -> FakeTransport:
        real = FakeTransport()
        await body(CoalescingTransport(real, asyncio.get_running_loop()), real)  # type: ignore[arg-type]
        return real

    return asyncio.run(run())


def test_two_writes_in_one_turn_are_one() -> None:
    async def body(t: CoalescingTransport, real: FakeTransport) -> None:
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(memoryview(b"body"))
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # the scheduled flush: no-op

    _turns(body)


def test_a_lone_write_leaves_when_the_turn_ends() -> None:
    async def body(t: CoalescingTransport, real: FakeTransport) -> None:
        t.write(b"head")
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b"head"]
        t.write(b"a")
        t.write(b"b")
        t.write(b"c")  # held again, after the pair
        assert real.writes == [b"head", b"ab"]
        await asyncio.sleep(0)
        assert real.writes == [b"head", b"ab", b"c"]

    _turns(body)


def test_close_sends_what_is_held_abort_drops_it() -> None:
    async def closing(t: CoalescingTransport, real: FakeTransport) -> None:
        t.write(b"last")
        t.close()
        assert real.writes == [b"last"] and real.closed
        await asyncio.sleep(0)
        assert real.writes == [b"last"]

    async def aborting(t: CoalescingTransport, real: FakeTransport) -> None:
        t.write(b"lost")
        t.abort()
        await asyncio.sleep(0)
        assert real.writes == [] and real.aborted

    async def gone(t: CoalescingTransport, real: FakeTransport) -> None:
        t.write(b"late")
        real.closed = True  # the peer went away before the turn ended
        await asyncio.sleep(0)
        assert real.writes == []

    _turns(closing)
    _turns(aborting)
    _turns(gone)


def test_everything_else_is_the_real_transports() -> None:
    loop = asyncio.new_event_loop()
    try:
        t = CoalescingTransport(FakeTransport(), loop)  # type: ignore[arg-type]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)
        assert t.is_closing() is False
    finally:
        loop.close()


# -- under a real uvicorn -------------------------------------------------------------

STREAM_GO = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/stream":  # the head must reach the client before the rest is produced
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first.", "more_body": True})
        while not STREAM_GO.is_set():
            await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
        return
    body = path.encode()
    headers = [(b"content-length", str(len(body)).encode())]
    if path == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(10)


def _read_until(sock: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    while marker not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf


def test_keep_alive_answers_in_order(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for path in ("/a", "/bb", "/ccc"):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = _read_until(s, b"\r\n\r\n" + path.encode())
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            assert reply.endswith(b"\r\n\r\n" + path.encode())


def test_connection_close_sends_everything_then_closes(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n/close")


def test_a_stream_is_not_held_back(port: int) -> None:
    STREAM_GO.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        early = _read_until(s, b"first.")  # arrives while the app still waits
        assert early.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in early
        STREAM_GO.set()
        rest = _read_until(s, b"0\r\n\r\n", early)
        assert b"second" in rest


def test_a_half_closing_client_gets_a_lone_write(port: int) -> None:
    """A HEAD answer is one write, held to the end of the turn; a client that half-closes
    after its request makes the loop see EOF in between, and the transport closes on it.
    The held head must go out first (without the flush in `eof_received` 0-3 of 20 did)."""
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n"), reply
        assert b"content-length: 5" in reply.lower()
