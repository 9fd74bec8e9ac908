"""`HASHSVC_OPENTELEMETRY`: FastAPI's native OpenTelemetry runs only when it is on.

A recording tracer provider stands in for a configured SDK (as `opentelemetry-instrument`
would install one): with the setting off no request opens a span, with it on every
request does (the hash-lookup fast lane included) and is still answered."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace

from hashsvc.config import Settings
from tests.api.conftest import Env, make_app, running


class RecordingTracer(trace.NoOpTracer):
    def __init__(self, spans: list[str]) -> None:
        self.spans = spans

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if kwargs.get("kind") == trace.SpanKind.SERVER:  # one per request
            self.spans.append(name)
        return super().start_span(name, *args, **kwargs)


class RecordingProvider(trace.TracerProvider):  # not NoOp: FastAPI skips that one
    def __init__(self) -> None:
        self.spans: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return RecordingTracer(self.spans)


@pytest.mark.parametrize("on", [False, True])
def test_spans_only_when_enabled(env: Env, monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    provider = RecordingProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    with running(make_app(env, opentelemetry=on)) as client:
        provider.spans.clear()  # readiness polls
        r = client.post("/v1/match/hashes", json={"pdq": "ab" * 32}, headers=env.auth("match"))
        assert r.status_code == 200 and r.json()["verdict"] == "allow"
        r = client.get("/v1/lists", headers=env.auth("admin"))
        assert r.status_code == 200
    if on:
        assert provider.spans == ["POST", "GET"]  # named by method; the route comes later
    else:
        assert provider.spans == []


def test_setting_from_env() -> None:
    assert Settings.from_env({}).opentelemetry is False
    assert Settings.from_env({"HASHSVC_OPENTELEMETRY": "1"}).opentelemetry is True
