"""vPDQ, Meta's video hash: its per-frame line format and its match rule. Pure functions.

A vPDQ hash is a list of frame features, one line each in vPDQ's own text format
(`sample-hashes/*.txt` in Meta's repository, and what the `vpdq` package prints):

    frame_number,quality,pdq_hex,timestamp_seconds

Two videos match when enough of the query's *unique* frame hashes (quality >= 50) lie
within the PDQ threshold (31 bits) of some frame of the other video (`query_percent`,
80 by default), and, optionally, enough of the other video's unique frames are hit
(`compared_percent`, 0 by default): the rule and defaults of vPDQ's own matcher and of
HMA. Frame hashes are searched with the same index as images (see matcher.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hashsvc.errors import HashListError, InvalidHash, LineProblem
from hashsvc.signals import Hash, SignalType

#: Frames below this PDQ quality carry too little structure to compare (vPDQ's default).
MIN_QUALITY = 50
#: vPDQ's defaults: share of the query's unique frames that must match, and of the
#: compared video's unique frames that must be hit.
QUERY_PERCENT = 80.0
COMPARED_PERCENT = 0.0
#: An index key packs (entry id, frame slot); a list video may hold this many frames.
MAX_FRAMES = 1 << 20


@dataclass(frozen=True, slots=True)
class Frame:
    """One hashed frame of a video."""

    number: int
    quality: int
    pdq: Hash
    timestamp: float

    def line(self) -> str:
        return f"{self.number},{self.quality},{self.pdq.hex},{self.timestamp:.3f}"

    def to_json(self) -> dict[str, object]:
        return {
            "frame": self.number,
            "quality": self.quality,
            "pdq": self.pdq.hex,
            "timestamp": round(self.timestamp, 3),
        }


def parse_line(text: str) -> Frame:
    """One vPDQ line -> Frame; raises InvalidHash saying what is wrong."""
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != 4:
        raise InvalidHash(
            f"a vPDQ line has 4 fields (frame,quality,pdq_hex,timestamp), got {len(parts)}"
        )
    number_s, quality_s, hex_s, ts_s = parts
    try:
        number = int(number_s)
    except ValueError:
        raise InvalidHash(f"frame number {number_s!r} is not an integer") from None
    try:
        quality = int(quality_s)
    except ValueError:
        raise InvalidHash(f"quality {quality_s!r} is not an integer") from None
    try:
        timestamp = float(ts_s)
    except ValueError:
        raise InvalidHash(f"timestamp {ts_s!r} is not a number") from None
    if number < 0:
        raise InvalidHash(f"frame number {number} is negative")
    if not 0 <= quality <= 100:
        raise InvalidHash(f"quality {quality} is outside 0..100")
    if not math.isfinite(timestamp) or timestamp < 0:
        raise InvalidHash(f"timestamp {ts_s!r} is not a finite number >= 0")
    return Frame(number, quality, Hash.from_hex(SignalType.PDQ, hex_s), timestamp)


def parse(text: str, *, source: str = "") -> list[Frame]:
    """A whole vPDQ file (one video). Every line is checked; all problems are reported
    together (HashListError with line numbers), and nothing is returned on any error."""
    frames: list[Frame] = []
    problems: list[LineProblem] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            frames.append(parse_line(raw))
        except InvalidHash as e:
            problems.append(LineProblem(lineno, str(e)))
    if not frames and not problems:
        problems.append(LineProblem(0, "no frame lines (empty vPDQ file)"))
    if len(frames) > MAX_FRAMES:
        problems.append(LineProblem(0, f"more than {MAX_FRAMES} frames in one video"))
    if problems:
        raise HashListError(problems, source=source)
    return frames


def looks_like_vpdq(text: str) -> bool:
    """True when the first non-blank line has vPDQ's shape (for format auto-detection)."""
    for raw in text.splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            try:
                parse_line(raw)
            except InvalidHash:
                return False
            return True
    return False


def unique_hashes(frames: Iterable[Frame], min_quality: int = MIN_QUALITY) -> list[Hash]:
    """The distinct frame hashes of quality >= min_quality, in first-seen order: what
    the match rule counts (a still scene held for a minute counts once)."""
    seen: dict[bytes, Hash] = {}
    for f in frames:
        if f.quality >= min_quality and f.pdq.value not in seen:
            seen[f.pdq.value] = f.pdq
    return list(seen.values())


def collapse_repeats(frames: Sequence[Frame]) -> list[Frame]:
    """Drop a frame whose hash equals the previous kept frame's (a still scene)."""
    out: list[Frame] = []
    for f in frames:
        if not out or out[-1].pdq.value != f.pdq.value:
            out.append(f)
    return out


def digest(frames: Sequence[Frame]) -> Hash:
    """A video hash's identity: SHA-256 over its frame lines. It is the `hash` of a
    `vpdq` list entry, so importing the same file twice adds it once."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f.line().encode())
        h.update(b"\n")
    return Hash(SignalType.VPDQ, h.digest())


@dataclass(frozen=True, slots=True)
class VideoScore:
    """How well a query video covers one list video (percent of unique frames)."""

    query_percent: float
    compared_percent: float
    min_distance: int

    def matches(self, query_percent: float, compared_percent: float) -> bool:
        return self.query_percent >= query_percent and self.compared_percent >= compared_percent


def score(
    query_hit: int, query_unique: int, compared_hit: int, compared_unique: int, min_distance: int
) -> VideoScore:
    """Percentages from hit counts (a video with no usable frame scores 0)."""
    qp = 100.0 * query_hit / query_unique if query_unique else 0.0
    cp = 100.0 * compared_hit / compared_unique if compared_unique else 0.0
    return VideoScore(qp, cp, min_distance)


def brute_force_score(
    query: Sequence[Frame], compared: Sequence[Frame], threshold: int,
    min_quality: int = MIN_QUALITY,
) -> VideoScore:  # fmt: skip
    """vPDQ's brute-force matcher (every unique pair compared): the oracle the indexed
    matcher is tested against."""
    q = unique_hashes(query, min_quality)
    c = unique_hashes(compared, min_quality)
    q_hit = sum(1 for a in q if any(a - b <= threshold for b in c))
    c_hit = sum(1 for b in c if any(a - b <= threshold for a in q))
    dists = [a - b for a in q for b in c]
    return score(q_hit, len(q), c_hit, len(c), min(dists) if dists else 256)
