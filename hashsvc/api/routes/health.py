"""Liveness and readiness: the only routes that need no key.

`/healthz` says the process answers. `/readyz` says this worker can give verdicts: 503
until its index is loaded, and while its last successful refresh is older than the
staleness bound (a worker that cannot see list changes must be taken out of rotation).
Neither reveals anything about the lists.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hashsvc.api import schemas
from hashsvc.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health, summary="Liveness (no key needed)")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    summary="Readiness (no key needed)",
    responses={503: {"model": schemas.Readiness, "description": "Loading, stale or failed."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    ready, detail = services.readiness()
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "detail": detail},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )
