"""`GET /metrics` (scope `metrics`; `admin` implies it): Prometheus text format."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response

from hashsvc.api import schemas
from hashsvc.api.deps import MetricsKey, ServicesDep

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    description="Scope `metrics`. Requests, latency histograms, verdict counts, index size "
    "and age; aggregated over all worker processes.",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **schemas.error_responses(401, 403, 429),
    },
)
async def metrics(key: MetricsKey, services: ServicesDep) -> Response:
    if services.matcher is not None:
        services.metrics.index_age.set(time.time() - services.last_refresh)
    body, content_type = services.metrics.render()
    return Response(body, media_type=content_type)
