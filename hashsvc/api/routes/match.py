"""`POST /v1/match` (media) and `POST /v1/match/hashes` (precomputed hashes): verdicts.

Decoding and hashing run in a worker thread under the app's CPU limiter (at most
`hash_concurrency` at once per worker); so do batch lookups. A single precomputed-hash
lookup is a sub-millisecond index probe and runs on the event loop: a thread hop would
cost as much as the work. Reports are committed, in one transaction per request, before
the response is sent; `allow` verdicts go to the buffered audit log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from hashsvc import reports, vpdq
from hashsvc.api import schemas
from hashsvc.api.context import annotate, request_id
from hashsvc.api.deps import MatchCall
from hashsvc.api.limits import run_cpu_bound
from hashsvc.api.runtime import Services
from hashsvc.api.uploads import read_upload
from hashsvc.audit import AuditEvent
from hashsvc.hashing import HashPath, MediaHashes
from hashsvc.keys import ApiKey
from hashsvc.matcher import Hashes, Matcher, MatchResult
from hashsvc.policy import Verdict
from hashsvc.signals import Hash, SignalType
from hashsvc.video import VideoHashes

router = APIRouter(prefix="/v1", tags=["match"])


@router.post(
    "/match",
    response_model=schemas.MatchResponse,
    summary="Verdict for an upload",
    description="Scope `match`. The media is hashed in memory (never stored) and matched "
    "against every enabled list entry, all 8 rotations/flips included. `block` and `report` "
    "verdicts create a durable report before this response is sent.",
    openapi_extra={"requestBody": schemas.MEDIA_BODY},
    responses=schemas.error_responses(401, 403, 413, 415, 422, 429, 503),
)
async def match_media(request: Request, ctx: MatchCall) -> JSONResponse:
    key, services, matcher = ctx.key, ctx.services, ctx.matcher
    data = await read_upload(request)
    result, hashes = await run_cpu_bound(request, _hash_and_match, matcher, services, data)
    del data  # the media is not needed past this point; nothing else holds it
    report_ids = await _record(
        request, services, key, "match", [(result, _hashes_json(hashes), "media")]
    )
    body = {
        **_result_json(result, key, report_ids[0]),
        "hashes": _hashes_json(hashes),
        "request_id": request_id(),
    }
    return JSONResponse(body)


def _hash_and_match(
    matcher: Matcher, services: Services, data: bytes
) -> tuple[MatchResult, Hashes]:
    start = time.perf_counter()
    hashes = matcher.hash_upload(data)
    services.metrics.hash_seconds.observe(time.perf_counter() - start)
    result = matcher.match_upload(hashes, data)
    if result.verdict is not Verdict.ALLOW:
        if isinstance(hashes, VideoHashes):
            if hashes.fast:  # a report keeps hashes any vPDQ implementation reproduces
                hashes = matcher.hash_video(data)
        else:
            hashes = reports.reference_hashes(data, hashes, max_pixels=matcher.settings.max_pixels)
    return result, hashes


@router.post(
    "/match/hashes",
    response_model=schemas.HashMatchResponse | schemas.BatchMatchResponse,
    summary="Verdicts for precomputed hashes",
    description='Scope `match`. One object (`{"pdq": ..., "phash": ..., "md5": ...}`) '
    f'gets one verdict; `{{"items": [...]}}` (up to {schemas.MAX_BATCH}) gets one verdict '
    "per item, in order. The submitted hashes are not echoed back.",
    responses=schemas.error_responses(401, 403, 413, 422, 429, 503),
)
async def match_hashes(
    request: Request,
    ctx: MatchCall,
    query: schemas.HashMatchRequest = Body(),  # noqa: B008
) -> JSONResponse:
    key, services, matcher = ctx.key, ctx.services, ctx.matcher
    if isinstance(query, schemas.HashQuery):
        hashes = _media_hashes(query)
        result = matcher.match(hashes)  # one index probe: cheaper than a thread hop
        ids = await _record(
            request, services, key, "match_hashes", [(result, _query_json(query), "hashes")]
        )
        return JSONResponse({**_result_json(result, key, ids[0]), "request_id": request_id()})

    items = [_media_hashes(q) for q in query.items]
    results = await run_cpu_bound(request, matcher.match_many, items)
    ids = await _record(
        request,
        services,
        key,
        "match_hashes",
        [(r, _query_json(q), "hashes") for r, q in zip(results, query.items, strict=True)],
    )
    counts = Counter(r.verdict.value for r in results)
    return JSONResponse(
        {
            "items": [_result_json(r, key, i) for r, i in zip(results, ids, strict=True)],
            "counts": {v.value: counts.get(v.value, 0) for v in Verdict},
            "request_id": request_id(),
        }
    )


async def _record(
    request: Request,
    services: Services,
    key: ApiKey,
    action: str,
    items: Sequence[tuple[MatchResult, dict[str, Any], str]],
) -> list[int | None]:
    """Commit reports for block/report items (before the caller hears the verdict), audit
    the allows (buffered), count verdicts, notify the webhook. Returns report ids."""
    rid = request_id()
    source = items[0][2] if items else "hashes"
    matched = [i for i, (r, _, _) in enumerate(items) if r.verdict is not Verdict.ALLOW]
    ids: list[int | None] = [None] * len(items)
    if matched:
        records = services.records
        assert records is not None
        new = [reports.NewReport(items[i][0], items[i][1], items[i][2]) for i in matched]
        created = await anyio.to_thread.run_sync(
            lambda: reports.create_reports(
                records, new, key_id=key.id, request_id=rid, action=action
            )
        )
        for i, report_id in zip(matched, created, strict=True):
            ids[i] = report_id
        services.metrics.reports.inc(len(created))
        if services.webhook is not None:
            for i, report_id in zip(matched, created, strict=True):
                r = items[i][0]
                services.webhook.notify(
                    {
                        "event": "report.created",
                        "report_id": report_id,
                        "verdict": r.verdict.value,
                        "request_id": rid,
                        "lists": sorted({m.list_name for m in r.matches}),
                    }
                )
    allows = len(items) - len(matched)
    if allows and services.audit is not None:
        services.audit.record(
            AuditEvent(action=action, key_id=key.id, request_id=rid, verdict="allow", count=allows)
        )
    verdicts = Counter(r.verdict.value for r, _, _ in items)
    for verdict, n in verdicts.items():
        services.metrics.verdicts.labels(verdict, source).inc(n)
    if len(items) == 1:
        annotate(request, verdict=items[0][0].verdict.value, report_id=ids[0])
    else:
        annotate(request, items=len(items), verdicts=dict(verdicts))
    return ids


def _result_json(result: MatchResult, key: ApiKey, report_id: int | None) -> dict[str, Any]:
    review, admin = key.has("review"), key.has("admin")
    return {
        "verdict": result.verdict.value,
        "matches": [m.to_json(distances=review, metadata=admin) for m in result.matches],
        "report_id": report_id,
        "notes": list(result.notes),
    }


def _hashes_json(hashes: Hashes) -> dict[str, Any]:
    if isinstance(hashes, VideoHashes):
        return {**hashes.to_json(), "decode_path": "fast" if hashes.fast else "reference"}
    return {**hashes.to_json(), "decode_path": hashes.path.value}


def _media_hashes(q: schemas.HashQuery) -> Hashes:
    if q.vpdq is not None:
        frames = vpdq.parse("\n".join(q.vpdq), source="vpdq")  # HashListError: 422
        return VideoHashes(
            md5=Hash.from_hex(SignalType.MD5, q.md5) if q.md5 else None,
            sha256=Hash.from_hex(SignalType.SHA256, q.sha256) if q.sha256 else None,
            frames=tuple(frames),
        )

    def h(signal: SignalType, text: str | None) -> Hash | None:
        return None if text is None else Hash.from_hex(signal, text)

    return MediaHashes(
        pdq=h(SignalType.PDQ, q.pdq),
        pdq_quality=q.pdq_quality if q.pdq is not None else None,
        phash=h(SignalType.PHASH, q.phash),
        md5=h(SignalType.MD5, q.md5),
        sha256=h(SignalType.SHA256, q.sha256),
        path=HashPath.REFERENCE,
    )


def _query_json(q: schemas.HashQuery) -> dict[str, Any]:
    return {
        k: (v.lower() if isinstance(v, str) else v)
        for k, v in q.model_dump(exclude_none=True).items()
    }
