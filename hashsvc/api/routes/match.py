"""`POST /v1/match` (media) and `POST /v1/match/hashes` (precomputed hashes): verdicts.

Decoding and hashing run in a worker thread under the app's CPU limiter (at most
`hash_concurrency` at once per worker); so do batch lookups. A single precomputed-hash
lookup is a sub-millisecond index probe and runs on the event loop: a thread hop would
cost as much as the work. Reports are committed, in one transaction per request, before
the response is sent; `allow` verdicts go to the buffered audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import anyio
import numpy as np
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from hashsvc import reports, vpdq
from hashsvc.api import schemas
from hashsvc.api.context import annotate, request_id
from hashsvc.api.deps import MatchCall, MatchContext
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
    results = await run_cpu_bound(request, _match_batch, matcher, queries)
    return await _batch_answer(request, ctx, results, lambda i: _query_json(queries[i]))


class PlainPdqItems(NamedTuple):
    """A body `schemas.PLAIN_PDQ_BATCH` validated (the fast lane's bulk case)."""

    items: list[schemas.PlainPdqItem]


async def match_plain_pdq_items(
    request: Request, ctx: MatchContext, query: PlainPdqItems
) -> JSONResponse:
    """`match_hashes` for a batch of PDQ-only items that the fast lane validated as
    `schemas.PlainPdqBatch`: the same answer, without a `HashQuery` per item."""
    items = query.items
    codes = _pdq_codes([it["pdq"] for it in items])
    quality = [it.get("pdq_quality") for it in items]
    results = await run_cpu_bound(request, ctx.matcher.match_pdq_codes, codes, quality)
    return await _batch_answer(request, ctx, results, lambda i: _plain_item_json(items[i]))


async def _batch_answer(
    request: Request,
    ctx: MatchContext,
    results: Sequence[MatchResult | None],
    kept: Callable[[int], dict[str, Any]],
) -> JSONResponse:
    ids, counts = await _record(
        request, ctx.services, ctx.key, "match_hashes", results, "hashes", kept
    )
    shown = _Shown.of(ctx.key)
    return _BatchResponse(
        [
            _PLAIN_ALLOW if r is None else _json(_result_json(r, shown, i))
            for r, i in zip(results, ids, strict=True)
        ],
        {v.value: counts.get(v, 0) for v in Verdict},
        request_id(),
    )


def _pdq_codes(hexes: list[str]) -> np.ndarray:
    """PDQ hashes the schema checked (exactly 64 hex digits each) as uint8 rows: one
    fromhex for all of them."""
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, np.uint8).reshape(len(hexes), 32)


def _plain_item_json(item: schemas.PlainPdqItem) -> dict[str, Any]:
    """What a report keeps of a plain PDQ item: `_query_json` of the same item."""
    return _kept_fields(dict(item))


def _json(value: Any) -> bytes:
    """`value` as JSONResponse renders it (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


#: A batch item's answer when `Matcher.match_pdq_codes` had nothing to say about it, ready
#: rendered: most of a 1,000-item answer is this, and encoding it per item was ~2 us each
_PLAIN_ALLOW = _json({"verdict": Verdict.ALLOW.value, "matches": [], "report_id": None,
                      "notes": []})  # fmt: skip


class _BatchResponse(JSONResponse):
    """A batch answer, `{"items": [...], "counts": ..., "request_id": ...}`, rendered from
    items already rendered one by one (the bytes JSONResponse would give the whole)."""

    def __init__(self, items: list[bytes], counts: dict[str, int], rid: str) -> None:
        super().__init__((items, counts, rid))

    def render(self, content: Any) -> bytes:
        items, counts, rid = content
        return b"".join(
            (b'{"items":[', b",".join(items), b'],"counts":', _json(counts),
             b',"request_id":', _json(rid), b"}")
        )  # fmt: skip


def _match_batch(
    matcher: Matcher, queries: Sequence[schemas.HashQuery]
) -> list[MatchResult | None]:
    """A batch's results in order; None: a plain `allow` (see `Matcher.match_pdq_codes`).
    Items that are a PDQ hash alone (the usual bulk lookup) go column-wise; the rest
    through `match_many` as built objects."""
    out: list[MatchResult | None] = [None] * len(queries)
    pdq_only: list[int] = []
    rest: list[int] = []
    for i, q in enumerate(queries):
        alone = q.phash is None and q.md5 is None and q.sha256 is None and q.vpdq is None
        (pdq_only if q.pdq is not None and alone else rest).append(i)
    if pdq_only:
        codes = _pdq_codes([queries[i].pdq or "" for i in pdq_only])
        quality = [queries[i].pdq_quality for i in pdq_only]
        for i, r in zip(pdq_only, matcher.match_pdq_codes(codes, quality), strict=True):
            out[i] = r
    if rest:
        for i, r in zip(rest, matcher.match_many([_media_hashes(queries[i]) for i in rest]),
                        strict=True):  # fmt: skip
            out[i] = r
    return out


async def _record(
    request: Request,
    services: Services,
    key: ApiKey,
    action: str,
    results: Sequence[MatchResult | None],
    source: str,
    kept: Callable[[int], dict[str, Any]],
) -> tuple[list[int | None], dict[Verdict, int]]:
    """Commit reports for block/report results (before the caller hears the verdict),
    audit the allows (buffered), count verdicts, notify the webhook. None in `results` is
    a plain `allow` (`_match_batch`). `kept(i)`: the hashes a report on result i keeps
    (asked only for block/report results). Returns the report ids and the count of each
    verdict."""
    rid = request_id()
    counts: dict[Verdict, int] = {}
    matched: list[tuple[int, MatchResult]] = []
    plain = 0
    for i, r in enumerate(results):
        if r is None:
            plain += 1
            continue
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
        if r.verdict is not Verdict.ALLOW:
            matched.append((i, r))
    if plain:
        counts[Verdict.ALLOW] = counts.get(Verdict.ALLOW, 0) + plain
    allows = counts.get(Verdict.ALLOW, 0)
    ids: list[int | None] = [None] * len(results)
    if matched:
        records = services.records
        assert records is not None
        new = [reports.NewReport(r, kept(i), source) for i, r in matched]
        created = await anyio.to_thread.run_sync(
            lambda: reports.create_reports(
                records, new, key_id=key.id, request_id=rid, action=action
            )
        )
        for (i, _), report_id in zip(matched, created, strict=True):
            ids[i] = report_id
        services.metrics.reports.inc(len(created))
        if services.webhook is not None:
            for (_, r), report_id in zip(matched, created, strict=True):
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
        (only,) = counts
        annotate(request, verdict=only.value, report_id=ids[0])
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
    return _kept_fields(q.model_dump(exclude_none=True))


def _kept_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A query's given fields as a report keeps them: hex in lower case, no nulls."""
    return {k: (v.lower() if isinstance(v, str) else v) for k, v in fields.items() if v is not None}
