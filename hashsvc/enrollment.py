"""Media -> list entries: how a platform banks media it has removed (and how `index/`
gets its demo list of benign images).

Enrollment hashes with the reference decode path, so enrolled hashes are the ones any
other PDQ implementation would compute and can be exported and shared. One file gives
one entry per signal type (PDQ, pHash, MD5, SHA-256); the entries share an external id
(the file's SHA-256 prefix) so a reviewer can see they are one item. File names are not
stored: they can themselves describe abuse.

Unless the list switches it off (list option `crops`), the PDQ entry also gets the PDQ
hashes of six crops of the image (`robust.CROPS`) as variants, written in the same
transaction, so a cropped copy of enrolled media still matches.

A video (recognised by content) enrolls as a `vpdq` entry carrying its frame hashes
(every frame decoded, as the `vpdq` package does) plus MD5 and SHA-256 entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from hashsvc import hashing, video, vpdq
from hashsvc.errors import HashsvcError
from hashsvc.hashing import HashPath, crop_variants, hash_media
from hashsvc.hashlist import ListEntry
from hashsvc.media import DEFAULT_MAX_PIXELS
from hashsvc.signals import Hash, SignalType
from hashsvc.store import ImportResult, Store
from hashsvc.video import VideoLimits
from hashsvc.vpdq import Frame

ENROLL_SIGNALS = (SignalType.PDQ, SignalType.PHASH, SignalType.MD5, SignalType.SHA256)


@dataclass(frozen=True)
class EnrollProblem:
    name: str
    message: str


@dataclass(frozen=True)
class EnrolledMedia:
    entries: list[ListEntry]
    variants: dict[Hash, list[tuple[Hash, str]]]
    frames: dict[Hash, list[Frame]] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoOptions:
    """How videos are hashed for enrollment (Settings.vpdq_seconds_per_hash and caps)."""

    seconds_per_hash: float = 1.0
    limits: VideoLimits = field(default_factory=VideoLimits)


@dataclass(frozen=True)
class EnrollResult:
    result: ImportResult | None
    files: int
    problems: tuple[EnrollProblem, ...]


def entries_for_media(
    data: bytes, *, category: str = "", note: str = "", max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[ListEntry]:
    """The list entries one media file enrolls as, without crop variants."""
    return enrolled_media(
        data, category=category, note=note, crops=False, max_pixels=max_pixels
    ).entries


def enrolled_media(
    data: bytes,
    *,
    category: str = "",
    note: str = "",
    crops: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    video_options: VideoOptions | None = None,
) -> EnrolledMedia:
    """The list entries (and crop variants, or video frames) one media file enrolls as.

    Raises MediaRejected."""
    if video.is_video(data):
        return _enrolled_video(data, category, note, video_options or VideoOptions())
    hashes = hash_media(data, ENROLL_SIGNALS, path=HashPath.REFERENCE, max_pixels=max_pixels)
    item_id = hashlib.sha256(data).hexdigest()[:16]
    out = []
    for signal in ENROLL_SIGNALS:
        h = hashes.get(signal)
        if h is not None:
            out.append(
                ListEntry(
                    hash=h, external_id=item_id, category=category, source="enroll", note=note
                )
            )
    variants: dict[Hash, list[tuple[Hash, str]]] = {}
    if crops and hashes.pdq is not None:
        variants[hashes.pdq] = crop_variants(data, max_pixels=max_pixels)
    return EnrolledMedia(out, variants)


def _enrolled_video(data: bytes, category: str, note: str, opts: VideoOptions) -> EnrolledMedia:
    vh = video.hash_video(data, seconds_per_hash=opts.seconds_per_hash, limits=opts.limits)
    frames = list(vh.frames)
    item_id = hashlib.sha256(data).hexdigest()[:16]
    digest = vpdq.digest(frames)
    entries = [
        ListEntry(hash=h, external_id=item_id, category=category, source="enroll", note=note)
        for h in (digest, hashing.md5(data), hashing.sha256(data))
    ]
    return EnrolledMedia(entries, {}, {digest: frames})


def vpdq_entry(
    frames: list[Frame], *, external_id: str = "", category: str = "", note: str = ""
) -> EnrolledMedia:
    """One list video from a parsed vPDQ file (`lists import --format vpdq`)."""
    digest = vpdq.digest(frames)
    entry = ListEntry(
        hash=digest, external_id=external_id or digest.hex[:16], category=category,
        source="import", note=note,
    )  # fmt: skip
    return EnrolledMedia([entry], {}, {digest: frames})


def enroll(
    store: Store,
    list_name: str,
    items: Iterable[tuple[str, bytes]],
    *,
    category: str = "",
    default_crops: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    video_options: VideoOptions | None = None,
) -> EnrollResult:
    """Hash every (name, bytes) item and add all of them in one transaction.

    Files that cannot be decoded are reported and skipped; the rest are added together
    (all or nothing), so a crash never leaves half an enrollment.
    """
    lst = store.get_list(list_name)  # fail early on an unknown list
    crops = bool(lst.options.get("crops", default_crops))
    entries: list[ListEntry] = []
    variants: dict[Hash, list[tuple[Hash, str]]] = {}
    frames: dict[Hash, list[Frame]] = {}
    problems: list[EnrollProblem] = []
    files = 0
    digest = hashlib.sha256()
    for name, data in items:
        files += 1
        try:
            media = enrolled_media(
                data, category=category, crops=crops, max_pixels=max_pixels,
                video_options=video_options,
            )  # fmt: skip
            entries.extend(media.entries)
            variants.update(media.variants)
            frames.update(media.frames)
            digest.update(hashlib.sha256(data).digest())
        except HashsvcError as e:
            problems.append(EnrollProblem(name, str(e)))
    result = None
    if entries:
        result = store.import_entries(
            list_name, entries, source_name="enroll", file_sha256=digest.hexdigest(),
            origin="enroll", variants=variants, frames=frames,
        )  # fmt: skip
    return EnrollResult(result=result, files=files, problems=tuple(problems))
