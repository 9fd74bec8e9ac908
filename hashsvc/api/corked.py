"""One send per response: uvicorn's httptools protocol over a transport that coalesces.

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and the body in a second `transport.write` when it sends
`http.response.body`. With TCP_NODELAY (which `serve` sets, see serve.py) each write is
its own `send()` syscall and its own segment, and the client wakes for each. For a
single-hash lookup those two writes were 17% of a worker's CPU under load (py-spy).

`CoalescingTransport` holds a write until the next one in the same event-loop turn and
sends the two as one; whatever is still held when the turn ends is sent by a callback
scheduled with `call_soon`, which runs after the loop's next (non-blocking) I/O poll: a
streamed response's head still leaves before its first body chunk is produced. `close()`
sends what is held first. Everything else is the real transport's.

`CoalescingHttpToolsProtocol` is uvicorn's own protocol class, passed as
`uvicorn.Config(http=...)`, with two changes: `connection_made` wraps the transport, and
`eof_received` sends what is held before the loop closes the transport. A client that
half-closes after its request (`shutdown(SHUT_WR)`, as `nc -N` and some health checkers
do) makes that poll deliver an EOF, and uvicorn lets the transport close on it; a held
write (a HEAD response's head, written alone) was then dropped (found in review: 0-3 of
20 HEAD answers arrived). Parsing, keep-alive, flow control and timeouts stay uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport proxy whose writes made in one event-loop turn go out in pairs, the
    held one with the next (see the module docstring)."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            # one send of both; uvloop's writelines is a writev (no copy of a large body)
            self._transport.writelines((held, data))

    def flush(self) -> None:
        """Send what is held now (also the end-of-turn callback)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(self._coalescing)  # type: ignore[arg-type]

    def eof_received(self) -> None:
        self._coalescing.flush()  # the loop closes the transport once this returns
        super().eof_received()
