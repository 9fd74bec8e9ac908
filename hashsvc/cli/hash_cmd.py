"""`hashsvc hash`: print the reference hashes of media files as JSON lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hashsvc.cli.common import EXIT_ERROR, EXIT_OK, emit, fail, settings_for
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
) -> None:
    """Hash media files: one JSON line per file, exactly as Meta's reference PDQ.

    Exit status 0 if every file hashed, 2 if any failed.
    """
    from hashsvc import hashing
    from hashsvc.walk import WalkError, iter_files

    settings = settings_for(max_pixels=max_pixels)
    try:
        wanted = hashing.parse_signals(s for s in signals.split(",") if s.strip())
    except HashsvcError as e:
        fail(str(e))
    failed = False
    for item in iter_files(paths):
        if isinstance(item, WalkError):
            emit({"path": str(item.path), "error": item.message})
            failed = True
            continue
        record: dict[str, Any] = {"path": str(item)}
        try:
            from hashsvc.media import read_bytes

            hashes = hashing.hash_media(
                read_bytes(item),
                wanted,
                path=hashing.HashPath.REFERENCE,
                dihedral=dihedral,
                max_pixels=settings.max_pixels,
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
