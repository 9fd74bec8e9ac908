"""`hashsvc hash`: print the reference hashes of media files as JSON lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hashsvc.cli.common import EXIT_ERROR, EXIT_OK, emit, fail, pdq_engine_for, settings_for
from hashsvc.errors import HashsvcError


def hash_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (recursive).")],
    signals: Annotated[
        str, typer.Option(help="Comma-separated signal types to compute.")
    ] = "pdq,phash,md5,sha256",
    dihedral: Annotated[
        bool, typer.Option(help="Also print the 8 rotation/flip PDQ variants.")
    ] = False,
    max_pixels: Annotated[int | None, typer.Option(help="Pixel cap (default 50 MP).")] = None,
    vpdq_dir: Annotated[
        Path | None,
        typer.Option(help="Also write each video's vPDQ hash to DIR/<file stem>.txt."),
    ] = None,
) -> None:
    """Hash media files: one JSON line per file, exactly as Meta's reference PDQ.

    Videos (MP4/MOV, WebM/MKV, AVI, MPEG-TS, recognised by content) give MD5, SHA-256
    and their vPDQ frames (one PDQ per second, every frame decoded, as the vpdq package).
    Exit status 0 if every file hashed, 2 if any failed.
    """
    from hashsvc import hashing, video
    from hashsvc.walk import WalkError, iter_files

    settings = settings_for(max_pixels=max_pixels)
    try:
        wanted = hashing.parse_signals(s for s in signals.split(",") if s.strip())
    except HashsvcError as e:
        fail(str(e))
    engine = pdq_engine_for(paths)
    failed = False
    for item in iter_files(paths):
        if isinstance(item, WalkError):
            emit({"path": str(item.path), "error": item.message})
            failed = True
            continue
        record: dict[str, Any] = {"path": str(item)}
        try:
            from hashsvc.media import read_bytes

            data = read_bytes(item)
            if video.is_video(data):
                vh = video.hash_video(
                    data,
                    seconds_per_hash=settings.vpdq_seconds_per_hash,
                    limits=settings.video_limits,
                )
                record.update(vh.to_json())
                if vpdq_dir is not None:
                    vpdq_dir.mkdir(parents=True, exist_ok=True)
                    (vpdq_dir / f"{item.stem}.txt").write_text("\n".join(vh.vpdq_lines()) + "\n")
                emit(record)
                continue
            hashes = hashing.hash_media(
                data,
                wanted,
                path=hashing.HashPath.REFERENCE,
                dihedral=dihedral,
                max_pixels=settings.max_pixels,
                engine=engine,
            )
        except HashsvcError as e:
            record["error"] = str(e)
            failed = True
        else:
            record.update(hashes.to_json())
            if dihedral and hashes.pdq_dihedral:
                record["pdq_dihedral"] = {
                    name: h.hex
                    for name, h in zip(hashing.DIHEDRAL_NAMES, hashes.pdq_dihedral, strict=True)
                }
        emit(record)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)
