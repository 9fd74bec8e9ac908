"""Reports (scope `review`): list, read, resolve, export for a hotline.

What a report reveals follows the key: distances need `review` (every caller here has
it), the lists' own entry ids need `admin`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from hashsvc import reports
from hashsvc.api import schemas
from hashsvc.api.context import annotate, request_id
from hashsvc.api.deps import RecordsDep, ReviewKey
from hashsvc.keys import ApiKey
from hashsvc.reports import Report
from hashsvc.store import Store

router = APIRouter(prefix="/v1/reports", tags=["reports"])

StatusFilter = Annotated[
    Literal["open", "confirmed", "false_positive"] | None, Query(description="Only this status.")
]
Since = Annotated[datetime | None, Query(description="Created at or after (RFC 3339).")]
Until = Annotated[datetime | None, Query(description="Created before (RFC 3339).")]
BeforeId = Annotated[
    int | None, Query(ge=1, le=schemas.MAX_ID, description="Continue a listing: ids below this.")
]
ReportId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]


@router.get(
    "",
    response_model=schemas.ReportPage,
    summary="List reports, newest first",
    description="Scope `review`. Keyset pagination: pass `next_before_id` as `before_id`.",
    responses=schemas.error_responses(401, 403, 422, 429, 503),
)
async def list_reports(
    key: ReviewKey,
    store: RecordsDep,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    before_id: BeforeId = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSONResponse:
    page, next_before_id = await _page(
        store, limit, status=status, since=_ts(since), until=_ts(until), before_id=before_id
    )
    return JSONResponse(
        {"items": [report_json(r, key) for r in page], "next_before_id": next_before_id}
    )


@router.get(
    "/export",
    response_model=schemas.ReportExport,
    summary="Export reports for a hotline report",
    description="Scope `review` (list external ids need `admin` too). A JSON document to "
    "attach to a hotline report (NCMEC CyberTipline, a national hotline): for each report "
    "the upload's MD5, SHA-256, PDQ and pHash, what matched, when, and the review outcome. "
    "Filter with `status=confirmed` for what has been confirmed. Newest first, paged as "
    "the listing is: a document holds at most `limit` reports, and a non-null "
    "`next_before_id` means more match: pass it as `before_id` with the same filters.",
    responses=schemas.error_responses(401, 403, 422, 429, 503),
)
async def export_reports(
    request: Request,
    key: ReviewKey,
    store: RecordsDep,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    report_id: Annotated[
        list[Annotated[int, Query(ge=1, le=schemas.MAX_ID)]] | None,
        Query(description="Only these reports (repeat the parameter)."),
    ] = None,
    before_id: BeforeId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> JSONResponse:
    page, next_before_id = await _page(
        store,
        limit,
        status=status,
        since=_ts(since),
        until=_ts(until),
        before_id=before_id,
        ids=report_id,
    )
    annotate(request, exported=len(page), next_before_id=next_before_id)
    return JSONResponse(
        reports.export(page, metadata=key.has("admin"), next_before_id=next_before_id),
        headers={"Content-Disposition": f'attachment; filename="{_export_name(before_id)}"'},
    )


@router.get(
    "/{report_id}",
    response_model=schemas.ReportOut,
    summary="One report",
    description="Scope `review`.",
    responses=schemas.error_responses(401, 403, 404, 422, 429, 503),
)
async def get_report(report_id: ReportId, key: ReviewKey, store: RecordsDep) -> JSONResponse:
    report = await anyio.to_thread.run_sync(reports.get_report, store, report_id)
    return JSONResponse(report_json(report, key))


@router.post(
    "/{report_id}/resolve",
    response_model=schemas.ResolveResponse,
    summary="Resolve a report: confirmed or false positive",
    description="Scope `review`. A report is resolved once (409 after). With "
    "`disable_entries: true` a false positive also disables the matched list entries, "
    "on every worker within a second.",
    responses=schemas.error_responses(401, 403, 404, 409, 422, 429, 503),
)
async def resolve_report(
    request: Request,
    report_id: ReportId,
    body: schemas.ResolveRequest,
    key: ReviewKey,
    store: RecordsDep,
) -> JSONResponse:
    rid = request_id()
    report, disabled = await anyio.to_thread.run_sync(
        lambda: reports.resolve_report(
            store,
            report_id,
            body.status,
            note=body.note,
            key_id=key.id,
            request_id=rid,
            disable_entries=body.disable_entries,
        )
    )
    if disabled:
        await anyio.to_thread.run_sync(request.app.state.services.refresh_now)
    annotate(request, report_id=report_id, status=body.status)
    fresh = await anyio.to_thread.run_sync(reports.get_report, store, report.id)
    return JSONResponse({**report_json(fresh, key), "disabled_entry_ids": disabled})


def report_json(r: reports.Report, key: ApiKey) -> dict[str, Any]:
    review, admin = key.has("review"), key.has("admin")
    return {
        "id": r.id,
        "created_at": reports.iso(r.created_at),
        "verdict": r.verdict.value,
        "status": r.status.value,
        "source": r.source,
        "request_id": r.request_id,
        "key_id": r.key_id,
        "hashes": r.hashes,
        "matches": [m.to_json(distances=review, metadata=admin) for m in r.matches],
        "resolution": None
        if r.resolved_at is None
        else {
            "resolved_at": reports.iso(r.resolved_at),
            "resolved_by": r.resolved_by,
            "note": r.resolution_note,
        },
    }


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a time without a zone is taken as UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _export_name(before_id: int | None) -> str:
    """The download's file name: one per page, so saving the pages by name keeps them all."""
    return (
        "hashsvc-reports.json" if before_id is None else f"hashsvc-reports-before-{before_id}.json"
    )


async def _page(store: Store, limit: int, **filters: Any) -> tuple[list[Report], int | None]:
    """`reports.list_page` off the event loop (the listing's and the export's query)."""
    return await anyio.to_thread.run_sync(lambda: reports.list_page(store, limit=limit, **filters))
