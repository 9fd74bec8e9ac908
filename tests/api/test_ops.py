"""Health, readiness, metrics, request ids and what the logs may say."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from fastapi.testclient import TestClient

from hashsvc import hashing
from hashsvc.api.context import JsonFormatter
from hashsvc.config import Settings
from hashsvc.errors import StoreError
from hashsvc.matcher import Matcher
from tests.api.conftest import (
    Env,
    jpeg_headers,
    make_app,
    quick_matcher,
    running,
    upload_bytes,
    wait_ready,
)


def test_readyz_is_503_until_the_index_is_loaded(env: Env) -> None:
    gate = threading.Event()

    def slow(settings: Settings) -> Matcher:
        gate.wait(10)
        return quick_matcher(settings)

    with running(make_app(env, slow), ready=False) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        assert r.headers["retry-after"] == "1"
        m = c.post("/v1/match", content=upload_bytes(1), headers=jpeg_headers(env))
        assert m.status_code == 503 and m.json()["error"] == "not_ready"
        gate.set()
        from tests.api.conftest import wait_ready

        wait_ready(c)
        assert c.get("/readyz").json() == {"status": "ready", "detail": "ready"}


def test_readyz_reports_a_failed_load(env: Env) -> None:
    def broken(settings: Settings) -> Matcher:
        raise OSError("disk on fire")

    with running(make_app(env, broken), ready=False) as c:
        import time

        deadline = time.monotonic() + 5
        while "failed" not in c.get("/readyz").json()["detail"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert c.get("/readyz").status_code == 503


def test_readyz_turns_503_when_the_index_is_stale(
    client: TestClient, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose refreshes keep failing cannot see list changes, so /readyz says 503
    `stale` (with Retry-After) once the last success is older than `stale_after`, and
    200 again after the next success. The refresher keeps running meanwhile, so its
    refreshes are made to fail (as when the store cannot be read), and the last success
    is moved back an hour only after a failed tick has been seen: a tick that was already
    past its refresh can no longer make the worker fresh again behind the test's back."""
    services = client.app.state.services  # type: ignore[attr-defined]
    indexes = services.matcher.indexes
    failed = threading.Event()

    def failing_refresh() -> int:
        failed.set()
        raise StoreError("database error: disk I/O error")

    monkeypatch.setattr(indexes, "refresh", failing_refresh)
    assert failed.wait(10), "the refresher did not tick"
    services.last_refresh -= 3600  # as if the refreshes had been failing for an hour
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["status"] == "not_ready"
    assert r.json()["detail"].startswith("index stale: last refreshed 36")

    monkeypatch.undo()  # the store is back: the next tick refreshes
    wait_ready(client, deadline_s=10)
    assert client.get("/readyz").json() == {"status": "ready", "detail": "ready"}


def test_metrics(client: TestClient, env: Env) -> None:
    client.post("/v1/match", content=upload_bytes(1), headers=jpeg_headers(env))
    client.post("/v1/match/hashes", json={"items": [{"md5": "0" * 32}] * 3}, headers=env.auth())
    text = client.get("/metrics", headers=env.auth("metrics")).text
    assert 'hashsvc_http_requests_total{method="POST",route="/v1/match",status="200"} 1.0' in text
    assert 'hashsvc_verdicts_total{source="media",verdict="block"} 1.0' in text
    assert 'hashsvc_verdicts_total{source="hashes",verdict="allow"} 3.0' in text
    assert 'hashsvc_index_entries{signal="pdq"} 3.0' in text
    assert (
        "hashsvc_index_age_seconds" in text
        and "hashsvc_http_request_duration_seconds_bucket" in text
    )
    assert client.get("/metrics", headers=env.auth("admin")).status_code == 200  # admin implies


def test_request_id_is_echoed_or_made(client: TestClient, env: Env) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/v1/lists", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk" and len(r.headers["x-request-id"]) == 32
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_logs_are_json_without_hashes_or_filenames(
    client: TestClient, env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    allowed = upload_bytes(9)
    hashes = hashing.hash_media(allowed)
    with caplog.at_level(logging.INFO, logger="hashsvc"):
        client.post("/v1/match", files={"file": ("secret-name.jpg", allowed)}, headers=env.auth())
        client.post("/v1/match/hashes", json={"pdq": hashes.pdq.hex}, headers=env.auth())
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "hashsvc.api.access"]
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert record["route"].startswith("/v1/match") and record["verdict"] == "allow"
        assert record["request_id"] and record["key_id"] == env.key_ids["all"]
    text = "\n".join(lines)
    for h in (hashes.pdq.hex, hashes.md5.hex, hashes.sha256.hex, hashes.phash.hex, "secret-name"):
        assert h not in text


def test_the_worker_factory_logs_at_the_level_serve_was_given(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hashsvc serve --log-level warning` reaches the workers: their app factory used to
    configure logging at info whatever the option said (one access line per request)."""
    from hashsvc.api import app as app_module

    levels: list[str] = []
    monkeypatch.setattr(app_module, "configure_logging", levels.append)
    monkeypatch.setenv("HASHSVC_DATA_DIR", str(env.data_dir))
    for given, expected in (("warning", "warning"), (None, "info")):
        if given is None:
            monkeypatch.delenv(app_module.LOG_LEVEL_ENV, raising=False)
        else:
            monkeypatch.setenv(app_module.LOG_LEVEL_ENV, given)
        app_module.app_from_env()
        assert levels[-1] == expected


def test_a_worker_freezes_its_start_up_objects_for_the_collector(env: Env) -> None:
    """A full collection of a loaded worker walks numba's ~150k typing objects (~130 ms
    with the event loop stopped); open_matcher moves them out of the collector's sight."""
    import gc

    from hashsvc.api import runtime
    from tests.api.conftest import settings_for

    gc.unfreeze()
    before = gc.get_freeze_count()
    matcher = runtime.open_matcher(settings_for(env))
    try:
        assert gc.get_freeze_count() > before
        assert all(o is not matcher for o in gc.get_objects())  # in no generation...
        gc.unfreeze()
        assert any(o is matcher for o in gc.get_objects())  # ...until unfrozen
    finally:
        gc.unfreeze()
        matcher.close()
