"""Reports: the durable record of every `block` or `report` verdict, and its review.

A report is committed (WAL + synchronous=FULL) before the caller hears the verdict, so a
platform that acted on a `block` can always find the record afterwards. It holds what a
hotline report needs: the time, the upload's hashes (never the media), the matched list
entries with their distances, the key and request that asked. Its audit row is written in
the same transaction.

Review: a report starts `open`; a reviewer marks it `confirmed` or `false_positive` once
(a second resolution is a `Conflict`: the audit log, not an overwrite, keeps history). A
false positive may disable the matched entries, which takes them out of matching on every
worker within one refresh.

`export()` builds the JSON a team attaches to a hotline report (NCMEC CyberTipline or a
national hotline): hashes in their industry formats, what matched, when, and the review.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hashsvc import __version__
from hashsvc.audit import AuditEvent, write_events
from hashsvc.errors import Conflict, InvalidValue, NotFound
from hashsvc.hashing import HashPath, MediaHashes, hash_media
from hashsvc.matcher import Match, MatchResult
from hashsvc.policy import Verdict
from hashsvc.signals import SignalType
from hashsvc.store import Action, Store
from hashsvc.store import iso as iso

MAX_NOTE_CHARS = 2000
EXPORT_FORMAT = "hashsvc-report-export"
EXPORT_VERSION = 1


class ReportStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    FALSE_POSITIVE = "false_positive"


@dataclass(frozen=True)
class Report:
    id: int
    created_at: float
    verdict: Verdict
    status: ReportStatus
    source: str  # media | hashes
    key_id: int | None
    request_id: str
    hashes: dict[str, Any]  # the upload's hashes, MediaHashes.to_json() + decode_path
    matches: tuple[Match, ...]
    resolved_at: float | None
    resolved_by: int | None
    resolution_note: str

    @property
    def entry_ids(self) -> list[int]:
        return sorted({m.entry_id for m in self.matches})


@dataclass(frozen=True)
class NewReport:
    """What one matched item contributes: its result and the hashes to keep."""

    result: MatchResult
    hashes: dict[str, Any]
    source: str  # media | hashes


def create_reports(
    store: Store,
    items: Sequence[NewReport],
    *,
    key_id: int | None,
    request_id: str,
    action: str,
) -> list[int]:
    """Commit one report (and its audit row) per item, all in one transaction; returns
    their ids in order. Every item must have a `block` or `report` verdict."""
    if not items:
        return []
    now = store.now()
    ids: list[int] = []
    events: list[AuditEvent] = []
    with store.transaction() as conn:
        for item in items:
            v = item.result.verdict
            if v is Verdict.ALLOW:
                raise InvalidValue("an 'allow' verdict does not make a report")
            if item.source not in ("media", "hashes"):
                raise InvalidValue(f"report source must be media or hashes, not {item.source!r}")
            cur = conn.execute(
                "INSERT INTO reports (created_at, verdict, source, key_id, request_id, hashes,"
                " matches) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    v.value,
                    item.source,
                    key_id,
                    request_id,
                    json.dumps(item.hashes, sort_keys=True),
                    json.dumps([_match_json(m) for m in item.result.matches]),
                ),
            )
            report_id = cur.lastrowid
            assert report_id is not None
            ids.append(report_id)
            events.append(
                AuditEvent(
                    action=action,
                    key_id=key_id,
                    request_id=request_id,
                    verdict=v.value,
                    entry_ids=[m.entry_id for m in item.result.matches],
                    report_id=report_id,
                )
            )
        write_events(conn, events, now)
    return ids


def reference_hashes(data: bytes, hashes: MediaHashes, *, max_pixels: int) -> MediaHashes:
    """The hashes a report keeps and a hotline receives: the reference decode path's, which
    any other PDQ/pHash implementation reproduces. Matching may have used the fast path
    (a few bits of drift); re-hashing costs milliseconds and happens only on a match."""
    if hashes.path is HashPath.REFERENCE:
        return hashes
    return hash_media(data, path=HashPath.REFERENCE, max_pixels=max_pixels)


def get_report(store: Store, report_id: int) -> Report:
    with store.reading() as conn:
        row = conn.execute(f"SELECT {_COLS} FROM reports WHERE id = ?", (report_id,)).fetchone()
    if row is None:
        raise NotFound(f"no report {report_id}")
    return _report(row)


def list_page(
    store: Store,
    *,
    status: ReportStatus | str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_id: int | None = None,
    limit: int = 100,
    ids: Iterable[int] | None = None,
) -> tuple[list[Report], int | None]:
    """Up to `limit` reports, newest first, and the `before_id` that continues the page
    (None when nothing more matches). `before_id` is keyset pagination: stable while new
    reports arrive; `since` is inclusive, `until` exclusive. The listing and the export
    both page with it, and one report past the page is read so that "more" is known,
    never guessed from a full page (a page of exactly the rest is then the last one, not
    a pointer to an empty page)."""
    where: list[str] = ["1"]
    params: dict[str, object] = {}
    if status is not None:
        where.append("status = :status")
        params["status"] = ReportStatus(status).value
    if since is not None:
        where.append("created_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("created_at < :until")
        params["until"] = until
    if before_id is not None:
        where.append("id < :before")
        params["before"] = before_id
    if ids is not None:
        where.append("id IN (SELECT value FROM json_each(:ids))")
        params["ids"] = json.dumps([int(i) for i in ids])
    params["limit"] = int(limit) + 1
    with store.reading() as conn:
        rows = conn.execute(
            f"SELECT {_COLS} FROM reports WHERE {' AND '.join(where)} ORDER BY id DESC"
            " LIMIT :limit",
            params,
        ).fetchall()
    page = [_report(r) for r in rows[:limit]]
    return page, page[-1].id if len(rows) > limit and page else None


def resolve_report(
    store: Store,
    report_id: int,
    status: ReportStatus | str,
    *,
    note: str = "",
    key_id: int | None,
    request_id: str = "",
    disable_entries: bool = False,
) -> tuple[Report, list[int]]:
    """Resolve an open report; with `disable_entries` (false positives only) disable its
    matched entries. Returns the report and the ids of the entries disabled."""
    new = ReportStatus(status)
    if new is ReportStatus.OPEN:
        raise InvalidValue("a report is resolved as 'confirmed' or 'false_positive'")
    if disable_entries and new is not ReportStatus.FALSE_POSITIVE:
        raise InvalidValue("only a false positive can disable the matched entries")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise InvalidValue(f"note must be a string of at most {MAX_NOTE_CHARS} characters")
    with store.transaction() as conn:
        row = conn.execute("SELECT status FROM reports WHERE id = ?", (report_id,)).fetchone()
        if row is None:
            raise NotFound(f"no report {report_id}")
        if row[0] != ReportStatus.OPEN.value:
            raise Conflict(f"report {report_id} is already resolved ({row[0]})")
        conn.execute(
            "UPDATE reports SET status = ?, resolved_at = ?, resolved_by = ?,"
            " resolution_note = ? WHERE id = ?",
            (new.value, store.now(), key_id, note, report_id),
        )
    report = get_report(store, report_id)
    disabled: list[int] = []
    if disable_entries:
        for entry_id in report.entry_ids:
            try:
                store.set_enabled(entry_id, False)
            except NotFound:  # removed since: nothing left to disable
                continue
            disabled.append(entry_id)
    with store.transaction() as conn:
        write_events(
            conn,
            [
                AuditEvent(
                    action="report.resolve",
                    key_id=key_id,
                    request_id=request_id,
                    entry_ids=report.entry_ids,
                    report_id=report_id,
                    detail={"status": new.value, "disabled_entry_ids": disabled},
                )
            ],
            store.now(),
        )
    return report, disabled


def export(
    reports: Iterable[Report], *, metadata: bool, next_before_id: int | None = None
) -> dict[str, Any]:
    """The hotline export. `metadata` adds the lists' own entry ids (admin callers only:
    they are list metadata, see DESIGN.md). `next_before_id` says the document is one page
    of a longer export and how to ask for the rest: a report sent to a hotline must never
    be silently incomplete. It is always present (None: this document is the whole
    export), so a reader never has to take a missing field to mean "complete"."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "generator": f"hashsvc {__version__}",
        "generated_at": iso(time.time()),
        "next_before_id": next_before_id,
        "hash_formats": {
            "md5": "hex of the uploaded bytes",
            "sha256": "hex of the uploaded bytes",
            "pdq": "Meta PDQ, 256 bits, hex, most significant bit first",
            "phash": "DCT perceptual hash (imagehash.phash), 64 bits, hex",
        },
        "reports": [
            {
                "report_id": r.id,
                "detected_at": iso(r.created_at),
                "verdict": r.verdict.value,
                "status": r.status.value,
                "source": r.source,
                "request_id": r.request_id,
                "media_hashes": r.hashes,
                "matches": [m.to_json(distances=True, metadata=metadata) for m in r.matches],
                "review": None
                if r.resolved_at is None
                else {"resolved_at": iso(r.resolved_at), "note": r.resolution_note},
            }
            for r in reports
        ],
    }


_COLS = (
    "id, created_at, verdict, status, source, key_id, request_id, hashes, matches,"
    " resolved_at, resolved_by, resolution_note"
)


def _match_json(m: Match) -> dict[str, Any]:
    return {
        **m.to_json(distances=True, metadata=True),
        "action": m.action.value,
        "category": m.category,
        "external_id": m.external_id,
    }


def _match(d: dict[str, Any]) -> Match:
    return Match(
        list_name=d["list"],
        entry_id=int(d["entry_id"]),
        signal=SignalType(d["signal_type"]),
        distance=int(d.get("distance", 0)),
        action=Action(d["action"]),
        category=d.get("category", ""),
        external_id=d.get("external_id", ""),
        variant=d.get("variant"),
    )


def _report(row: tuple[Any, ...]) -> Report:
    return Report(
        id=row[0],
        created_at=row[1],
        verdict=Verdict(row[2]),
        status=ReportStatus(row[3]),
        source=row[4],
        key_id=row[5],
        request_id=row[6],
        hashes=json.loads(row[7]),
        matches=tuple(_match(d) for d in json.loads(row[8])),
        resolved_at=row[9],
        resolved_by=row[10],
        resolution_note=row[11],
    )
