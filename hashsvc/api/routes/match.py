"""`POST /v1/match` (media) and `POST /v1/match/hashes` (precomputed hashes): verdicts.

Decoding and hashing run in a worker thread under the app's CPU limiter (at most
`hash_concurrency` at once per worker); so do batch lookups. A single precomputed-hash
lookup is a sub-millisecond index probe and runs on the event loop: a thread hop would
cost as much as the work. Reports are committed, in one transaction per request, before
the response is sent; `allow` verdicts go to the buffered audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
    report_ids, _ = await _record(
        request, services, key, "match", [result], "media", lambda _: _hashes_json(hashes)
    )
    body = {
        **_result_json(result, _Shown.of(key), report_ids[0]),
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
    shown = _Shown.of(key)
    if isinstance(query, schemas.HashQuery):
        result = matcher.match(_media_hashes(query))  # one index probe: cheaper than a thread hop
        ids, _ = await _record(
            request, services, key, "match_hashes", [result], "hashes", lambda _: _query_json(query)
        )
        return JSONResponse({**_result_json(result, shown, ids[0]), "request_id": request_id()})

    queries = query.items
    items = [_media_hashes(q) for q in queries]
    results = await run_cpu_bound(request, matcher.match_many, items)
    ids, counts = await _record(
        request, services, key, "match_hashes", results, "hashes",
        lambda i: _query_json(queries[i]),
    )  # fmt: skip
    return JSONResponse(
        {
            "items": [_result_json(r, shown, i) for r, i in zip(results, ids, strict=True)],
            "counts": {v.value: counts.get(v, 0) for v in Verdict},
            "request_id": request_id(),
        }
    )


async def _record(
    request: Request,
    services: Services,
    key: ApiKey,
    action: str,
    results: Sequence[MatchResult],
    source: str,
    kept: Callable[[int], dict[str, Any]],
) -> tuple[list[int | None], dict[Verdict, int]]:
    """Commit reports for block/report results (before the caller hears the verdict),
    audit the allows (buffered), count verdicts, notify the webhook. `kept(i)`: the
    hashes a report on result i keeps (asked only for block/report results). Returns the
    report ids and the count of each verdict."""
    rid = request_id()
    counts: dict[Verdict, int] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    allows = counts.get(Verdict.ALLOW, 0)
    ids: list[int | None] = [None] * len(results)
    if allows < len(results):
        matched = [i for i, r in enumerate(results) if r.verdict is not Verdict.ALLOW]
        records = services.records
        assert records is not None
        new = [reports.NewReport(results[i], kept(i), source) for i in matched]
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
                r = results[i]
                services.webhook.notify(
                    {
                        "event": "report.created",
                        "report_id": report_id,
                        "verdict": r.verdict.value,
                        "request_id": rid,
                        "lists": sorted({m.list_name for m in r.matches}),
                    }
                )
    if allows and services.audit is not None:
        services.audit.allow(action, key_id=key.id, request_id=rid, count=allows)
    for verdict, n in counts.items():
        services.metrics.count_verdict(verdict.value, source, n)
    if len(results) == 1:
        annotate(request, verdict=results[0].verdict.value, report_id=ids[0])
    else:
        annotate(request, items=len(results), verdicts={v.value: n for v, n in counts.items()})
    return ids, counts


class _Shown(NamedTuple):
    """What a key may see of a match (Match.to_json), decided once per request."""

    distances: bool
    metadata: bool

    @classmethod
    def of(cls, key: ApiKey) -> _Shown:
        return cls(key.has("review"), key.has("admin"))


def _result_json(result: MatchResult, shown: _Shown, report_id: int | None) -> dict[str, Any]:
    return {
        "verdict": result.verdict.value,
        "matches": [
            m.to_json(distances=shown.distances, metadata=shown.metadata) for m in result.matches
        ],
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

    return MediaHashes(
        pdq=_checked_hex(SignalType.PDQ, q.pdq),
        pdq_quality=None if q.pdq is None else q.pdq_quality,
        phash=_checked_hex(SignalType.PHASH, q.phash),
        md5=_checked_hex(SignalType.MD5, q.md5),
        sha256=_checked_hex(SignalType.SHA256, q.sha256),
        path=HashPath.REFERENCE,
    )


def _checked_hex(signal: SignalType, text: str | None) -> Hash | None:
    """A hash from text the schema has checked (exact length, hex digits only; Hash
    checks the byte length again). Module level: a closure built per item cost ~3 us."""
    return None if text is None else Hash(signal, bytes.fromhex(text))


def _query_json(q: schemas.HashQuery) -> dict[str, Any]:
    return {
        k: (v.lower() if isinstance(v, str) else v)
        for k, v in q.model_dump(exclude_none=True).items()
    }
