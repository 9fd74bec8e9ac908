"""Bearer-key authentication, scope checks and the per-key rate limit, as one dependency.

`KeyAuth` is the OpenAPI security scheme (``ApiKey``: HTTP bearer) and the check itself,
so a route's key costs FastAPI a single dependency node (resolving a node costs tens of
microseconds per request, measured: the previous scheme -> require_key -> route chain was
a tenth of a single-hash lookup's CPU). Routes use it through the `Annotated` aliases in
deps.py, once per route, with the scope the route needs. Order matters: no key or an
unknown/revoked key -> 401 (with ``WWW-Authenticate: Bearer``), a key without the scope ->
403, a key over its rate -> 429 (with ``Retry-After``). The rate limit counts only
authenticated requests, per key.

The token is checked against the in-memory key ring (a dict lookup and a constant-time
digest compare); only a key the ring has not seen yet costs a database read, which runs
off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio
from fastapi import Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from hashsvc.api.context import annotate
from hashsvc.api.errors import ApiError
from hashsvc.keys import ApiKey

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class KeyAuth(SecurityBase):
    """`Security(key_auth, scopes=[...])`: the caller's ApiKey, or 401/403/429."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="An API key from `hashsvc keys create`: `Authorization: Bearer hsk_...`."
        )
        self.scheme_name = "ApiKey"

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> ApiKey:
        return await authenticate(request, security_scopes.scopes)


key_auth = KeyAuth()


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (parsed as FastAPI's
    HTTPBearer does), else None."""
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return token


async def authenticate(request: Request, scopes: Sequence[str]) -> ApiKey:
    """The request's key if it is valid, has every scope and is within its rate."""
    services = request.app.state.services
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401, "unauthorized", "an API key is required (Authorization: Bearer ...)", _CHALLENGE
        )
    ring = services.keyring
    found = ring.authenticate_cached(token)
    if found is False:
        found = await anyio.to_thread.run_sync(ring.authenticate_slow, token)
    if found is None or found is False:
        raise ApiError(401, "unauthorized", "invalid or revoked API key", _CHALLENGE)
    key: ApiKey = found
    annotate(request, key_id=key.id)
    missing = [s for s in scopes if not key.has(s)]
    if missing:
        raise ApiError(403, "forbidden", f"this key lacks the scope {', '.join(missing)!r}")
    wait = services.rate_limiter.check(key.id)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            "rate limit exceeded for this key",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key
