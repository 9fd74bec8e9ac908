"""`hashsvc scan`: bulk-check folders against the lists; the adapter over `hashsvc.scan`.

It parses options, opens the results file, picks the backend (processes, or Dask),
writes each result as it comes, draws progress on stderr and turns the outcome into an
exit status. Everything else (walking, reading, hashing, resuming) is the core's.

Exit status, in this order of precedence:
  1  at least one file matched a list (in this run, or in the earlier runs of a
     `--resume`d results file), even if other files had errors: a match is what a
     moderator must never miss, and the summary still counts the errors;
  2  no match, but some file could not be checked (see `error_kind` in its line),
     or the scan could not run at all (bad options, no lists, unusable results file);
  0  every file was checked (or skipped as not an image) and nothing matched;
  130 interrupted (Ctrl-C, or SIGTERM): results so far are in the file, `--resume`
      continues.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from hashsvc.cli.common import EXIT_ERROR, EXIT_MATCH, EXIT_OK, DataDir, fail, say, settings_for
from hashsvc.config import Settings
from hashsvc.errors import HashsvcError

if TYPE_CHECKING:
    from collections import Counter

    from hashsvc.scan import Backend, ScanStats

EXIT_INTERRUPTED = 130
#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL = 10.0


def scan_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to scan (recursive).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Results file (default: stdout).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: all cores; 0 = in this process)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the scan in --out, skipping files it has.")
    ] = False,
    lists: Annotated[str | None, typer.Option(help="Only these lists (comma-separated).")] = None,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Follow symlinks to files and directories.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress and no summary.")] = False,
    scheduler: Annotated[
        str | None, typer.Option(help="Run on this Dask cluster (tcp://HOST:PORT).")
    ] = None,
    dask_local: Annotated[
        int | None, typer.Option(help="Run on a local Dask cluster of N worker processes.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Scan folders for media matching the lists: one result line per file.

    Exit status: 1 = a match (wins over errors), 2 = errors and no match, 0 = clean.
    """
    from hashsvc import scan

    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {fmt!r}")
    if resume and out is None:
        fail("--resume needs --out (the results file to continue)")
    if scheduler and dask_local:
        fail("give --scheduler or --dask-local, not both")
    if dask_local is not None and dask_local < 1:
        fail("--dask-local needs at least 1 worker")
    if workers is not None and workers < 0:
        fail("--workers must be >= 0")
    settings = settings_for(data_dir)
    # absolute: Dask workers (and their cwd) may be elsewhere
    settings = settings.with_(data_dir=Path(settings.data_dir).resolve())
    only = frozenset(s.strip() for s in lists.split(",") if s.strip()) if lists else None
    version = _check_lists(settings, only)
    if _pool_workers(workers, scheduler, dask_local) and _will_start(out, resume):
        # the pool's server loads the kernels while this process opens the results file
        # and sets up the walk (after the list check: a refused scan must not leave it
        # loading, holding the caller's stdout and stderr open)
        scan.start_pool_server()

    stats: ScanStats | None = None
    interrupted = False
    try:
        with ExitStack() as stack, _sigterm_as_interrupt():
            if out is not None:
                writer, previous = scan.open_results(out, cast(scan.Format, fmt), resume=resume)
                stack.callback(writer.stream.close)
                exclude = [fid] if (fid := scan.file_id(out)) else []
            else:
                writer = scan.ResultWriter(sys.stdout, cast(scan.Format, fmt))
                previous, exclude = [], []
            backend = stack.enter_context(
                _backend(settings, only, workers, scheduler, dask_local, version)
            )
            job = scan.Scan(
                [str(p) for p in paths],
                backend,
                follow_symlinks=follow_symlinks,
                previous=previous,
                exclude=exclude,
            )
            stats = job.stats
            with _progress(stats, enabled=not quiet):
                try:
                    for result in job:
                        writer.write(result)
                except KeyboardInterrupt:
                    interrupted = True
    except KeyboardInterrupt:  # while workers or the cluster were starting
        fail("interrupted before the scan started", EXIT_INTERRUPTED)
    except HashsvcError as e:
        fail(str(e))
    except OSError as e:  # the results file: disk full, no permission, ...
        fail(f"cannot write the results: {e}")
    assert stats is not None
    if not quiet:
        for line in summary(stats, out, interrupted=interrupted):
            say(line)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(exit_status(stats))


def _sigterm_as_interrupt() -> AbstractContextManager[None]:
    """`kill <pid>` stops the scan like Ctrl-C does (workers shut down, summary printed)
    instead of ending it mid-way; SIGKILL remains the only unclean stop."""
    from hashsvc import scan

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return scan.signal_handler(signal.SIGTERM, handler)


def exit_status(stats: ScanStats) -> int:
    """1 if anything matched (errors or not), else 2 if anything failed, else 0."""
    if stats.matched_files:
        return EXIT_MATCH
    return EXIT_ERROR if stats.errors else EXIT_OK


