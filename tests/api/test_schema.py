"""Schemathesis against our own OpenAPI schema, with a full-scope key: no 5xx, and
responses conform to the schema (status codes, content types, bodies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import build_env, make_app, running

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Checks on the response at hand. Left out: positive_data_acceptance (schema-valid random
# bytes are no decodable image and a schema-valid list entry can still be a bad hash, so
# those 422s are right) and the checks that replay requests over the network
# (ignored_auth etc.: auth on every route has its own test, tests/api/test_auth.py).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    env = build_env(tmp_path_factory.mktemp("schema") / "data")
    with running(make_app(env, max_body_bytes=1_000_000)) as client:
        yield client, env.tokens["all"]


def _schema(client: TestClient, token: str):  # type: ignore[no-untyped-def]
    raw = client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    return schemathesis.openapi.from_dict(raw)


def test_openapi_with_schemathesis(app_client: tuple[TestClient, str]) -> None:
    client, token = app_client
    schema = _schema(client, token)
    auth = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15
    for op in ops:

        @settings(
            max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            kw = case.as_transport_kwargs(headers=auth)
            if kw.get("files") is not None:
                return  # requests-style file tuples: multipart is covered in test_match.py
            if isinstance(kw.get("data"), bytes | str):  # requests-style raw body
                kw["content"] = kw.pop("data")
            response = client.request(
                kw["method"],
                kw["url"].replace("http://localhost", ""),
                **{
                    k: kw[k]
                    for k in ("headers", "params", "json", "content", "data", "files")
                    if kw.get(k) is not None
                },
            )
            if response.status_code >= 500:
                failures.append(f"{kw['method']} {kw['url']}: {response.status_code}")
            try:
                case.validate_response(response, headers=auth, checks=CHECKS)
            except BaseException as e:  # collect every operation's problems, then fail once
                failures.append(f"{kw['method']} {kw['url']}: {str(e)[:400]}")

        check()
    assert failures == [], "\n".join(failures[:20])
