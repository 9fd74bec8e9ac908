"""Auth on every route (walking `app.routes`), 401 vs 403, revocation, rate limit, docs."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hashsvc import keys
from hashsvc.store import Store
from tests.api.conftest import Env, make_app, running

PUBLIC = {"/healthz", "/readyz"}


def _walk(routes):  # type: ignore[no-untyped-def]
    """`app.routes`, with included routers opened (FastAPI >= 0.16x includes them lazily;
    our routers carry their prefix themselves, so their routes' paths are complete)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
        else:
            yield route


def _routes(app) -> list[tuple[str, str, set[str]]]:  # type: ignore[no-untyped-def]
    """(method, concrete path, scopes required) for every route the app serves."""
    out = []
    for route in _walk(app.routes):
        if not isinstance(route, APIRoute):
            continue
        scopes: set[str] = set()
        todo = list(route.dependant.dependencies)
        while todo:  # scopes may sit on a nested dependency (deps.MatchCall)
            dep = todo.pop()
            scopes |= set(dep.own_oauth_scopes or [])
            todo.extend(dep.dependencies)
        path = re.sub(r"\{name\}", "known", route.path)
        path = re.sub(r"\{[a-z_]+\}", "1", path)
        for method in route.methods:
            out.append((method, path, scopes))
    return out


def test_every_route_but_health_needs_a_key(client: TestClient, env: Env) -> None:
    routes = _routes(client.app)
    assert len(routes) >= 16
    paths = {p for _, p, _ in routes}
    assert "/openapi.json" in paths and "/metrics" in paths and "/v1/match" in paths
    for method, path, scopes in routes:
        if path in PUBLIC:
            assert client.request(method, path).status_code in (200, 503)
            continue
        assert path == "/openapi.json" or scopes, f"{method} {path} declares no scope"
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            env.auth("revoked"),
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"] == "unauthorized"


def test_wrong_scope_is_403_on_every_scoped_route(client: TestClient, env: Env) -> None:
    for method, path, scopes in _routes(client.app):
        if not scopes:
            continue
        (needed,) = scopes
        wrong = next(
            w
            for w in ("metrics", "match", "admin")
            if w != needed and not (w == "admin" and needed == "metrics")
        )
        r = client.request(method, path, headers=env.auth(wrong))
        assert r.status_code == 403, (method, path, wrong)
        assert r.json()["error"] == "forbidden" and needed in r.json()["detail"]


def test_openapi_needs_a_key_and_docs_are_off_by_default(client: TestClient, env: Env) -> None:
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers=env.auth("match")).json()
    assert "/v1/match" in schema["paths"] and "EntriesIn" in schema["components"]["schemas"]


def test_docs_when_enabled(env: Env) -> None:
    with running(make_app(env, docs_enabled=True), ready=False) as c:
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_revocation_takes_effect_within_a_refresh(client: TestClient, env: Env) -> None:
    h = env.auth("match")
    assert client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=h).status_code == 200
    with Store.open(env.data_dir / "hashsvc.db") as store:
        keys.revoke_key(store, "k-match")
    import time

    deadline = time.monotonic() + 2.0
    while client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=h).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.01)


def test_a_key_created_after_start_works_at_once(client: TestClient, env: Env) -> None:
    with Store.open(env.data_dir / "hashsvc.db") as store:
        _, token = keys.create_key(store, "late", "match")
    r = client.post(
        "/v1/match/hashes", json={"md5": "0" * 32}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200


def test_rate_limit_is_per_key(env: Env) -> None:
    with running(make_app(env, rate_limit_per_minute=5)) as c:
        body = {"md5": "0" * 32}
        codes = [
            c.post("/v1/match/hashes", json=body, headers=env.auth("match")).status_code
            for _ in range(7)
        ]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = c.post("/v1/match/hashes", json=body, headers=env.auth("match"))
        assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        # another key is not affected, and unauthenticated requests are not counted
        assert c.post("/v1/match/hashes", json=body, headers=env.auth("all")).status_code == 200


@pytest.mark.parametrize("scopes", ["", "match,bogus"])
def test_bad_scopes_are_refused(env: Env, scopes: str) -> None:
    from hashsvc.errors import InvalidValue

    with Store.open(env.data_dir / "hashsvc.db") as store, pytest.raises(InvalidValue):
        keys.create_key(store, "x", scopes)
