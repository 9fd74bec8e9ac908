"""`hashsvc serve`: the REST API under uvicorn.

uvicorn runs the app *factory* (`hashsvc.api.app:app_from_env`), so every worker process
builds its own app, Matcher and index from the same settings; the settings reach the
workers as `HASHSVC_*` environment variables, which this command sets from its options.
Before the workers start, the saved index is brought up to date once, so N workers do not
each replay (or rebuild) the same backlog. With several workers, Prometheus samples go
to a fresh private directory that `/metrics` on any worker aggregates.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hashsvc.cli.common import DataDir, errors_to_exit, say, settings_for
from hashsvc.config import Settings

if TYPE_CHECKING:
    import uvicorn


def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve the API (each worker holds its own copy of the index)."""
    settings = settings_for(data_dir, host=host, port=port, workers=workers)
    run(settings, log_level=log_level)


def run(settings: Settings, *, log_level: str = "info") -> None:
    """Run uvicorn for these settings until it stops (shared with `make run`)."""
    from hashsvc.api.context import LOG_LEVEL_ENV, log_config
    from hashsvc.index_sync import IndexSet
    from hashsvc.store import Store

    with errors_to_exit(), Store.open(settings.db_path) as store:
        indexes = IndexSet.open(store, settings.data_dir, settings.index_inline_max_bytes)
        saved = {(ix.manifest or {}).get("store_version") for ix in indexes.indexes.values()}
        if saved != {indexes.version}:  # behind the store (or rebuilt): save the catch-up
            indexes.save()
        del indexes  # the supervisor process must not keep a copy of the index

    env = {
        "HASHSVC_ENV": settings.env,
        "HASHSVC_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "HASHSVC_HOST": settings.host,
        "HASHSVC_PORT": str(settings.port),
        "HASHSVC_WORKERS": str(settings.workers),
        LOG_LEVEL_ENV: log_level,  # the app factory configures logging again
    }
    os.environ.update(env)
    metrics_dir = None
    if settings.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="hashsvc-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    say(
        f"hashsvc: serving on http://{settings.host}:{settings.port} "
        f"({settings.workers} worker(s), data in {settings.data_dir})"
    )
    config = uvicorn_config(
        "hashsvc.api.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(log_level),
    )
    try:
        run_uvicorn(config)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def uvicorn_config(
    app: str,
    *,
    host: str,
    port: int,
    workers: int,
    factory: bool = False,
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Config:
    """How hashsvc runs uvicorn (bench/api.py serves its do-nothing app the same way):
    httptools over the coalescing transport (api/corked.py: one send per response), no
    access log of uvicorn's (the app writes its own), no Server header."""
    import uvicorn

    from hashsvc.api.corked import CoalescingHttpToolsProtocol

    return uvicorn.Config(
        app,
        factory=factory,
        http=CoalescingHttpToolsProtocol,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def run_uvicorn(config: uvicorn.Config) -> None:
    """Serve until stopped: one process, or `config.workers` worker processes sharing a
    listening socket."""
    import uvicorn

    if config.workers <= 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    # uvicorn creates this socket with protocol 0, so asyncio never sets TCP_NODELAY on
    # the connections the workers accept, and a response written in two parts waits
    # ~40 ms for the client's delayed ACK (measured: 44 ms per request with 2 workers vs
    # 0.6 ms with 1, before corked.py). Linux copies the option from the listening
    # socket to each accepted one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
