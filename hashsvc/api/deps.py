"""Every dependency a route may ask for, as an `Annotated` alias. Routes import from here.

Key aliases name the scope they require (see hashsvc.keys for what each scope grants):
a route takes exactly one of them, so authentication and the rate limit run once.
Every dependency is `async def` although none awaits: FastAPI runs a plain `def`
dependency in the thread pool, a thread hop per dependency per request (measured: most
of a single-hash lookup's time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security

from hashsvc.api.auth import require_key
from hashsvc.api.errors import ApiError
from hashsvc.api.runtime import Services
from hashsvc.keys import ApiKey
from hashsvc.matcher import Matcher
from hashsvc.store import Store


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _ready(services: Services) -> Matcher:
    """The worker's Matcher, or 503 while the index is still loading."""
    matcher = services.matcher
    if matcher is None:
        _, why = services.readiness()
        raise ApiError(503, "not_ready", why, {"Retry-After": "1"})
    return matcher


async def ready_matcher(services: ServicesDep) -> Matcher:
    return _ready(services)


async def records_store(services: ServicesDep) -> Store:
    assert services.records is not None  # opened by the lifespan before any request
    return services.records


MatcherDep = Annotated[Matcher, Depends(ready_matcher)]
RecordsDep = Annotated[Store, Depends(records_store)]

AnyKey = Annotated[ApiKey, Security(require_key)]
MatchKey = Annotated[ApiKey, Security(require_key, scopes=["match"])]
ReviewKey = Annotated[ApiKey, Security(require_key, scopes=["review"])]
AdminKey = Annotated[ApiKey, Security(require_key, scopes=["admin"])]
MetricsKey = Annotated[ApiKey, Security(require_key, scopes=["metrics"])]


@dataclass(frozen=True)
class MatchContext:
    """What a verdict route needs, as one dependency: the hot path pays FastAPI's
    dependency resolution per node per request (~0.05 ms each, measured), so the key,
    the services and the ready Matcher come from a single node."""

    key: ApiKey
    services: Services
    matcher: Matcher


async def match_context(request: Request, key: MatchKey) -> MatchContext:
    services: Services = request.app.state.services
    return MatchContext(key, services, _ready(services))


MatchCall = Annotated[MatchContext, Depends(match_context)]
