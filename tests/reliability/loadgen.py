"""Load generator for the soak test: its own process, so it never shares a GIL with the
server or with the test that samples the server's memory.

    python tests/reliability/loadgen.py CONFIG.json OUT.json

Requests are prebuilt raw HTTP/1.1 messages (one file each, grouped by kind in
CONFIG["kinds"]), sent on keep-alive connections with asyncio streams: no HTTP client
library, so the generator's own cost per request stays far below the server's.

Modes:
- ``ramp``: closed loop, for each concurrency level in turn, that many connections send
  back to back for `level_seconds`; the best level's 2xx rate is the measured capacity.
- ``open``: open loop at a fixed `rate` for `duration` seconds, whatever the server does
  (a closed loop slows down with the server and hides its queue). Each request is timed
  from its *scheduled* send time, so a stall in the generator or a full pool shows up as
  latency instead of being omitted. At most `max_conns` connections; a request finding
  none free is recorded as status -1 rather than queued in the generator.

Connections are opened before the clock starts (`warm_conns`, and each ramp level's
count), one idle for 2 s is dropped rather than reused, and each is closed after 50
requests so that the kernel spreads connections, hence load, over the workers. Every
run is bounded: a fixed number of requests (rate x duration) or a fixed time, and each
request has a timeout (status 0 on timeout or a transport error). Only 127.0.0.1.
OUT gets one row per request: [scheduled offset s, kind index, status, latency ms,
concurrency level or 0].
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = list[float]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# uvicorn closes a keep-alive connection idle for 5 s; one idle for longer than this is
# dropped rather than reused, or a request could be written just as the server closes it
STALE_S = 2.0
# a connection is closed after this many requests: the kernel hands each new connection
# to one worker, and a few long-lived keep-alive connections could leave one worker with
# most of the load (independent clients spread over the workers; so does rotation)
ROTATE_AFTER = 50


@dataclass
class Pool:
    """Idle keep-alive connections, and a cap on how many may exist at once."""

    host: str
    port: int
    max_conns: int
    idle: list[tuple[float, Conn]] = field(default_factory=list)  # (idle since, conn)
    uses: dict[int, int] = field(default_factory=dict)  # id(conn) -> requests sent on it
    open: int = 0
    peak: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    async def acquire(self) -> Conn | None:
        now = time.monotonic()
        while self.idle:
            since, conn = self.idle.pop()
            if now - since < STALE_S:
                return conn
            self.discard(conn)  # the server may be closing it: never race its keep-alive
        if self.open >= self.max_conns:
            return None
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.open -= 1
            raise

    def release(self, conn: Conn) -> None:
        used = self.uses.get(id(conn), 0) + 1
        if used >= ROTATE_AFTER:
            self.discard(conn)
            return
        self.uses[id(conn)] = used
        self.idle.append((time.monotonic(), conn))

    def discard(self, conn: Conn | None) -> None:
        if conn is not None:
            self.open -= 1
            self.uses.pop(id(conn), None)
            conn[1].close()

    async def warm(self, n: int) -> None:
        """Open `n` connections before the clock starts, so a run measures requests,
        not a storm of TCP handshakes at its first second."""
        conns = [c for c in await asyncio.gather(*(self.acquire() for _ in range(n))) if c]
        for conn in conns:
            self.idle.append((time.monotonic(), conn))

    def close(self) -> None:
        for _, (_, writer) in self.idle:
            writer.close()
        self.idle.clear()


async def exchange(conn: Conn, request: bytes) -> tuple[int, bool]:
    """Send one request, read the whole response; (status, connection still usable)."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep = None, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        keep = False
    return status, keep


async def one(pool: Pool, request: bytes, timeout: float) -> int:
    """One request on a pooled connection: its status, 0 on error, -1 if no connection."""
    conn = None
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.acquire()
            if conn is None:
                return -1
            status, keep = await exchange(conn, request)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as e:
        pool.errors[type(e).__name__] += 1
        pool.discard(conn)
        return 0
    if keep:
        pool.release(conn)
    else:
        pool.discard(conn)
    return status


class Mix:
    """Requests by kind, drawn with fixed weights from a seeded generator."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.names: list[str] = list(cfg["kinds"])
        self.requests = [
            [Path(p).read_bytes() for p in cfg["kinds"][k]["files"]] for k in self.names
        ]
        self.weights = [float(cfg["kinds"][k]["weight"]) for k in self.names]
        self.rng = random.Random(cfg.get("seed", 1))

    def draw(self) -> tuple[int, bytes]:
        k = self.rng.choices(range(len(self.names)), self.weights)[0]
        return k, self.rng.choice(self.requests[k])


async def open_loop(cfg: dict[str, Any], mix: Mix, pool: Pool, rows: list[Row]) -> None:
    rate, duration, timeout = float(cfg["rate"]), float(cfg["duration"]), float(cfg["timeout"])
    start = time.monotonic() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def send(at: float, kind: int, request: bytes) -> None:
        status = await one(pool, request, timeout)
        rows.append([at - start, kind, status, 1000 * (time.monotonic() - at), 0])

    for i in range(int(rate * duration)):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        kind, request = mix.draw()
        task = asyncio.create_task(send(at, kind, request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 5)


async def ramp(cfg: dict[str, Any], mix: Mix, pool: Pool, rows: list[Row]) -> None:
    seconds, timeout = float(cfg["level_seconds"]), float(cfg["timeout"])
    for level in cfg["levels"]:
        await pool.warm(level)
        start = time.monotonic()
        end = start + seconds

        async def worker(level: int = level, start: float = start, end: float = end) -> None:
            while time.monotonic() < end:
                kind, request = mix.draw()
                at = time.monotonic()
                status = await one(pool, request, timeout)
                rows.append([at - start, kind, status, 1000 * (time.monotonic() - at), level])

        await asyncio.gather(*(worker() for _ in range(level)))


async def main(cfg: dict[str, Any], out: Path) -> None:
    mix = Mix(cfg)
    pool = Pool("127.0.0.1", int(cfg["port"]), int(cfg.get("max_conns", 256)))
    rows: list[Row] = []
    wall = time.time()
    try:
        if cfg["mode"] == "ramp":
            await ramp(cfg, mix, pool, rows)
        else:
            await pool.warm(int(cfg.get("warm_conns", 0)))
            await open_loop(cfg, mix, pool, rows)
    finally:
        pool.close()
    out.write_text(
        json.dumps(
            {
                "start": wall,
                "kinds": mix.names,
                "peak_conns": pool.peak,
                "errors": dict(pool.errors),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the server's loop too: the cheaper the generator, the truer the load

        run = uvloop.run
    run(main(config, Path(sys.argv[2])))
