"""The audit log: who asked, when, what was decided, which list entries were involved.

What a row may hold is fixed here, so no caller can put more in it: the key id, the
request id, the action, the verdict, how many identical verdicts the row stands for, the
matched entry ids, a report id and a small `detail` object of counts and names. Never the
media, never a hash of an upload (the report, not the audit log, keeps a matched upload's
hashes), never a file name.

Durability follows the stakes: `block`/`report` verdicts and every administrative action
are written with the caller's transaction or at once (`record_now`); `allow` verdicts are
the bulk of traffic, so `AuditLog.record` buffers them and `flush()` writes them in one
transaction (the API flushes every refresher tick and at shutdown). A crash may lose up
to one tick of `allow` rows; it never loses a block or a report.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hashsvc.store import Store

#: `allow` rows buffered beyond this are flushed by the next `record` call itself.
MAX_PENDING = 10_000


@dataclass(frozen=True)
class AuditEvent:
    action: str  # match | match_hashes | list.create | entries.add | entry.update | ...
    key_id: int | None
    request_id: str = ""
    verdict: str | None = None
    count: int = 1
    entry_ids: Sequence[int] = ()
    report_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float | None = None  # None: the store's clock at write time


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    key_id: int | None
    request_id: str
    action: str
    verdict: str | None
    count: int
    entry_ids: list[int]
    report_id: int | None
    detail: dict[str, Any]


def write_events(conn: sqlite3.Connection, events: Iterable[AuditEvent], now: float) -> None:
    """Insert rows inside the caller's transaction (so a report and its audit row commit
    together)."""
    conn.executemany(
        "INSERT INTO audit (at, key_id, request_id, action, verdict, count, entry_ids,"
        " report_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                now if e.at is None else e.at,
                e.key_id,
                e.request_id,
                e.action,
                e.verdict,
                e.count,
                _ids_json(e.entry_ids),
                e.report_id,
                _detail_json(e.detail),
            )
            for e in events
        ],
    )


def _ids_json(ids: Sequence[int]) -> str:
    # most rows are allows with no entries: the text json.dumps gives, without encoding
    return json.dumps(sorted(int(i) for i in ids)) if ids else "[]"


def _detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True) if detail else "{}"


def read(store: Store, *, after_id: int = 0, limit: int = 1000) -> list[AuditRow]:
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT id, at, key_id, request_id, action, verdict, count, entry_ids, report_id,"
            " detail FROM audit WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
    return [
        AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], json.loads(r[9]))
        for r in rows
    ]


class AuditLog:
    """Writes audit rows to the store; buffers `allow` verdicts (see module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pending: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        """Buffer an `allow` verdict (stamped now, written at the next flush); anything
        else is written at once."""
        if event.verdict != "allow":
            self.record_now([event])
            return
        if event.at is None:
            event = replace(event, at=self.store.now())
        self._buffer(event)

    def allow(self, action: str, *, key_id: int | None, request_id: str, count: int) -> None:
        """`record` of `count` allow verdicts of one request (the hot path: the event is
        made with its time instead of copied to add it)."""
        self._buffer(
            AuditEvent(
                action=action,
                key_id=key_id,
                request_id=request_id,
                verdict="allow",
                count=count,
                at=self.store.now(),
            )
        )

    def _buffer(self, event: AuditEvent) -> None:
        with self._lock:
            self._pending.append(event)
            full = len(self._pending) >= MAX_PENDING
        if full:
            self.flush()

    def record_now(self, events: Sequence[AuditEvent]) -> None:
        with self.store.transaction() as conn:
            write_events(conn, events, self.store.now())

    def flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            try:
                self.record_now(pending)
            except BaseException:
                with self._lock:  # keep them for the next attempt
                    self._pending[:0] = pending
                raise
        return len(pending)
