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

Buffered allows are counted per key and action, not kept per request: a flush writes one
row per key and action that says how many verdicts (`count`) and requests
(`detail.requests`) it stands for, from `at` to `detail.until`. Its request id is the
request's own when the row stands for one request, else empty (the JSON access log has
every request id). Why: one row per request was a row per lookup, ~240M a day at the API's
single-lookup rate, and writing them cost a worker 9-10 ms of CPU every 0.5 s tick at
~1,400 lookups/s (bench/api.py, 1M index); the counted rows answer the audit's questions,
who asked, when, and what was decided, at a few rows per tick.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hashsvc.store import Store


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


@dataclass
class _Allows:
    """The allow verdicts of one key and action since the last flush."""

    first: float
    last: float
    count: int = 0
    requests: int = 0
    request_id: str = ""  # the request's, while there is only one

    def absorb(self, other: _Allows) -> None:
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.count += other.count
        self.requests += other.requests
        self.request_id = ""


class AuditLog:
    """Writes audit rows to the store; counts `allow` verdicts until `flush` (see module
    docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int | None], _Allows] = {}

    def record(self, event: AuditEvent) -> None:
        """Count an `allow` verdict (written at the next flush); write anything else at
        once."""
        if event.verdict != "allow" or event.entry_ids or event.report_id or event.detail:
            self.record_now([event])
            return
        at = self.store.now() if event.at is None else event.at
        self._count(event.action, event.key_id, event.request_id, event.count, at)

    def allow(self, action: str, *, key_id: int | None, request_id: str, count: int) -> None:
        """`record` of `count` allow verdicts of one request (the hot path: no event is
        made)."""
        self._count(action, key_id, request_id, count, self.store.now())

    def _count(
        self, action: str, key_id: int | None, request_id: str, count: int, at: float
    ) -> None:
        with self._lock:
            self._add((action, key_id), _Allows(at, at, count, 1, request_id))

    def _add(self, key: tuple[str, int | None], allows: _Allows) -> None:
        """Under the lock: `allows` into the pending counts of `key`."""
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = allows
        else:
            pending.absorb(allows)

    def record_now(self, events: Sequence[AuditEvent]) -> None:
        with self.store.transaction() as conn:
            write_events(conn, events, self.store.now())

    def flush(self) -> int:
        """Write the counted allows, one row per key and action; returns the number of
        requests they stand for. On failure they stay counted for the next attempt."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        events = [
            AuditEvent(
                action=action,
                key_id=key_id,
                request_id=a.request_id,
                verdict="allow",
                count=a.count,
                detail={"requests": a.requests, "until": a.last} if a.requests > 1 else {},
                at=a.first,
            )
            for (action, key_id), a in pending.items()
        ]
        try:
            self.record_now(events)
        except BaseException:
            with self._lock:  # back into the counts, for the next attempt
                for key, allows in pending.items():
                    self._add(key, allows)
            raise
        return sum(a.requests for a in pending.values())