def _check_lists(settings: Settings, only: frozenset[str] | None) -> int:
    """Refuse to scan against nothing: a mistyped --data-dir would otherwise create an
    empty store and report every file clean. Returns the store's version."""
    from hashsvc.store import Store

    if not settings.db_path.exists():
        fail(f"no hash lists in {settings.data_dir} (no {settings.db_path.name}); check --data-dir")
    with Store.open(settings.db_path) as store:
        known = {lst.name for lst in store.lists()}
        if not known:
            fail(f"{settings.data_dir} holds no hash lists: nothing to match against")
        missing = sorted((only or set()) - known)
        if missing:
            fail(f"no list named {', '.join(missing)}")
        return store.version()


@contextmanager
def _backend(
    settings: Settings,
    only: frozenset[str] | None,
    workers: int | None,
    scheduler: str | None,
    dask_local: int | None,
    version: int,
) -> Iterator[Backend]:
    from hashsvc import scan

    if scheduler or dask_local:
        with scan.dask_client(scheduler, dask_local) as client:
            dask_backend = scan.DaskBackend(client, settings, only, min_version=version)
            try:
                yield dask_backend
            finally:
                dask_backend.close()
        return
    n = _pool_workers(workers, scheduler, dask_local)
    local: Backend
    if n == 0:
        local = scan.InlineBackend(settings, only)
    else:
        local = scan.ProcessBackend(settings, only, workers=n)
    try:
        yield local
    finally:
        local.close()


def _will_start(out: Path | None, resume: bool) -> bool:
    """False when the results-file check is bound to refuse the scan (a results file
    that is not to be continued). Then the pool's server is not started early: it would
    go on with its preload after the error message, holding this process's stdout and
    stderr open (a caller reading them would wait for it). The store and lists are
    checked before this is asked."""
    from hashsvc import scan

    try:
        return resume or out is None or not scan.has_results(out)
    except OSError:  # e.g. no permission: the check itself reports it, as before
        return False


def _pool_workers(workers: int | None, scheduler: str | None, dask_local: int | None) -> int:
    """How many worker processes the local pool gets (0: checks run in this process, or
    on Dask)."""
    if scheduler or dask_local:
        return 0
    return _cores() if workers is None else workers


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- progress and summary (stderr) -----------------------------------------------------


@contextmanager
def _progress(stats: ScanStats, *, enabled: bool) -> Iterator[None]:
    """A rich progress bar on a terminal, a plain line every PLAIN_INTERVAL s otherwise.

    Drawn by a ticker thread from `stats`, so a slow file does not freeze it."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    if sys.stderr.isatty():
        draw, finish = _rich_progress(stats)
        interval = 0.25
    else:

        def draw() -> None:
            say(progress_line(stats))

        def finish() -> None:
            pass

        interval = PLAIN_INTERVAL

    def tick() -> None:
        while not stop.wait(interval):
            draw()

    ticker = threading.Thread(target=tick, name="hashsvc-scan-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        finish()


def _rich_progress(stats: ScanStats) -> tuple[Callable[[], None], Callable[[], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} files/s"),
        TextColumn("[bold red]{task.fields[matches]} matched"),
        TextColumn("{task.fields[errors]} errors"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
    )
    task = progress.add_task("scanning", total=None, rate=0.0, matches=0, errors=0)
    progress.start()

    def draw() -> None:
        progress.update(
            task,
            completed=stats.done,
            total=stats.discovered if stats.walk_done else None,
            description="scanning" if stats.walk_done else f"listing ({stats.discovered})",
            rate=stats.files_per_second,
            matches=stats.matched_files,
            errors=stats.errors,
        )
        progress.refresh()

    def finish() -> None:
        draw()
        progress.stop()

    return draw, finish


def progress_line(stats: ScanStats) -> str:
    total = f"{stats.discovered}" if stats.walk_done else f"{stats.discovered}+ (listing)"
    rate = stats.files_per_second
    eta = ""
    if stats.walk_done and rate > 0:
        eta = f", ETA {_duration((stats.discovered - stats.done) / rate)}"
    return (
        f"scan: {stats.done}/{total} files, {rate:.1f} files/s, "
        f"{stats.matched_files} matched, {stats.errors} errors{eta}"
    )


def summary(stats: ScanStats, out: Path | None, *, interrupted: bool = False) -> list[str]:
    """The end-of-scan report: files, matches by list, skips and errors by kind, speed."""
    head = "scan interrupted" if interrupted else "scan finished"
    lines = [
        f"{head}: {stats.done} files in {_duration(stats.elapsed)} "
        f"({stats.files_per_second:.1f} files/s; {stats.hashed} images hashed, "
        f"{stats.bytes_read / 1e6:.1f} MB)",
        f"  matched files: {stats.matched_files}"
        + (f" ({_counts(stats.matches_by_list)})" if stats.matches_by_list else ""),
        f"  errors: {stats.errors}"
        + (f" ({_counts(stats.errors_by_kind)})" if stats.errors_by_kind else ""),
        f"  skipped: {sum(stats.skipped_by_reason.values())}"
        + (f" ({_counts(stats.skipped_by_reason)})" if stats.skipped_by_reason else ""),
    ]
    if stats.resumed:
        lines.append(
            f"  resumed: {stats.resumed} results were already in {out} (not re-hashed; "
            "their matches, errors and skips are counted above)"
        )
    if out is not None:
        lines.append(f"  results: {out}")
    if interrupted:
        lines.append("  continue with the same command and --resume")
    return lines


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


__all__ = ["scan_cmd", "exit_status", "summary", "progress_line"]
