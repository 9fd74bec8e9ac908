"""`hashsvc match`: verdicts for media files or for precomputed hashes.

Exit status: 0 = nothing matched, 1 = at least one match, 2 = an input failed.
The CLI is an operator's tool on the machine that holds the lists, so it shows
distances and the lists' own entry ids (the API hides them from non-admin keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hashsvc.cli.common import (
    EXIT_ERROR,
    EXIT_MATCH,
    EXIT_OK,
    DataDir,
    emit,
    errors_to_exit,
    fail,
    pdq_engine_for,
    settings_for,
)
from hashsvc.errors import HashsvcError


def match_cmd(
    paths: Annotated[list[Path] | None, typer.Argument(help="Media files or directories.")] = None,
    pdq: Annotated[str | None, typer.Option(help="A precomputed PDQ hash (64 hex).")] = None,
    pdq_quality: Annotated[int | None, typer.Option(help="Its PDQ quality, if known.")] = None,
    phash: Annotated[str | None, typer.Option(help="A precomputed pHash (16 hex).")] = None,
    md5: Annotated[str | None, typer.Option(help="A precomputed MD5 (32 hex).")] = None,
    sha256: Annotated[str | None, typer.Option(help="A precomputed SHA-256 (64 hex).")] = None,
    vpdq: Annotated[
        Path | None, typer.Option(help="A precomputed video hash: a vPDQ file.")
    ] = None,
    lists: Annotated[str | None, typer.Option(help="Only these lists (comma-separated).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Match media files, or precomputed hashes, against the lists."""
    from hashsvc.hashing import MediaHashes
    from hashsvc.matcher import Matcher, MatchResult
    from hashsvc.media import read_bytes
    from hashsvc.signals import Hash, SignalType
    from hashsvc.walk import WalkError, iter_files

    precomputed = {"pdq": pdq, "phash": phash, "md5": md5, "sha256": sha256}
    given = {k: v for k, v in precomputed.items() if v is not None}
    if bool(paths) + bool(given) + (vpdq is not None) != 1:
        fail("give media paths, hashes (--pdq/--phash/--md5/--sha256) or --vpdq FILE: one")
    settings = settings_for(data_dir)
    only = {s.strip() for s in lists.split(",") if s.strip()} if lists else None

    def record(result: MatchResult) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": result.verdict.value,
            "matches": [m.to_json() for m in result.matches],
        }
        if result.notes:
            out["notes"] = list(result.notes)
        return out

    if not settings.db_path.exists():
        # opening would create an empty store and report every file "allow"
        fail(f"no store at {settings.db_path} (wrong --data-dir?)")
    with errors_to_exit():
        matcher = Matcher.open(settings)
    try:
        if only:
            known = {lst.name for lst in matcher.store.lists()}
            missing = sorted(only - known)
            if missing:
                fail(f"no list named {', '.join(missing)}")
        if vpdq is not None:
            from hashsvc import vpdq as vpdq_format
            from hashsvc.video import VideoHashes

            with errors_to_exit():
                try:
                    text = vpdq.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as e:
                    fail(f"{vpdq}: cannot read ({e})")
                frames = vpdq_format.parse(text, source=str(vpdq))
                result = matcher.match(VideoHashes.from_frames(frames), lists=only)
            emit({"vpdq": str(vpdq), **record(result)})
            raise typer.Exit(EXIT_MATCH if result.matched else EXIT_OK)
        if given:
            with errors_to_exit():
                values = {k: Hash.from_hex(SignalType(k), v) for k, v in given.items()}
                query = MediaHashes(
                    md5=values.get("md5"),
                    sha256=values.get("sha256"),
                    pdq=values.get("pdq"),
                    pdq_quality=pdq_quality if pdq else None,
                    phash=values.get("phash"),
                )
                result = matcher.match(query, lists=only)
            emit({"hashes": given, **record(result)})
            raise typer.Exit(EXIT_MATCH if result.matched else EXIT_OK)

        matched = failed = False
        # a few named files on a small list: no numba kernels are loaded at all (C++ PDQ
        # on the reference decode, numpy search; ~1.5 s -> 0.8 s per call)
        named = paths or []
        engine = pdq_engine_for(named)
        for item in iter_files(named):
            if isinstance(item, WalkError):
                emit({"path": str(item.path), "error": item.message})
                failed = True
                continue
            try:
                result = matcher.match_media(read_bytes(item), lists=only, engine=engine)
            except HashsvcError as e:
                emit({"path": str(item), "error": str(e)})
                failed = True
                continue
            matched = matched or result.matched
            emit({"path": str(item), **record(result)})
        raise typer.Exit(EXIT_ERROR if failed else EXIT_MATCH if matched else EXIT_OK)
    finally:
        matcher.close()
