"""Prometheus metrics of one app: requests, latency, verdicts, index size and age.

Each app gets its own registry, so tests can build many apps in one process. With several
worker processes (`hashsvc serve --workers N`), `serve` points prometheus_client at a
fresh shared directory before the workers start (its multiprocess mode): every worker
writes its samples there and `/metrics` on any worker aggregates all of them. Gauges
say how: index sizes take the largest live worker's value, index age the oldest.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes samples to a shared directory (set up by
    `hashsvc serve` for several workers)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "hashsvc_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hashsvc_http_request_duration_seconds",
            "Time from request start to response end.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter(
            "hashsvc_verdicts_total",
            "Verdicts given, per item of a batch.",
            ["verdict", "source"],
            registry=r,
        )
        self.reports = Counter("hashsvc_reports_created_total", "Reports committed.", registry=r)
        self.hash_seconds = Histogram(
            "hashsvc_media_hash_duration_seconds",
            "Decode + hash time of one upload.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_failures = Counter(
            "hashsvc_webhook_failures_total", "Report notifications given up on.", registry=r
        )
        self.index_entries = Gauge(
            "hashsvc_index_entries",
            "Codes in the in-memory search index.",
            ["signal"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.index_age = Gauge(
            "hashsvc_index_age_seconds",
            "Seconds since the index was last brought up to date with the store.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.index_version = Gauge(
            "hashsvc_index_store_version",
            "Store change-log sequence the index reflects.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ready = Gauge(
            "hashsvc_ready",
            "1 when this worker answers matches (see /readyz).",
            registry=r,
            multiprocess_mode="livemin",
        )

        # labelled children by label values: `.labels()` validates and locks on every
        # call; the label sets on the request path are few and fixed (methods the HTTP
        # parser accepts x route templates x statuses; 3 verdicts x 2 sources)
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}
        self._verdicts: dict[tuple[str, str], Any] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (labelled by route template)."""
        counter = self._requests.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method, route, str(status))
            self._requests[(method, route, status)] = counter
        counter.inc()
        histogram = self._latency.get((method, route))
        if histogram is None:
            histogram = self._latency[(method, route)] = self.latency.labels(method, route)
        histogram.observe(seconds)

    def count_verdict(self, verdict: str, source: str, n: int = 1) -> None:
        counter = self._verdicts.get((verdict, source))
        if counter is None:
            counter = self._verdicts[(verdict, source)] = self.verdicts.labels(verdict, source)
        counter.inc(n)

    def render(self) -> tuple[bytes, str]:
        if multiprocess_mode():
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a stopping worker's live gauges from the shared directory."""
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
