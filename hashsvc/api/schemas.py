"""Request and response models: the API's contract, and so its OpenAPI schema.

Hash fields carry their exact hex pattern, so the schema documents them and a bad hash
is refused before any work (422). Request models forbid unknown fields: a typo in a
field name must fail loudly rather than match less than the caller thinks.
Times are RFC 3339 UTC strings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)
from typing_extensions import TypedDict

PdqHex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="PDQ, 64 hex digits")]
PhashHex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{16}$", description="pHash, 16 hex")]
Md5Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{32}$", description="MD5, 32 hex digits")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256, 64 hex")]
VpdqLine = Annotated[
    str,
    Field(
        pattern=r"^\s*\d+\s*,\s*\d+\s*,\s*[0-9a-fA-F]{64}\s*,\s*[0-9.eE+-]+\s*$",
        max_length=200,
        description="frame,quality,pdq_hex,timestamp",
    ),
]
MAX_VPDQ_LINES = 20_000
VerdictName = Literal["block", "report", "allow"]
MAX_BATCH = 1000
#: SQLite integers are 64-bit: a larger id can name nothing (and must not reach the driver)
MAX_ID = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ----------------------------------------------------------------------------


class Problem(BaseModel):
    line: int = Field(description="1-based line (or item) number")
    message: str


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    error: str = Field(description="Stable machine-readable code, e.g. `media_rejected`.")
    detail: str = Field(description="What went wrong, for a human.")
    request_id: str
    problems: list[Problem] | None = Field(None, description="Bad lines of a list upload.")
    errors: list[ValidationItem] | None = Field(None, description="Request validation errors.")


_ERROR_TEXT = {
    401: "No API key, or an unknown or revoked one.",
    403: "The key lacks the scope this route needs.",
    404: "No such list, entry or report.",
    409: "Conflicts with what is stored (name taken, report already resolved).",
    413: "The request body is larger than the configured cap.",
    415: "Unsupported Content-Type.",
    422: "Invalid request: malformed hash, undecodable media (with the reason), bad field.",
    429: "Per-key rate limit exceeded; see Retry-After.",
    503: "Overloaded (too many requests in flight), the index is still loading, or the "
    "store is busy; see Retry-After.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (all share ErrorResponse)."""
    return {c: {"model": ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


#: OpenAPI request body of the media routes (read by hand: see api/uploads.py)
MEDIA_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "video/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


# -- hashes and matches ----------------------------------------------------------------


class VpdqFrame(BaseModel):
    frame: int = Field(description="Frame number (0-based) in the video.")
    quality: int = Field(ge=0, le=100)
    pdq: str
    timestamp: float = Field(description="Seconds from the start.")


class VideoFacts(BaseModel):
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float | None


class Hashes(BaseModel):
    pdq: str | None = None
    pdq_quality: int | None = Field(None, ge=0, le=100)
    phash: str | None = None
    md5: str | None = None
    sha256: str | None = None
    decode_path: Literal["fast", "reference"] = Field(
        description="`reference` hashes equal Meta's reference PDQ and imagehash's pHash; "
        "`fast` (the matching path for unmatched uploads) may differ by a few bits."
    )
    video: VideoFacts | None = Field(None, description="For a video: what its container says.")
    vpdq: list[VpdqFrame] | None = Field(
        None, description="For a video: its vPDQ hash, one PDQ per sampled frame."
    )


class MatchItem(BaseModel):
    list: str
    entry_id: int
    signal_type: Literal["pdq", "phash", "md5", "sha256", "vpdq"]
    category: str | None = Field(None, description="The list's category (admin scope only).")
    distance: int | None = Field(None, description="Only for keys with the review scope.")
    variant: str | None = Field(
        None, description="Which rotation/flip of the upload matched (review scope)."
    )
    external_id: str | None = Field(None, description="The list's own id (admin scope only).")
    query_percent: float | None = Field(
        None, description="vPDQ: percent of the upload's unique frames that matched (review)."
    )
    compared_percent: float | None = Field(
        None, description="vPDQ: percent of the list video's unique frames hit (review)."
    )


class MatchResponse(BaseModel):
    verdict: VerdictName
    matches: list[MatchItem]
    hashes: Hashes
    report_id: int | None = Field(description="Set for block/report: the durable record.")
    request_id: str
    notes: list[str] = Field(description="E.g. PDQ quality too low to decide.")


class HashQuery(_Strict):
    """Precomputed hashes of one upload; at least one."""

    pdq: PdqHex | None = None
    pdq_quality: int | None = Field(None, ge=0, le=100)
    phash: PhashHex | None = None
    md5: Md5Hex | None = None
    sha256: Sha256Hex | None = None
    vpdq: list[VpdqLine] | None = Field(
        None,
        min_length=1,
        max_length=MAX_VPDQ_LINES,
        description="A video's vPDQ hash: its lines `frame,quality,pdq_hex,timestamp`.",
    )

    @model_validator(mode="after")
    def _some_hash(self) -> HashQuery:
        if not (self.pdq or self.phash or self.md5 or self.sha256 or self.vpdq):
            raise ValueError("give at least one of pdq, phash, md5, sha256, vpdq")
        if self.pdq_quality is not None and self.pdq is None:
            raise ValueError("pdq_quality needs pdq")
        return self


class HashBatch(_Strict):
    items: list[HashQuery] = Field(min_length=1, max_length=MAX_BATCH)


def _query_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "items" in value else "single"


HashMatchRequest = Annotated[
    Annotated[HashQuery, Tag("single")] | Annotated[HashBatch, Tag("batch")],
    Discriminator(_query_kind),
]


class PlainPdqItem(TypedDict):
    """A batch item that is a PDQ hash alone: `HashQuery`'s `pdq` and `pdq_quality` with
    the same constraints, nothing else allowed."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    pdq: PdqHex
    pdq_quality: NotRequired[Annotated[int, Field(ge=0, le=100)] | None]


class PlainPdqBatch(TypedDict):
    """The usual bulk lookup, `{"items": [{"pdq": ...}, ...]}`: a strict subset of
    `HashBatch` (anything this accepts, `HashBatch` accepts with the same values; a test
    checks it), validated into plain dicts. Why: building 1,000 `HashQuery` models cost
    ~4 ms per batch, ~10% of the batch's CPU; this takes ~1 ms. Not part of the OpenAPI
    schema: the fast lane (fastlane.py) tries it first and falls back to `HashMatchRequest`,
    whose errors are the ones callers see."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    items: Annotated[list[PlainPdqItem], Field(min_length=1, max_length=MAX_BATCH)]


PLAIN_PDQ_BATCH: TypeAdapter[PlainPdqBatch] = TypeAdapter(PlainPdqBatch)


class HashMatchResult(BaseModel):
    verdict: VerdictName
    matches: list[MatchItem]
    report_id: int | None
    notes: list[str]


class HashMatchResponse(HashMatchResult):
    request_id: str


class VerdictCounts(BaseModel):
    block: int
    report: int
    allow: int


class BatchMatchResponse(BaseModel):
    items: list[HashMatchResult] = Field(description="One result per item, in order.")
    counts: VerdictCounts
    request_id: str


class HashResponse(BaseModel):
    hashes: Hashes
    pdq_dihedral: dict[str, str] | None = Field(
        None, description="The 8 rotation/flip PDQ variants, when asked for."
    )
    request_id: str


# -- reports ---------------------------------------------------------------------------


class Resolution(BaseModel):
    resolved_at: str
    resolved_by: int | None
    note: str


class ReportOut(BaseModel):
    id: int
    created_at: str
    verdict: Literal["block", "report"]
    status: Literal["open", "confirmed", "false_positive"]
    source: Literal["media", "hashes"]
    request_id: str
    key_id: int | None
    hashes: dict[str, Any] = Field(description="The upload's hashes.")
    matches: list[MatchItem]
    resolution: Resolution | None


class ReportPage(BaseModel):
    items: list[ReportOut]
    next_before_id: int | None = Field(description="Pass as before_id for the next page.")


class ResolveRequest(_Strict):
    status: Literal["confirmed", "false_positive"]
    note: str = Field("", max_length=2000)
    disable_entries: bool = Field(
        False, description="False positives only: stop the matched entries from matching."
    )


class ResolveResponse(ReportOut):
    disabled_entry_ids: list[int]


class ReportExport(BaseModel):
    format: str
    version: int
    generator: str
    generated_at: str
    next_before_id: int | None = Field(
        description="Null when this document holds every matching report; otherwise more "
        "match: pass it as before_id (with the same filters) for the next page."
    )
    hash_formats: dict[str, str]
    reports: list[dict[str, Any]]


# -- lists -----------------------------------------------------------------------------

ListName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class ListOptions(_Strict):
    """Per-list switches of the edited-copy matching; a switch left out follows the
    service's setting (README, "Catching edited copies")."""

    dihedral: bool | None = Field(None, description="match rotations and mirror images")
    trim_borders: bool | None = Field(
        None, description="match the content inside added borders and caption bars"
    )
    crops: bool | None = Field(None, description="match the enrollment crops (centred)")
    corroborate: bool | None = Field(
        None, description="accept a PDQ up to the corroboration bound when pHash backs it"
    )


class ListCreate(_Strict):
    name: ListName
    action: Literal["block", "report"]
    pdq_threshold: int | None = Field(None, ge=0, le=256)
    phash_threshold: int | None = Field(None, ge=0, le=64)
    description: str = Field("", max_length=1000)
    options: ListOptions | None = None


class ListOut(BaseModel):
    name: str
    action: Literal["block", "report"]
    pdq_threshold: int
    phash_threshold: int
    description: str
    options: dict[str, bool]
    entries: int
    enabled_entries: int
    created_at: str


class ListsOut(BaseModel):
    lists: list[ListOut]


class EntryIn(_Strict):
    """One entry, as in a jsonl list file (validated by the same parser as the CLI)."""

    signal_type: str | None = None
    hash: str
    id: str | int | None = None
    category: str | None = None
    source: str | None = None
    note: str | None = None


class EntriesIn(_Strict):
    entries: list[EntryIn] = Field(min_length=1, max_length=100_000)
    skip_invalid: bool = Field(False, description="Import the valid items, report the rest.")


class ImportOut(BaseModel):
    list_: str = Field(alias="list")
    added: int
    skipped_duplicates: int
    invalid_skipped: int
    problems: list[Problem]
    batch_id: int


class EntryPatch(_Strict):
    enabled: bool
    disabled_hours: float | None = Field(
        None, gt=0, le=24 * 365, description="Disable only for this long (enabled=false)."
    )


class EntryOut(BaseModel):
    id: int
    list: str
    signal_type: str
    hash: str
    external_id: str
    category: str
    source: str
    note: str
    added_at: str
    enabled: bool
    disabled_until: str | None


class EntryPage(BaseModel):
    items: list[EntryOut]
    next_after_id: int | None


# -- operations ------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    detail: str
