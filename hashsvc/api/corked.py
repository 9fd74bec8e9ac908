"""One send per response: uvicorn's httptools protocol over a transport that coalesces.

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and the body in a second `transport.write` when it sends
`http.response.body`. With TCP_NODELAY (which `serve` sets, see serve.py) each write is
its own `send()` syscall and its own segment, and the client wakes for each. For a
single-hash lookup those two writes were 17% of a worker's CPU under load (py-spy).

`CoalescingTransport` holds a write until the next one in the same event-loop turn and
sends the two as one; whatever is still held when the turn ends is sent by a callback
scheduled with `call_soon`, so nothing waits longer than the current turn (a streamed
response's head still leaves before its first body chunk is produced). `close()` sends
what is held first. Everything else is the real transport's.

`CoalescingHttpToolsProtocol` is uvicorn's own protocol class with only
`connection_made` changed, passed as `uvicorn.Config(http=...)`: parsing, keep-alive,
flow control and timeouts stay uvicorn's.
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
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            # one send of both; uvloop's writelines is a writev (no copy of a large body)
            self._transport.writelines((held, data))

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        proxy = CoalescingTransport(transport, self.loop)
        super().connection_made(proxy)  # type: ignore[arg-type]
