"""`POST /v1/hash`: the upload's hashes, no matching.

These hashes leave the service (a platform may bank or share them), so they come from
the reference decode path: equal to Meta's reference PDQ and imagehash's pHash.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from hashsvc import hashing, video
from hashsvc.api import schemas
from hashsvc.api.context import request_id
from hashsvc.api.deps import MatchKey, ServicesDep
from hashsvc.api.limits import run_cpu_bound
from hashsvc.api.uploads import read_upload

router = APIRouter(prefix="/v1", tags=["match"])


@router.post(
    "/hash",
    response_model=schemas.HashResponse,
    summary="Hashes of an upload (reference decode path)",
    description="Scope `match`. PDQ (with quality), pHash, MD5 and SHA-256 of an image; "
    "MD5, SHA-256 and the vPDQ frames of a video (every frame decoded, one PDQ per second); "
    "hashed in memory. Nothing is matched, stored or audited.",
    openapi_extra={"requestBody": schemas.MEDIA_BODY},
    responses=schemas.error_responses(401, 403, 413, 415, 422, 429, 503),
)
async def hash_media(
    request: Request,
    key: MatchKey,
    services: ServicesDep,
    dihedral: bool = Query(False, description="Also return the 8 rotation/flip PDQ variants."),
) -> JSONResponse:
    data = await read_upload(request)
    settings = services.settings

    if video.is_video(data):

        def work_video() -> video.VideoHashes:
            return video.hash_video(
                data, seconds_per_hash=settings.vpdq_seconds_per_hash,
                limits=settings.video_limits,
            )  # fmt: skip

        vh = await run_cpu_bound(request, work_video)
        body_v = {
            "hashes": {**vh.to_json(), "decode_path": "reference"},
            "request_id": request_id(),
        }
        return JSONResponse(body_v)

    def work() -> hashing.MediaHashes:
        return hashing.hash_media(
            data, path=hashing.HashPath.REFERENCE, dihedral=dihedral,
            max_pixels=settings.max_pixels,
        )  # fmt: skip

    hashes = await run_cpu_bound(request, work)
    body: dict[str, Any] = {
        "hashes": {**hashes.to_json(), "decode_path": hashes.path.value},
        "request_id": request_id(),
    }
    if dihedral and hashes.pdq_dihedral:
        body["pdq_dihedral"] = {
            name: h.hex for name, h in zip(hashing.DIHEDRAL_NAMES, hashes.pdq_dihedral, strict=True)
        }
    return JSONResponse(body)
