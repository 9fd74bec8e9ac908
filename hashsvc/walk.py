"""Expand command-line paths into files, recursively, without ever following a loop.

Shared by `hashsvc hash`, `hashsvc match`, `lists enroll` and `scan`. Files are yielded
in a stable (sorted) order so runs are reproducible; errors while listing a directory
are yielded as (path, message) instead of aborting the walk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WalkError:
    """A path that could not be listed or does not exist, with the reason."""

    path: Path
    message: str


def iter_files(
    paths: Iterable[str | Path], *, follow_symlinks: bool = False
) -> Iterator[Path | WalkError]:
    """Yield regular files under `paths` (files are yielded as given).

    Symlinked directories are entered only with follow_symlinks=True, and then each real
    directory at most once, so a symlink loop ends the descent instead of recursing.
    """
    seen: set[tuple[int, int]] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and (follow_symlinks or not p.is_symlink()):
            yield from _walk_dir(p, follow_symlinks, seen)
        elif p.exists() or p.is_symlink():
            yield p
        else:
            yield WalkError(p, "no such file or directory")


def _walk_dir(root: Path, follow: bool, seen: set[tuple[int, int]]) -> Iterator[Path | WalkError]:
    try:
        st = root.stat()
    except OSError as e:
        yield WalkError(root, e.strerror or str(e))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield WalkError(root, e.strerror or str(e))
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=follow)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk_dir(path, follow, seen)
        else:
            yield path
