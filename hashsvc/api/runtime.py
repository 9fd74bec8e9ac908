"""What one API worker process holds, and the background thread that keeps it current.

`Services` is built per app (so per worker process: uvicorn's factory mode builds one
app in each). It opens three SQLite connections to the one database, each for one kind
of work, so a slow thing never holds the lock a fast thing needs:

- the Matcher's store: reads on the match path (thresholds, entry metadata, exact MD5
  and SHA-256 lookups);
- the index store: the refresher's change-log reads (a catch-up can read many rows);
- the records store: keys, reports, audit, list administration (writes that fsync).

The background thread first opens the Matcher (loading or building the index: seconds at
millions of entries; `/readyz` says 503 meanwhile while `/healthz` already says 200),
then every `index_refresh_seconds` applies store changes to the index, reloads the
active keys and flushes buffered audit rows. Admin routes call `refresh_now()` after a
write so the worker that made a change sees it at once; the others see it at their next
tick. Readiness fails when the last successful refresh is older than `stale_after()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hashsvc.api.limits import RateLimiter
from hashsvc.api.metrics import Metrics, mark_process_dead
from hashsvc.audit import AuditLog
from hashsvc.config import Settings
from hashsvc.keys import KeyRing
from hashsvc.matcher import Matcher
from hashsvc.store import Store

log = logging.getLogger("hashsvc.api")

MatcherFactory = Callable[[Settings], Matcher]


def stale_after(settings: Settings) -> float:
    """Seconds without a successful refresh after which the worker is not ready."""
    return max(5.0, 10 * settings.index_refresh_seconds)


def open_matcher(settings: Settings) -> Matcher:
    """The production factory: separate connections for request reads and the refresher,
    and every numba kernel a request can reach compiled (or loaded from numba's cache)
    before the worker says it is ready.

    Then everything allocated so far is moved out of the garbage collector's sight
    (`gc.freeze`): numba's typing and dispatch objects make a full collection of a
    loaded worker cost ~130-150 ms, and the event loop stands still meanwhile. Under
    load (bench/api.py's single lookups, 32 clients) one worker ran such a collection
    within 16 s; with the startup objects frozen, none ran in 24 s on either worker.
    """
    import gc

    from hashsvc.index_sync import IndexSet

    store = Store.open(settings.db_path)
    index_store = Store.open(settings.db_path)
    try:
        matcher = Matcher(
            store,
            IndexSet.open(index_store, settings.data_dir, settings.index_inline_max_bytes),
            settings,
        )
        warm_up(matcher)
    except BaseException:
        store.close()
        index_store.close()
        raise
    gc.collect()  # what start-up left as garbage goes now, not frozen forever
    gc.freeze()
    return matcher


def warm_up(matcher: Matcher) -> None:
    """Run each request path once on a generated image: the upload path exactly as
    configured (fast decode, dihedral, border trim), the reference path of `/v1/hash`
    and of reports, and single and batch searches. A first upload would otherwise pay
    seconds of JIT compilation (or a cache load) inside a request."""
    import io

    import numpy as np
    from PIL import Image

    from hashsvc import hashing, search

    search.warmup()
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((320, 240), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    data = buf.getvalue()
    hashes = matcher.hash_upload(data)
    matcher.match_many([hashes, hashes])
    matcher.match(hashes)
    hashing.hash_media(data, path=hashing.HashPath.REFERENCE, dihedral=True)


@dataclass
class Services:
    settings: Settings
    matcher_factory: MatcherFactory = open_matcher
    metrics: Metrics = field(default_factory=Metrics)
    records: Store | None = None
    keyring: KeyRing | None = None
    audit: AuditLog | None = None
    webhook: WebhookNotifier | None = None
    matcher: Matcher | None = None
    load_error: str | None = None
    last_refresh: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    rate_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.rate_limiter = RateLimiter(s.rate_limit_per_minute, s.workers)

    # -- lifecycle (the app's lifespan) ---------------------------------------------

    def start(self) -> None:
        self.records = Store.open(self.settings.db_path)
        self.keyring = KeyRing(self.records)
        self.keyring.reload()
        self.audit = AuditLog(self.records)
        if self.settings.webhook_url:
            self.webhook = WebhookNotifier(self.settings.webhook_url, self.metrics)
            self.webhook.start()
        self.metrics.ready.set(0)
        self._thread = threading.Thread(target=self._run, name="hashsvc-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.webhook is not None:
            self.webhook.stop()
        if self.audit is not None:
            try:
                self.audit.flush()
            except Exception:
                log.exception("could not flush the audit log at shutdown")
        if self.matcher is not None:
            self.matcher.close()
            self.matcher.indexes.store.close()
        if self.records is not None:
            self.records.close()
        mark_process_dead(os.getpid())

    # -- state ----------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.load_error is not None:
            return False, f"index failed to load: {self.load_error}"
        if self.matcher is None:
            return False, "index loading"
        age = time.time() - self.last_refresh
        if age > stale_after(self.settings):
            return False, f"index stale: last refreshed {age:.1f} s ago"
        if self._thread is None or not self._thread.is_alive():
            return False, "index refresher stopped"
        return True, "ready"

    def refresh_now(self) -> None:
        """Apply store changes to this worker's index now (after an admin write)."""
        matcher = self.matcher
        if matcher is None:
            return
        with self._refresh_lock:
            matcher.indexes.refresh()
            self.last_refresh = time.time()
        self._update_gauges(matcher)

    # -- the background thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            matcher = self.matcher_factory(self.settings)
        except Exception as e:
            log.exception("could not open the index")
            self.load_error = str(e) or type(e).__name__
            return
        self.matcher = matcher
        self.last_refresh = time.time()
        self._update_gauges(matcher)
        self.metrics.ready.set(1)
        log.info("index loaded", extra={"fields": {"entries": matcher.indexes.sizes()}})
        interval = self.settings.index_refresh_seconds
        while not self._stop.wait(interval):
            self._tick()

    def _tick(self) -> None:
        try:
            self.refresh_now()
        except Exception:
            log.exception("index refresh failed")  # readiness turns 503 if it persists
        assert self.keyring is not None and self.audit is not None
        for what, job in (("keys", self.keyring.reload), ("audit", self.audit.flush)):
            try:
                job()
            except Exception:
                log.exception("background %s update failed", what)
        self.metrics.index_age.set(time.time() - self.last_refresh)
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    def _update_gauges(self, matcher: Matcher) -> None:
        for signal, n in matcher.indexes.sizes().items():
            self.metrics.index_entries.labels(signal).set(n)
        self.metrics.index_version.set(matcher.indexes.version)
        self.metrics.index_age.set(time.time() - self.last_refresh)


class WebhookNotifier:
    """POSTs `{"event": "report.created", ...}` for each new report from a background
    thread, so a slow or dead receiver never delays a verdict. The payload names the
    report, its verdict, time and the lists matched: no hashes, no list metadata; the
    receiver fetches the report with a review key. A bounded queue: when the receiver
    falls far behind, notifications are dropped and counted, not piled up in memory."""

    TIMEOUT = 5.0
    ATTEMPTS = 3
    MAX_QUEUE = 10_000

    def __init__(self, url: str, metrics: Metrics) -> None:
        self.url = url
        self.metrics = metrics
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(self.MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="hashsvc-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1)
        self._thread.join(timeout=self.TIMEOUT * 2)

    def notify(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.metrics.webhook_failures.inc()
            log.warning(
                "webhook queue full; notification dropped",
                extra={"fields": {"report_id": payload.get("report_id")}},
            )

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            data = json.dumps(payload).encode()
            for attempt in range(self.ATTEMPTS):
                try:
                    req = urllib.request.Request(
                        self.url,
                        data=data,
                        method="POST",
                        headers={
                            "Content-Type": "application/json",
                            "User-Agent": "hashsvc-webhook",
                        },
                    )
                    with urllib.request.urlopen(req, timeout=self.TIMEOUT) as resp:  # noqa: S310
                        if resp.status < 300:
                            break
                except Exception as e:
                    log.warning("webhook attempt %d failed: %s", attempt + 1, type(e).__name__)
                if attempt + 1 < self.ATTEMPTS:
                    time.sleep(0.25 * 2**attempt)
            else:
                self.metrics.webhook_failures.inc()
