"""The fast lane for `POST /v1/match/hashes` (api/fastlane.py) answers exactly as FastAPI
does: the same requests, sent in the same order to an app with the lane and to one
without, get byte-identical responses (a fixed X-Request-ID makes the bodies comparable),
the same reports and the same counters, across the plain case and every way out of it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hashsvc import hashing
from hashsvc.api import fastlane
from hashsvc.api.app import create_app
from hashsvc.api.routes import match
from tests.api.conftest import Env, running, settings_for, upload_bytes

PATH = "/v1/match/hashes"


def _requests(env: Env) -> list[dict[str, Any]]:
    near = hashing.hash_media(upload_bytes(1), path=hashing.HashPath.REFERENCE)
    assert near.pdq is not None and near.phash is not None
    md5 = next(h for h in sorted(env.list_hashes) if len(h) == 32)
    allow = {"pdq": "ab" * 32}
    js = {"Content-Type": "application/json"}

    def post(body: Any, who: str | None = "all", **headers: str) -> dict[str, Any]:
        auth = env.auth(who) if who else {}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return {"content": content, "headers": {**js, **auth, **headers}}

    return [
        post(allow, "match"),
        post(allow),
        post({"pdq": near.pdq.hex.upper(), "phash": near.phash.hex}, "review"),  # block
        post({"md5": md5}),  # exact: a report
        post({"items": [allow, {"md5": md5}, {"pdq": near.pdq.hex}]}),
        post({"items": [allow] * 3}, "match"),
        # PDQ-only batches (the lane's plain bulk shape) and near misses of that shape
        post({"items": [allow, {"pdq": near.pdq.hex.upper(), "pdq_quality": 90}]}, "review"),
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": None}, allow]}),
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": "77"}]}),  # lax int: both coerce
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": 5}]}),  # low quality: a note
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": 101}]}),  # 422
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": True}]}),
        post({"items": [{"pdq": near.pdq.hex, "pdq_quality": 50.5}]}),
        post({"items": [{"pdq": "ab" * 32, "colour": "red"}]}),  # 422
        post({"items": [{"pdq": "ab" * 31}]}),  # 422
        post({"items": [allow], "extra": 1}),  # 422
        post({"items": [allow] * 1001}),  # 422
        post({"items": allow}),  # 422
        post({"items": [{"pdq_quality": 50}]}),  # 422
        # refused keys: no key, another scheme, unknown, revoked, wrong scope
        post(allow, None),
        post(allow, None, Authorization="Basic dXNlcjpwYXNz"),
        post(allow, None, Authorization="Bearer hsk_00000000_" + "a" * 43),
        post(allow, "revoked"),
        post(allow, "metrics"),
        post(b"{not json", None),  # 401 before 400/422
        # bodies FastAPI refuses
        post(b"{not json"),
        post(b"\xff\xfe"),
        post(b""),
        post(b"[1, 2]"),
        post({"pdq": "zz" * 32}),
        post({"pdq": "ab" * 31}),
        post({"pdq": "ab" * 32, "typo": 1}),
        post({}),
        post({"items": []}),
        post({"pdq_quality": 80}),
        # other content types: FastAPI decides
        post(allow, **{"Content-Type": "application/json; charset=utf-8"}),
        post(allow, **{"Content-Type": "text/plain"}),
        post(allow, **{"Content-Type": "application/vnd.x+json"}),
    ]


@pytest.fixture
def twin(env: Env, tmp_path: Path) -> Env:
    """A second copy of the same data dir (the two apps must not share reports)."""
    data = tmp_path / "twin"
    shutil.copytree(env.data_dir, data)
    return Env(data, dict(env.tokens), dict(env.key_ids), set(env.list_hashes))


def _pair(env: Env, twin: Env, **settings: Any) -> Iterator[tuple[TestClient, TestClient]]:
    lane = create_app(settings_for(env, **settings))
    plain = create_app(settings_for(twin, **settings), fast_lane=False)
    with running(lane) as a, running(plain) as b:
        yield a, b


def _same(a: TestClient, b: TestClient, n: int, **request: Any) -> int:
    headers = {**request.pop("headers", {}), "X-Request-ID": f"t-{n}"}
    content = request.pop("content")  # a callable: a fresh stream per request

    def body() -> Any:
        return content() if callable(content) else content

    ra = a.post(PATH, headers=headers, content=body(), **request)
    rb = b.post(PATH, headers=headers, content=body(), **request)
    assert (ra.status_code, ra.content) == (rb.status_code, rb.content), (n, request)
    assert sorted(ra.headers.items()) == sorted(rb.headers.items()), n
    return ra.status_code


def test_the_lane_answers_as_fastapi_does(env: Env, twin: Env) -> None:
    statuses = set()
    for a, b in _pair(env, twin):
        for n, request in enumerate(_requests(env)):
            statuses.add(_same(a, b, n, **request))
        reports = [c.get("/v1/reports", headers=env.auth("review")).json() for c in (a, b)]
        for listing in reports:
            for r in listing.get("items", []):
                r.pop("created_at", None)
        assert reports[0] == reports[1]

        def counters(c: TestClient) -> list[str]:
            text = c.get("/metrics", headers=env.auth("metrics")).text
            return sorted(
                line
                for line in text.splitlines()
                if line.startswith(("hashsvc_http_requests_total", "hashsvc_verdicts_total"))
                and "/readyz" not in line  # polled until ready: not the same count
            )

        assert counters(a) == counters(b)
    assert statuses >= {200, 401, 403, 422}


def test_rate_limit_not_ready_and_body_cap_as_fastapi(env: Env, twin: Env) -> None:
    allow = {
        "content": json.dumps({"pdq": "ab" * 32}).encode(),
        "headers": {**env.auth("match"), "Content-Type": "application/json"},
    }
    for a, b in _pair(env, twin, rate_limit_per_minute=2):
        # the lane takes a token only for a request it serves: 2 allowed, then 429s
        assert [_same(a, b, n, **allow) for n in range(4)] == [200, 200, 429, 429]
    for a, b in _pair(env, twin, max_body_bytes=100):
        big = {"pdq": "ab" * 32, "notes": "x" * 200}
        assert _same(a, b, 0, **{**allow, "content": json.dumps(big).encode()}) == 413

        def chunked() -> Iterator[bytes]:
            yield b'{"pdq": "' + b"ab" * 32
            yield b'", "x": "' + b"x" * 100 + b'"}'

        assert _same(a, b, 1, **{**allow, "content": chunked}) == 413


def test_not_ready_is_fastapis_503(env: Env, twin: Env) -> None:
    def failing(settings: Any) -> Any:
        raise RuntimeError("no index")

    lane = create_app(settings_for(env), matcher_factory=failing)
    plain = create_app(settings_for(twin), matcher_factory=failing, fast_lane=False)
    with running(lane, ready=False) as a, running(plain, ready=False) as b:
        body = json.dumps({"pdq": "ab" * 32}).encode()
        headers = {**env.auth("match"), "Content-Type": "application/json"}
        assert _same(a, b, 0, content=body, headers=headers) == 503


def test_the_lane_serves_the_plain_case(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard against a lane that silently hands everything to FastAPI."""
    served = []
    real = fastlane._answer

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await real(scope, receive, send)

    monkeypatch.setattr(fastlane, "_answer", counting)
    with running(create_app(settings_for(env))) as client:
        r = client.post(PATH, json={"pdq": "ab" * 32}, headers=env.auth("match"))
        assert r.status_code == 200 and r.json()["verdict"] == "allow"
        r = client.post(PATH, json={"pdq": "zz"}, headers=env.auth("match"))
        assert r.status_code == 422
        # a PDQ-only batch takes the plain bulk path
        plain_batches = []
        real_items = match.match_plain_pdq_items

        async def spy(*args: Any) -> Any:
            plain_batches.append(len(args[2].items))
            return await real_items(*args)

        monkeypatch.setattr(match, "match_plain_pdq_items", spy)
        items = {"items": [{"pdq": "ab" * 32}, {"pdq": "cd" * 32, "pdq_quality": 60}]}
        r = client.post(PATH, json=items, headers=env.auth("match"))
        assert r.status_code == 200 and [i["verdict"] for i in r.json()["items"]] == ["allow"] * 2
        assert plain_batches == [2]
    assert served == [PATH, PATH]
