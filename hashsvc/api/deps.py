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
from fastapi.security import SecurityScopes

from hashsvc.api.auth import KeyAuth, authenticate, key_auth
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

AnyKey = Annotated[ApiKey, Security(key_auth)]
MatchKey = Annotated[ApiKey, Security(key_auth, scopes=["match"])]
ReviewKey = Annotated[ApiKey, Security(key_auth, scopes=["review"])]
AdminKey = Annotated[ApiKey, Security(key_auth, scopes=["admin"])]
MetricsKey = Annotated[ApiKey, Security(key_auth, scopes=["metrics"])]


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What a verdict route needs, as one dependency: the hot path pays FastAPI's
    dependency resolution per node per request (tens of microseconds each, measured), so
    the key, the services and the ready Matcher come from a single node: the security
    scheme itself (the key check first, then readiness)."""

    key: ApiKey
    services: Services
    matcher: Matcher


class MatchAuth(KeyAuth):
    """`KeyAuth` (the same `ApiKey` scheme in OpenAPI) that also hands over the ready
    Matcher."""

    async def __call__(  # type: ignore[override]
        self, request: Request, security_scopes: SecurityScopes
    ) -> MatchContext:
        key = await authenticate(request, security_scopes.scopes)
        services: Services = request.app.state.services
        return MatchContext(key, services, _ready(services))


MatchCall = Annotated[MatchContext, Security(MatchAuth(), scopes=["match"])]
