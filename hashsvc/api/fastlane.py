"""A short way past FastAPI's per-request machinery for plain precomputed-hash lookups.

`POST /v1/match/hashes` is the bulk of the traffic and its own work is small (one index
probe), so FastAPI's request machinery (routing, body handling, dependency solving, its
exception and exit-stack layers) was over a third of a single lookup's CPU (measured
with bench/_data/api-1000000: 0.44 -> 0.28 ms). `HashLookupLane` serves the plain case
with the same parts FastAPI would use: the same JSON decode, the route's own body field
validates, the same key check runs, the same endpoint function answers, and the app's
own exception handlers map what it raises.

A batch of PDQ hashes alone (`{"items": [{"pdq": ..., "pdq_quality": ...}, ...]}`, the
usual bulk lookup) is validated as `schemas.PlainPdqBatch` first, into plain dicts rather
than 1,000 `HashQuery` models, and answered by `match.match_plain_pdq_items`; any other
body, or one that this stricter shape refuses, goes through the route's own body field.

Everything else goes to FastAPI untouched: another route or method, another content
type, a body that does not decode or validate, a refused key, the index still loading,
dependency overrides, or OpenTelemetry active for the request. The body already read is
replayed, so FastAPI sees the request as it was sent and gives the answer it always
gives. The lane decides before anything it does is visible (a refused key consumes no
rate-limit token), and the route stays declared in FastAPI, so the OpenAPI schema does
not change. It sits inside the request middleware: request ids, shedding, the body cap,
metrics and the access log apply as to any request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
from pydantic import ValidationError
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashsvc.api import schemas
from hashsvc.api.auth import authenticate
from hashsvc.api.deps import MatchContext
from hashsvc.api.routes import match

PATH = "/v1/match/hashes"
SCOPES = ["match"]  # what the route's MatchCall requires


class HashLookupLane:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        route = next(
            r
            for r in match.router.routes
            if isinstance(r, APIRoute) and r.path == PATH and "POST" in (r.methods or ())
        )
        assert route.body_field is not None and route.endpoint is match.match_hashes
        self.route = route
        self.body_field = route.body_field
        self._handled: ExceptionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not _plain_json(scope)
            or self.fastapi_app.dependency_overrides
            or get_telemetry_data() is not None
        ):
            await self.app(scope, receive, send)
            return

        messages: list[Message] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except Exception as exc:  # the body cap: FastAPI meets it at the same byte
            await self.app(scope, _replay(messages, receive, exc), send)
            return

        answer = await self._plain(scope, receive, send, messages)
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = self.route  # as FastAPI's router sets it (metrics, access log)
        scope["hashsvc.lane"] = answer
        if self._handled is None:
            self._handled = self._handling()
        await self._handled(scope, receive, send)

    async def _plain(
        self, scope: Scope, receive: Receive, send: Send, messages: list[Message]
    ) -> tuple[Request, MatchContext, Any] | None:
        """The endpoint's arguments when the request is the plain case, else None.
        Nothing here is visible outside: the caller may still hand the request over."""
        if messages[-1]["type"] != "http.request":
            return None  # the client left mid-body
        body = b"".join(m.get("body", b"") for m in messages)
        try:
            value = json.loads(body)  # what FastAPI's `request.json()` does
        except Exception:
            return None
        query: Any = None
        if isinstance(value, dict) and "items" in value:
            try:  # the usual bulk lookup, PDQ hashes alone: no model per item
                query = match.PlainPdqItems(schemas.PLAIN_PDQ_BATCH.validate_python(value)["items"])
            except ValidationError:
                query = None
        if query is None:
            query, errors = self.body_field.validate(value, {}, loc=("body",))
            if errors:
                return None
        services = self.fastapi_app.state.services
        matcher = services.matcher
        if matcher is None:
            return None  # not ready: FastAPI answers 503 after the key check
        request = Request(scope, receive, send)
        try:
            key = await authenticate(request, SCOPES)
        except Exception:
            return None  # refused before consuming a rate-limit token
        return request, MatchContext(key, services, matcher), query

    def _handling(self) -> ExceptionMiddleware:
        """The endpoint under the app's exception handlers, as FastAPI wires them
        (500/Exception go to the outer error layer, not here)."""
        app = self.fastapi_app
        handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
        return ExceptionMiddleware(_answer, handlers=handlers, debug=app.debug)


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    request, ctx, query = scope.pop("hashsvc.lane")
    if isinstance(query, match.PlainPdqItems):
        response = await match.match_plain_pdq_items(request, ctx, query)
    else:
        response = await match.match_hashes(request, ctx, query)
    await response(scope, receive, send)


def _plain_json(scope: Scope) -> bool:
    """Whether the first Content-Type is exactly ``application/json`` (FastAPI decodes
    such a body as JSON; other spellings are left to FastAPI)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value) == b"application/json"
    return False


def _replay(
    messages: list[Message], receive: Receive, error: Exception | None = None
) -> Callable[[], Awaitable[Message]]:
    """`receive` that first gives back what the lane read (then its error, if reading
    failed), then reads on."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        if error is not None:
            raise error
        return await receive()

    return replayed
