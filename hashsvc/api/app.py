"""The app factory. One app per worker process, each with its own Matcher and index.

`create_app(settings)` wires the routers, the middleware (one layer: request context,
overload shedding, body cap), the exception mapping and the lifespan, which opens the worker's
services (see runtime.py) and closes them on shutdown. `app_from_env()` is the factory
`hashsvc serve` hands to uvicorn, so each worker process builds its own app from the
same `HASHSVC_*` settings.

Interactive docs (`/docs`, `/redoc`, a public `/openapi.json`) exist only when
`docs_enabled`; otherwise the schema is served at `/openapi.json` to any valid key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig

from hashsvc import __version__
from hashsvc.api import errors, schemas
from hashsvc.api.context import LOG_LEVEL_ENV, RequestContextMiddleware, configure_logging
from hashsvc.api.deps import AnyKey
from hashsvc.api.fastlane import HashLookupLane
from hashsvc.api.routes import hash as hash_routes
from hashsvc.api.routes import health, lists, match, metrics, reports
from hashsvc.api.runtime import MatcherFactory, Services, open_matcher
from hashsvc.config import Settings

DESCRIPTION = """Perceptual-hash matching of uploads against trusted hash lists of known
abusive media. Every route but `/healthz` and `/readyz` needs an API key
(`Authorization: Bearer hsk_...`) with the scope the route names. Errors share one shape:
`{"error": code, "detail": text, "request_id": id}`."""

#: FastAPI's native OpenTelemetry turned off (Settings.opentelemetry): its default checks
#: the global providers on every request, ~10 us, though none is configured
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings, *, matcher_factory: MatcherFactory = open_matcher, fast_lane: bool = True
) -> FastAPI:
    """Build the app. `matcher_factory` opens the worker's Matcher in the background
    (tests pass a slow or failing one to see readiness change); `fast_lane=False` serves
    every request through FastAPI alone (tests compare the two)."""
    services = Services(settings, matcher_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.cpu_limiter = anyio.CapacityLimiter(settings.hash_concurrency)
        await anyio.to_thread.run_sync(services.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(services.stop)

    docs = settings.docs_enabled
    app = FastAPI(
        title="hashsvc",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    app.state.services = services
    errors.install(app)
    for module in (match, hash_routes, reports, lists, health, metrics):
        app.include_router(module.router)

    if not docs:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi_schema(key: AnyKey) -> JSONResponse:
            return JSONResponse(app.openapi())

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if fast_lane:  # plain precomputed-hash lookups past FastAPI's machinery (fastlane.py)
        app.add_middleware(HashLookupLane, fastapi_app=app)
    # one layer for request id, shedding, body cap, metrics and the access log: a 413
    # raised before routing still gets a request id, a log line and a metric, and a shed
    # request is logged and counted but its body never read
    app.add_middleware(
        RequestContextMiddleware,
        metrics=services.metrics,
        max_bytes=settings.max_body_bytes,
        video_max_bytes=settings.video_max_body_bytes,
        max_in_flight=settings.max_in_flight,
    )
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (`hashsvc serve`): settings from HASHSVC_*, JSON logs at the level
    `serve --log-level` chose (it reaches the workers as HASHSVC_LOG_LEVEL; info when
    unset)."""
    settings = Settings.from_env()
    configure_logging(os.environ.get(LOG_LEVEL_ENV) or "info")
    return create_app(settings)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the models of bodies read by hand (list uploads)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    extra = schemas.EntriesIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(extra.pop("$defs", {}))
    components["EntriesIn"] = extra
    app.openapi_schema = schema
    return schema
