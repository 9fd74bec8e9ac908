"""Bearer-key authentication, scope checks and the per-key rate limit, as one dependency.

`require_key` is used through the `Annotated` aliases in deps.py, once per route, with
the scope the route needs. Order matters: no key or an unknown/revoked key -> 401 (with
``WWW-Authenticate: Bearer``), a key without the scope -> 403, a key over its rate -> 429
(with ``Retry-After``). The rate limit counts only authenticated requests, per key.

The token is checked against the in-memory key ring (a dict lookup and a constant-time
digest compare); only a key the ring has not seen yet costs a database read, which runs
off the event loop.
"""

from __future__ import annotations

import math
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from hashsvc.api.context import annotate
from hashsvc.api.errors import ApiError
from hashsvc.keys import ApiKey

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `hashsvc keys create`: `Authorization: Bearer hsk_...`.",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_key(
    request: Request,
    security_scopes: SecurityScopes,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    services = request.app.state.services
    if creds is None or not creds.credentials:
        raise ApiError(
            401, "unauthorized", "an API key is required (Authorization: Bearer ...)", _CHALLENGE
        )
    token = creds.credentials
    ring = services.keyring
    found = ring.authenticate_cached(token)
    if found is False:
        found = await anyio.to_thread.run_sync(ring.authenticate_slow, token)
    if found is None or found is False:
        raise ApiError(401, "unauthorized", "invalid or revoked API key", _CHALLENGE)
    key: ApiKey = found
    annotate(request, key_id=key.id)
    missing = [s for s in security_scopes.scopes if not key.has(s)]
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
