"""Trusted lists over HTTP (scope `admin`): create, inspect, bulk-add, enable/disable, remove.

Entries are validated exactly as `hashsvc lists import` validates a file
(`hashlist.parse_list`): a JSON body is turned into the jsonl form and parsed by the same
code, so line numbers in `problems` are item numbers (1-based). Without `skip_invalid`
one bad item imports nothing. After a write this worker's index is refreshed at once;
the other workers pick the change up at their next refresh (within a second).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from hashsvc.api import schemas
from hashsvc.api.context import annotate, request_id
from hashsvc.api.deps import AdminKey, RecordsDep
from hashsvc.api.errors import ApiError
from hashsvc.audit import AuditEvent
from hashsvc.errors import NotFound
from hashsvc.hashlist import FORMATS, parse_list
from hashsvc.reports import iso
from hashsvc.signals import SignalType
from hashsvc.store import Entry, Store

router = APIRouter(prefix="/v1/lists", tags=["lists"])

ListPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="List name.")]
EntryId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]

_ENTRIES_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/EntriesIn"}},
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
    },
}
_RAW_FORMATS = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "text/plain": "txt",
}


@router.get(
    "",
    response_model=schemas.ListsOut,
    summary="All lists",
    description="Scope `admin`.",
    responses=schemas.error_responses(401, 403, 429, 503),
)
async def get_lists(key: AdminKey, store: RecordsDep) -> JSONResponse:
    def work() -> list[dict[str, Any]]:
        return [store.list_summary(lst) for lst in store.lists()]

    return JSONResponse({"lists": await anyio.to_thread.run_sync(work)})


@router.post(
    "",
    status_code=201,
    response_model=schemas.ListOut,
    summary="Create a list",
    description="Scope `admin`. `action` is what a match leads to: `block` or `report`.",
    responses=schemas.error_responses(401, 403, 409, 422, 429, 503),
)
async def create_list(
    request: Request, body: schemas.ListCreate, key: AdminKey, store: RecordsDep
) -> JSONResponse:
    options = body.options.model_dump(exclude_none=True) if body.options else None

    def work() -> dict[str, Any]:
        lst = store.create_list(
            body.name,
            body.action,
            body.pdq_threshold,
            body.phash_threshold,
            body.description,
            options,
        )
        _audit(request, store, key.id, "list.create", detail={"list": lst.name})
        return store.list_summary(lst)

    return JSONResponse(await anyio.to_thread.run_sync(work), status_code=201)


@router.get(
    "/{name}",
    response_model=schemas.ListOut,
    summary="One list",
    description="Scope `admin`.",
    responses=schemas.error_responses(401, 403, 404, 422, 429, 503),
)
async def get_list(name: ListPath, key: AdminKey, store: RecordsDep) -> JSONResponse:
    def work() -> dict[str, Any]:
        return store.list_summary(store.get_list(name))

    return JSONResponse(await anyio.to_thread.run_sync(work))


@router.get(
    "/{name}/entries",
    response_model=schemas.EntryPage,
    summary="A list's entries, with their hashes",
    description="Scope `admin`. Id order; pass `next_after_id` as `after_id` for more.",
    responses=schemas.error_responses(401, 403, 404, 422, 429, 503),
)
async def get_entries(
    name: ListPath,
    key: AdminKey,
    store: RecordsDep,
    after_id: Annotated[int, Query(ge=0, le=schemas.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    enabled_only: bool = False,
) -> JSONResponse:
    def work() -> list[Entry]:
        return list(
            store.entries(name, enabled_only=enabled_only, after_id=after_id, limit=limit + 1)
        )

    found = await anyio.to_thread.run_sync(work)
    page = found[:limit]
    return JSONResponse(
        {
            "items": [_entry_json(e) for e in page],
            "next_after_id": page[-1].id if len(found) > limit and page else None,
        }
    )


@router.post(
    "/{name}/entries",
    response_model=schemas.ImportOut,
    summary="Add entries in bulk",
    description='Scope `admin`. JSON (`{"entries": [...], "skip_invalid": false}`) or a '
    "list file as the body: `text/csv`, `application/x-ndjson` (jsonl) or `text/plain` "
    "(bare hashes; give `signal_type`). Validated as `hashsvc lists import` does; any bad "
    "line imports nothing (422 with every problem) unless `skip_invalid`. Entries the list "
    "already holds are skipped and counted.",
    openapi_extra={"requestBody": _ENTRIES_BODY},
    responses=schemas.error_responses(401, 403, 404, 413, 415, 422, 429, 503),
)
async def add_entries(
    request: Request,
    name: ListPath,
    key: AdminKey,
    store: RecordsDep,
    signal_type: Annotated[
        SignalType | None, Query(description="For text/plain bodies (or to require one type).")
    ] = None,
    skip_invalid: Annotated[bool, Query(description="For list-file bodies.")] = False,
) -> JSONResponse:
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if mime == "application/json":
        try:
            parsed_in = schemas.EntriesIn.model_validate_json(body)
        except ValidationError as e:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
            ) from None
        lines = [json.dumps(e.model_dump(exclude_none=True)) for e in parsed_in.entries]
        data, fmt, skip = "\n".join(lines).encode(), "jsonl", parsed_in.skip_invalid
    elif mime in _RAW_FORMATS:
        data, fmt, skip = body, _RAW_FORMATS[mime], skip_invalid
    else:
        raise ApiError(
            415, "unsupported_media_type", "send JSON, text/csv, application/x-ndjson or text/plain"
        )
    assert fmt in FORMATS

    def work() -> dict[str, Any]:
        store.get_list(name)  # 404 before validating a big file
        parsed = parse_list(data, fmt, signal_type=signal_type, source_name="api")
        if not skip:
            parsed.raise_if_invalid()
        result = store.import_entries(
            name, parsed.entries, source_name="api", file_sha256=parsed.sha256
        )
        _audit(
            request,
            store,
            key.id,
            "entries.add",
            detail={"list": name, "added": result.added, "batch_id": result.batch_id},
        )
        return {
            "list": name,
            "added": result.added,
            "skipped_duplicates": result.skipped_duplicates,
            "invalid_skipped": len(parsed.problems),
            "problems": [{"line": p.line, "message": p.message} for p in parsed.problems[:1000]],
            "batch_id": result.batch_id,
        }

    out = await anyio.to_thread.run_sync(work)
    await anyio.to_thread.run_sync(request.app.state.services.refresh_now)
    annotate(request, added=out["added"])
    return JSONResponse(out)


@router.patch(
    "/{name}/entries/{entry_id}",
    response_model=schemas.EntryOut,
    summary="Enable or disable an entry",
    description="Scope `admin`. A disabled entry stops matching at once on this worker and "
    "within a second on every other; `disabled_hours` makes the disable lapse by itself.",
    responses=schemas.error_responses(401, 403, 404, 422, 429, 503),
)
async def patch_entry(
    request: Request,
    name: ListPath,
    entry_id: EntryId,
    body: schemas.EntryPatch,
    key: AdminKey,
    store: RecordsDep,
) -> JSONResponse:
    if body.enabled and body.disabled_hours is not None:
        raise ApiError(422, "invalid_value", "disabled_hours only applies with enabled=false")

    def work() -> Entry:
        _entry_in_list(store, name, entry_id)
        until = store.now() + body.disabled_hours * 3600 if body.disabled_hours else None
        entry = store.set_enabled(entry_id, body.enabled, until=until)
        _audit(
            request,
            store,
            key.id,
            "entry.enable" if body.enabled else "entry.disable",
            entry_ids=[entry_id],
            detail={"list": entry.list_name},
        )
        return entry

    entry = await anyio.to_thread.run_sync(work)
    await anyio.to_thread.run_sync(request.app.state.services.refresh_now)
    return JSONResponse(_entry_json(entry))


@router.delete(
    "/{name}/entries/{entry_id}",
    status_code=204,
    response_class=Response,
    summary="Remove an entry for good",
    description="Scope `admin`. Prefer disabling an entry that must stay out across "
    "re-imports of its provider's list: a removed entry comes back with the next import.",
    responses=schemas.error_responses(401, 403, 404, 422, 429, 503),
)
async def delete_entry(
    request: Request, name: ListPath, entry_id: EntryId, key: AdminKey, store: RecordsDep
) -> Response:
    def work() -> None:
        entry = _entry_in_list(store, name, entry_id)
        store.remove_entry(entry_id)
        _audit(
            request,
            store,
            key.id,
            "entry.remove",
            entry_ids=[entry_id],
            detail={"list": entry.list_name},
        )

    await anyio.to_thread.run_sync(work)
    await anyio.to_thread.run_sync(request.app.state.services.refresh_now)
    return Response(status_code=204)


def _entry_in_list(store: Store, name: str, entry_id: int) -> Entry:
    entry = store.entry(entry_id)
    if entry.list_name.lower() != name.lower():
        raise NotFound(f"no entry {entry_id} in list {name!r}")
    return entry


def _audit(
    request: Request,
    store: Store,
    key_id: int,
    action: str,
    *,
    entry_ids: list[int] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    request.app.state.services.audit.record_now(
        [
            AuditEvent(
                action=action,
                key_id=key_id,
                request_id=request_id(),
                entry_ids=entry_ids or [],
                detail=detail or {},
            )
        ]
    )


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "list": e.list_name,
        "signal_type": e.signal.value,
        "hash": e.hash.hex,
        "external_id": e.external_id,
        "category": e.category,
        "source": e.source,
        "note": e.note,
        "added_at": iso(e.added_at),
        "enabled": e.enabled,
        "disabled_until": iso(e.disabled_until) if e.disabled_until is not None else None,
    }
