"""What every CLI command shares: settings, JSON-lines output, exit codes, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from hashsvc.config import Settings
from hashsvc.errors import HashListError, HashsvcError

if TYPE_CHECKING:
    from hashsvc.hashing import PdqEngine

EXIT_OK, EXIT_MATCH, EXIT_ERROR = 0, 1, 2

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default ./index, env HASHSVC_DATA_DIR)."),
]


#: Up to this many files named on the command line are hashed with `pdqhash`
FEW_FILES = 8


def pdq_engine_for(paths: Sequence[Path]) -> PdqEngine:
    """Meta's C++ PDQ for a few named files, our numba port otherwise.

    Why: `pdqhash` imports in 0.15 s where numba's compiled kernels take ~1 s to load
    once per process, while the numba port is ~5x faster per image; the bits are the
    same either way (tests/test_pdq_fast.py). A moderator's one-off `hash`/`match` of a
    photo then starts in well under a second; a folder gets the faster per-image path."""
    few = len(paths) <= FEW_FILES and all(p.is_file() for p in paths)
    return "pdqhash" if few else "numba"


def settings_for(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line values winning."""
    try:
        return Settings.from_env(data_dir=data_dir, **overrides)
    except HashsvcError as e:
        fail(str(e))


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed so a pipe or a killed run loses nothing."""
    sys.stdout.write(json.dumps(record, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human message on stderr (stdout stays machine-readable)."""
    typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"hashsvc: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn the core's exceptions into a message and exit status 2."""
    try:
        yield
    except HashListError as e:
        for p in e.problems:
            say(f"{e.source or 'input'}: {p}")
        fail(f"{len(e.problems)} invalid line(s); nothing was imported")
    except HashsvcError as e:
        fail(str(e))
