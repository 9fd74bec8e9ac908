"""Bulk folder scan: walk -> stat -> (in a worker: read, sniff, hash, match) -> one result.

This module owns what a scan result is (`FileResult` and its JSONL/CSV line), how files
are found and keyed for `--resume` (path + size + mtime), how one file is checked
(`check_file`, which never raises), and the three ways checks run: in this process, in
a pool of worker processes, or on a Dask cluster. It prints nothing: the CLI adapter
(`hashsvc/cli/scan.py`) renders progress and the summary from `ScanStats`.

Decisions, and why:

- **Images are found by content.** The first bytes are tested with the signature checks
  of exactly the Pillow plugins `media` allows; anything else is recorded as
  ``"skipped": "not an image"`` without reading the rest (a seized drive holds videos
  and archives of many GB: reading them whole only to reject them would be slow and
  could exhaust memory). A file with an image signature that fails to decode is an
  *error* (``corrupt``), because an image we could not check is what a moderator must
  hear about; a file that is not an image is not.
- **Symlinks are not followed unless asked** (``follow_symlinks``), for directories and
  for files alike: on a mounted evidence drive an absolute link resolves against the
  examiner's own machine. A symlink to a file named on the command line is followed.
  Only regular files are opened (a FIFO would block a worker, a device could be endless).
- **Nothing about a bad file stops the scan**: every failure becomes that file's
  result line, with an `ErrorKind`. A worker process that dies (a decoder crashing on
  a hostile file) is replaced and the files it held are retried one by one, so only the
  file that kills a worker is reported as ``worker_crashed``.
- **Each worker opens its own Matcher once** (pool initializer, or a Dask
  `WorkerPlugin`): a `Store` never crosses a fork, and the pool uses the ``forkserver``
  (or ``spawn``) start method so no worker inherits the parent's threads or handles.
- **Results leave as they complete**; the writer flushes every line, so a killed scan
  loses only the files in flight, and `read_results` + the resume key skip the rest.
- **Matched files are never copied, moved or shown**: the bytes of each file live only
  in the worker's memory while it is hashed; the output names files.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import multiprocessing
import os
import queue
import signal
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from hashsvc.config import Settings
from hashsvc.containers import is_video
from hashsvc.errors import HashsvcError, MediaRejected
from hashsvc.walk import WalkError, iter_files

if TYPE_CHECKING:
    from distributed import Client

    from hashsvc.matcher import Matcher

#: Enough bytes for every signature check of the allowed formats (AVIF needs 12) and of
#: the video containers (MPEG-TS has sync bytes at 0, 188 and 376).
SNIFF_BYTES = 512
#: How far the walk may run ahead of the hashing (bounds memory on huge trees).
WALK_AHEAD = 100_000

Format = Literal["jsonl", "csv"]
ResumeKey = tuple[str, int | None, int | None]


class ScanError(HashsvcError):
    """The scan as a whole cannot go on (bad results file, workers with a stale list)."""


class ErrorKind(StrEnum):
    """Why a file could not be checked. Any of these makes the scan exit 2 (see CLI)."""

    VANISHED = "vanished"  # listed by the walk, gone before it was read
    PERMISSION = "permission_denied"
    IO = "io_error"  # any other OS error: EIO on a failing disk, ELOOP, ...
    CORRUPT = "corrupt"  # has an image signature but does not decode
    TOO_LARGE = "too_large"  # over the pixel cap (HASHSVC_MAX_PIXELS)
    WALK = "walk_error"  # a directory could not be listed, or a path does not exist
    WORKER_CRASHED = "worker_crashed"  # the worker died on this file (twice)
    INTERNAL = "internal"  # a bug: reported on the file, the scan goes on


class SkipReason(StrEnum):
    """Why a file was not hashed although nothing went wrong. Not an error."""

    NOT_IMAGE = "not an image"  # no signature of an accepted image or video format
    EMPTY = "empty file"
    SYMLINK = "symlink not followed"
    BROKEN_SYMLINK = "broken symlink"
    NOT_REGULAR = "not a regular file"


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """A regular file to check, as the walk saw it. Small and picklable: this is what
    travels to a worker process or a Dask worker."""

    path: str  # as reported (relative if the argument was)
    read_path: str  # absolute, so a worker with another cwd (Dask) opens the same file
    size: int
    mtime_ns: int
    follow: bool  # may the final path component be a symlink?

    @property
    def key(self) -> ResumeKey:
        return (self.path, self.size, self.mtime_ns)


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: a verdict (with matches and hashes), a skip, or an error.

    `size`/`mtime_ns` are those of the bytes that were read (so `--resume` re-checks a
    file changed since), or the walk's when nothing was read, or None when unknown.
    """

    path: str
    size: int | None = None
    mtime_ns: int | None = None
    verdict: str | None = None
    matches: tuple[dict[str, Any], ...] = ()
    hashes: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    skipped: str | None = None
    error_kind: str | None = None
    error: str | None = None

    @property
    def key(self) -> ResumeKey:
        return (self.path, self.size, self.mtime_ns)

    @property
    def matched(self) -> bool:
        return bool(self.matches)

    @classmethod
    def failed(
        cls, path: str, kind: ErrorKind, message: str, size: int | None = None,
        mtime_ns: int | None = None,
    ) -> FileResult:  # fmt: skip
        return cls(path, size, mtime_ns, error_kind=kind.value, error=message)

    @classmethod
    def skip(
        cls, path: str, reason: SkipReason | str, size: int | None = None,
        mtime_ns: int | None = None,
    ) -> FileResult:  # fmt: skip
        return cls(path, size, mtime_ns, skipped=str(reason))

    def to_record(self) -> dict[str, Any]:
        """The JSONL line: keys present only where they mean something."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}
        if self.error_kind is not None:
            out["error_kind"] = self.error_kind
            out["error"] = self.error
        elif self.skipped is not None:
            out["skipped"] = self.skipped
        else:
            out["verdict"] = self.verdict
            out["matches"] = list(self.matches)
            out["hashes"] = self.hashes
            if self.notes:
                out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> FileResult:
        return cls(
            path=str(rec["path"]),
            size=rec.get("size"),
            mtime_ns=rec.get("mtime_ns"),
            verdict=rec.get("verdict"),
            matches=tuple(rec.get("matches") or ()),
            hashes=dict(rec.get("hashes") or {}),
            notes=tuple(rec.get("notes") or ()),
            skipped=rec.get("skipped"),
            error_kind=rec.get("error_kind"),
            error=rec.get("error"),
        )


@dataclass
class ScanStats:
    """Counters for progress and the summary. The walk thread only bumps `discovered`
    and sets `walk_done`; everything else is updated by the consuming thread."""

    discovered: int = 0  # files the walk found that this run will report
    walk_done: bool = False
    done: int = 0  # files reported by this run
    hashed: int = 0  # images hashed and matched by this run
    bytes_read: int = 0
    resumed: int = 0  # results already in the file from an earlier run
    matched_files: int = 0  # over the whole results file (earlier runs included)
    matches_by_list: Counter[str] = field(default_factory=Counter)
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add(self, r: FileResult, *, previous: bool = False) -> None:
        if previous:
            self.resumed += 1
        else:
            self.done += 1
            if r.verdict is not None:
                self.hashed += 1
                self.bytes_read += r.size or 0
        if r.error_kind is not None:
            self.errors_by_kind[r.error_kind] += 1
        elif r.skipped is not None:
            self.skipped_by_reason[r.skipped] += 1
        elif r.matched:
            self.matched_files += 1
            self.matches_by_list.update({str(m.get("list")) for m in r.matches})

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def files_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


# --- discovery -------------------------------------------------------------------------


def discover(
    paths: Sequence[str | Path],
    *,
    follow_symlinks: bool = False,
    exclude: Collection[tuple[int, int]] = (),
) -> Iterator[FileTask | FileResult]:
    """Every file under `paths`: a task to check, or already a result (skip or error).

    `exclude` holds (st_dev, st_ino) of files never to report (the results file itself,
    when it lies inside the scanned tree).
    """
    named = {os.path.normpath(str(p)) for p in paths}
    for item in iter_files(paths, follow_symlinks=follow_symlinks):
        if isinstance(item, WalkError):
            yield FileResult.failed(str(item.path), ErrorKind.WALK, item.message)
            continue
        follow = follow_symlinks or os.path.normpath(str(item)) in named
        described = describe(item, follow=follow)
        if exclude and isinstance(described, FileTask):
            try:
                st = os.stat(described.read_path)
                if (st.st_dev, st.st_ino) in exclude:
                    continue
            except OSError:
                pass  # it vanished: the worker will say so
        yield described


def describe(path: Path, *, follow: bool) -> FileTask | FileResult:
    """Stat one listed path (lstat first: a symlink is only followed when allowed)."""
    p = str(path)
    try:
        st = os.lstat(p)
    except OSError as e:
        return _os_error(p, e)
    if stat.S_ISLNK(st.st_mode):
        if not follow:
            return FileResult.skip(p, SkipReason.SYMLINK, st.st_size, st.st_mtime_ns)
        try:
            st = os.stat(p)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return FileResult.skip(p, SkipReason.BROKEN_SYMLINK)
            return _os_error(p, e)
    if not stat.S_ISREG(st.st_mode):
        what = _file_type(st.st_mode)
        return FileResult.skip(p, f"{SkipReason.NOT_REGULAR} ({what})", None, None)
    return FileTask(p, os.path.abspath(p), st.st_size, st.st_mtime_ns, follow)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):  # fmt: skip
        if test(mode):
            return name
    return "unknown type"


def _os_error(path: str, e: OSError, task: FileTask | None = None) -> FileResult:
    size, mtime = (task.size, task.mtime_ns) if task else (None, None)
    reason = e.strerror or str(e)
    if isinstance(e, FileNotFoundError):
        return FileResult.failed(
            path, ErrorKind.VANISHED, f"vanished before it was read ({reason})"
        )
    if isinstance(e, PermissionError):
        return FileResult.failed(path, ErrorKind.PERMISSION, reason, size, mtime)
    return FileResult.failed(path, ErrorKind.IO, reason, size, mtime)


def _internal(tasks: Iterable[FileTask], e: BaseException) -> Iterator[FileResult]:
    for t in tasks:
        yield FileResult.failed(
            t.path, ErrorKind.INTERNAL, f"{type(e).__name__}: {e}", t.size, t.mtime_ns
        )


# --- checking one file (runs in a worker) ------------------------------------------------


@cache
def _signature_checks() -> tuple[Callable[[bytes], Any], ...]:
    """Pillow's own `_accept` tests for exactly the formats `media` decodes, so "is this
    an image?" is answered by the same code that will parse it, not by a copy."""
    from PIL import Image

    from hashsvc.media import allowed_formats

    Image.init()
    checks = (Image.OPEN[f][1] for f in allowed_formats() if f in Image.OPEN)
    return tuple(c for c in checks if c is not None)


#: rejections of valid media that only exceeds a configured cap (media.py, video.py)
_OVER_CAP = ("too many pixels", "video too long", "video frames too large", "too many frames")


def looks_like_image(head: bytes) -> bool:
    """True when the first bytes carry the signature of an accepted image format."""
    return any(bool(accept(head)) for accept in _signature_checks())


def open_for_read(path: str, follow: bool) -> int:
    """Open without blocking on a FIFO and, unless `follow`, without following a symlink
    swapped in since the walk looked (O_NOFOLLOW). Tests monkeypatch this to simulate
    errors that root cannot get (root reads a chmod 000 file)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags)


def check_file(
    task: FileTask, matcher: Matcher, lists: Collection[str] | None = None
) -> FileResult:
    """Read, sniff, hash and match one file. Never raises: every failure is a result."""
    try:
        return _check(task, matcher, lists)
    except Exception as e:  # a bug must cost one file's line, not the scan
        return next(_internal([task], e))


def _check(task: FileTask, matcher: Matcher, lists: Collection[str] | None) -> FileResult:
    try:
        fd = open_for_read(task.read_path, task.follow)
    except OSError as e:
        if e.errno == errno.ELOOP and not task.follow:
            return FileResult.skip(task.path, SkipReason.SYMLINK, task.size, task.mtime_ns)
        return _os_error(task.path, e, task)
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            size, mtime = st.st_size, st.st_mtime_ns
            if not stat.S_ISREG(st.st_mode):
                return FileResult.skip(task.path, f"{SkipReason.NOT_REGULAR} "
                                       f"({_file_type(st.st_mode)})", None, None)  # fmt: skip
            head = f.read(SNIFF_BYTES)
            if not head:
                return FileResult.skip(task.path, SkipReason.EMPTY, size, mtime)
            if not (looks_like_image(head) or is_video(head)):
                return FileResult.skip(task.path, SkipReason.NOT_IMAGE, size, mtime)
            data = head + f.read()
    except OSError as e:
        return _os_error(task.path, e, task)
    try:
        result = matcher.match_media(data, lists=lists)
    except MediaRejected as e:
        text = str(e)
        # media.py has one exception type; the pixel cap is the one rejection of a valid
        # image, so it gets its own kind (a moderator may rerun with a higher cap)
        kind = ErrorKind.TOO_LARGE if text.startswith(_OVER_CAP) else ErrorKind.CORRUPT
        return FileResult.failed(task.path, kind, text, size, mtime)
    return FileResult(
        path=task.path,
        size=size,
        mtime_ns=mtime,
        verdict=result.verdict.value,
        matches=tuple(m.to_json() for m in result.matches),
        hashes=result.hashes.to_json(),
        notes=result.notes,
    )


# --- backends: where check_file runs ----------------------------------------------------

Item = FileTask | FileResult
#: In a stream of items, None means "the walk has nothing new yet" (a slow directory
#: listing): a backend then writes out whatever finished instead of sitting on it.
IDLE_AFTER = 0.1


class Backend(Protocol):
    """Runs `check_file` over tasks; results already decided by the walk pass through.
    Results come back in completion order, with a bounded number of files in flight."""

    def run(self, items: Iterator[Item | None]) -> Iterator[FileResult]: ...

    def close(self) -> None: ...


class InlineBackend:
    """Checks files in this process (`--workers 0`): for debugging, tests and tiny scans."""

    def __init__(self, settings: Settings, lists: Collection[str] | None = None) -> None:
        from hashsvc.matcher import Matcher

        self.matcher = Matcher.open(settings)
        self.lists = lists

    def run(self, items: Iterator[Item | None]) -> Iterator[FileResult]:
        for item in items:
            if isinstance(item, FileResult):
                yield item
            elif item is not None:
                yield check_file(item, self.matcher, self.lists)

    def close(self) -> None:
        self.matcher.close()


# Per-process state of a pool worker: its own Matcher, opened once by the initializer.
_WORKER: dict[str, Any] = {}


def _worker_init(settings: Settings, lists: frozenset[str] | None, scan_pid: int) -> None:
    from hashsvc.matcher import Matcher

    # Ctrl-C goes to the whole process group: the parent decides what to do with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_buffers_on_heap()
    _WORKER["matcher"] = Matcher.open(settings)
    _WORKER["lists"] = lists
    _watch_scan(scan_pid)


def _watch_scan(pid: int) -> None:
    """Exit when the scan process is gone. After a SIGKILL of the scan a pool worker
    would otherwise block on its task queue forever (it holds both ends of that pipe),
    and keep the forkserver alive too (it holds the server's liveness pipe). The parent
    of a worker is the forkserver, not the scan, hence a pid rather than getppid()."""

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the pid now belongs to another user's process
            return False
        return True

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="hashsvc-orphan-watch", daemon=True).start()


def _ping() -> bool:
    return "matcher" in _WORKER


def check_chunk(tasks: Sequence[FileTask]) -> list[FileResult]:
    """Pool task: check files with this worker's Matcher."""
    return [check_file(t, _WORKER["matcher"], _WORKER["lists"]) for t in tasks]


def warm_kernels() -> None:
    """Dispatch the numba kernels of a file check once, on a generated image and with
    no Store (a SQLite handle must never cross a fork).

    The pool's forkserver runs this (via `hashsvc._scan_preload`) so that every worker
    forked from it starts with them loaded. Otherwise each worker paid 0.6-0.9 CPU-s on
    its first image: numba's first dispatch imports its typing registries (scipy.linalg
    among them) and then loads the cached kernels. Kernels a file needs that this did
    not touch still load on first use, as before; so does everything after a failure.
    """
    try:
        import numpy as np
        from PIL import Image

        from hashsvc import hashing, search

        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small, "RGB").resize((320, 240), Image.Resampling.BICUBIC)
        framed = Image.new("RGB", (320, 320))  # black bars: the trimmed-content path too
        framed.paste(img, (0, 40))
        buf = io.BytesIO()
        framed.save(buf, "JPEG")
        # the matching path of the default Settings (fast decode, 8 variants, trim)
        hashing.hash_media(buf.getvalue(), path=hashing.HashPath.FAST, dihedral=True, trim=True)
        hashing.pdq(np.asarray(img))  # RGB pixels: a rotation/flip match being confirmed
        search.warmup()  # the search kernels of large lists
    except Exception:  # a worker then loads them itself on first use, as it always did
        pass


#: What a scan's forkserver imports once for every worker it forks (pool and local Dask):
#: one module, which imports the worker's modules itself with the collector off.
KERNEL_PRELOAD = ("hashsvc._scan_preload",)


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where available (fast worker start, no inherited threads or SQLite
    handles), else spawn. Never plain fork: the scan runs a walk thread."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # imported once in the server, then inherited by every worker it forks: numba
        # and the kernel modules take ~0.8 s to import, and loading the kernels another
        # ~0.6-0.9 s (hashsvc._scan_preload), per process otherwise
        ctx.set_forkserver_preload(list(KERNEL_PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def start_pool_server() -> None:
    """Start the pool's forkserver now instead of with the first pool (the CLI calls this
    after the list check, before it opens the results file and walks).

    A scan waits for that server's preload (numba, the kernels, `warm_kernels`: 1.3-1.6 s
    from its start to the first worker's answer on a 2-core box) before its first file;
    started early, it runs while this process does its own start-up. The
    `ProcessBackend` created later forks its workers from this server. Without a
    forkserver (spawn) there is nothing to start ahead.
    """
    if _pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        # a server that cannot start now (e.g. its socket path under a long TMPDIR) is
        # started, or reported, by the pool as before
        with suppress(OSError), _sigint_ignored_by_children():
            forkserver.ensure_running()


@contextmanager
def signal_handler(signum: int, handler: Any) -> Iterator[None]:
    """`handler` (a function or signal.SIG_IGN) for `signum` inside the block, the
    previous handler after it. Off the main thread nothing changes: Python lets only the
    main thread set handlers, and a scan run from another thread (the engine API in a
    server) keeps its host's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextmanager
def _sigint_deferred() -> Iterator[list[int]]:
    """Ctrl-C while the pool's workers start is noted (the yielded list) and acted on
    once they have started. Why: the pool asks the forkserver for a worker and then
    waits for the server's preload; interrupted there, the scan exited while the
    server still owed it that worker, which then found the pool's semaphores gone and
    printed a FileNotFoundError traceback. Started, the workers are shut down cleanly."""
    got: list[int] = []
    with signal_handler(signal.SIGINT, lambda signum, frame: got.append(signum)):
        yield got


def _sigint_ignored_by_children() -> AbstractContextManager[None]:
    """SIGINT ignored while a child process is started, so that the child ignores it from
    its first instruction (an ignored signal stays ignored across exec, and Python then
    installs no KeyboardInterrupt handler). Why: Ctrl-C reaches the whole process group,
    and the forkserver spends most of the CLI's start-up importing; it ignores SIGINT only
    once its preload is done (multiprocessing.forkserver.main), so a Ctrl-C before then
    printed its KeyboardInterrupt traceback under the CLI's own message. The scan's own
    process decides what an interrupt means; the pool workers ignore it too."""
    return signal_handler(signal.SIGINT, signal.SIG_IGN)


class ProcessBackend:
    """A pool of worker processes, each with its own Matcher (`--workers N`).

    Files go out in chunks of `chunk`, grown up to `max_chunk` files while they hold
    under `chunk_bytes` (fewer round trips for the many small files of a real drive,
    while large photos and videos still go a few at a time), with at most `2 * workers`
    chunks in flight. A round trip costs ~1 CPU-ms (parent and worker together): ~4% of
    checking four 1024x768 JPEGs, ~1% of sixteen. `check` is the function a worker runs
    on a chunk; tests replace it to crash a worker on purpose.
    """

    def __init__(
        self,
        settings: Settings,
        lists: Collection[str] | None = None,
        *,
        workers: int = 2,
        chunk: int = 4,
        max_chunk: int = 16,
        chunk_bytes: int = 1 << 20,
        check: Callable[[Sequence[FileTask]], list[FileResult]] = check_chunk,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.settings = settings
        self.lists = frozenset(lists) if lists is not None else None
        self.workers = workers
        self.chunk = chunk
        self.max_chunk = max_chunk
        self.chunk_bytes = chunk_bytes
        self.check = check
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool whose workers have started: a worker that cannot open the store would
        otherwise look like a crash on every file (and be retried file by file)."""
        with _sigint_deferred() as interrupted:
            pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_pool_context(),
                initializer=_worker_init,
                initargs=(self.settings, self.lists, os.getpid()),
            )
            try:
                pool.submit(_ping).result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                raise ScanError(
                    "scan worker processes failed to start (their error is printed above)"
                ) from None
        if interrupted:
            pool.shutdown(wait=True, cancel_futures=True)
            raise KeyboardInterrupt
        return pool

    def run(self, items: Iterator[Item | None]) -> Iterator[FileResult]:
        pending: dict[Future[list[FileResult]], list[FileTask]] = {}
        crashed: list[FileTask] = []
        batches = _batches(items, self.chunk, most=self.max_chunk, small=self.chunk_bytes)
        for batch in batches:
            tasks = [t for t in batch if isinstance(t, FileTask)]
            yield from (r for r in batch if isinstance(r, FileResult))
            if tasks:
                pending[self._submit(tasks)] = tasks
            while len(pending) >= 2 * self.workers:
                yield from self._collect(pending, crashed)
            yield from self._collect(pending, crashed, block=False)
        while pending:
            yield from self._collect(pending, crashed)
        if crashed:
            yield from self._isolate(crashed)

    def _submit(self, tasks: list[FileTask]) -> Future[list[FileResult]]:
        try:
            return self._pool.submit(self.check, tasks)
        except BrokenProcessPool:
            self._restart()
            return self._pool.submit(self.check, tasks)

    def _collect(
        self,
        pending: dict[Future[list[FileResult]], list[FileTask]],
        crashed: list[FileTask],
        *,
        block: bool = True,
    ) -> Iterator[FileResult]:
        """Yield the results of finished chunks (waiting for one unless `block` is off)."""
        done, _ = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        broken = False
        for fut in done:
            tasks = pending.pop(fut)
            try:
                results = fut.result()
            except (BrokenProcessPool, CancelledError):
                crashed.extend(tasks)  # which file killed the worker is unknown: retry alone
                broken = True
                continue
            except Exception as e:  # e.g. a result that cannot be pickled: a bug
                yield from _internal(tasks, e)
                continue
            yield from results
        if broken:
            # the whole pool is gone: keep what finished, retry the rest after the walk
            for fut, tasks in pending.items():
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    yield from fut.result()
                else:
                    crashed.extend(tasks)
            pending.clear()
            self._restart()

    def _isolate(self, tasks: list[FileTask]) -> Iterator[FileResult]:
        """Retry files from a crashed pool one at a time: a file that kills a worker
        again is reported as `worker_crashed`; the others get their real result."""
        for t in tasks:
            fut = self._submit([t])
            try:
                yield from fut.result()
            except BrokenProcessPool:
                self._restart()
                yield FileResult.failed(t.path, ErrorKind.WORKER_CRASHED,
                                        "the worker process died while checking this file",
                                        t.size, t.mtime_ns)  # fmt: skip

    def _restart(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# Dask: a WorkerPlugin opens one Matcher per worker process, when the worker joins.
DASK_PLUGIN = "hashsvc-scan"


@cache
def _plugin_class() -> type:
    """The WorkerPlugin class, built on first use so that importing this module (as every
    pool worker does) does not import distributed (~1.5 s). Pickle finds it as
    `hashsvc.scan.MatcherPlugin` through the module `__getattr__` below."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class MatcherPlugin(WorkerPlugin):
        """Opens the worker's Matcher in `setup` (once per worker process, and on workers
        that join later); closes it in `teardown` (when the scan unregisters it)."""

        idempotent = False

        def __init__(self, settings: Settings, lists: frozenset[str] | None) -> None:
            self.settings = settings
            self.lists = lists
            self.matcher: Matcher | None = None

        def setup(self, worker: Any) -> None:
            from hashsvc.matcher import Matcher

            _keep_buffers_on_heap()
            self.matcher = Matcher.open(self.settings)

        def teardown(self, worker: Any) -> None:
            if self.matcher is not None:
                self.matcher.close()

        def __getstate__(self) -> dict[str, Any]:
            return {"settings": self.settings, "lists": self.lists, "matcher": None}

    MatcherPlugin.__module__ = __name__
    MatcherPlugin.__qualname__ = "MatcherPlugin"
    return MatcherPlugin


def _keep_buffers_on_heap() -> None:
    """Undo, in a Dask or pool worker, the malloc tuning a Dask nanny gives it.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to
    the OS). Setting that freezes glibc's mmap threshold at 128 KiB, so every decoded
    image and PDQ buffer becomes a fresh mmap, zero-filled page by page: hashing ran at
    half speed in a Dask worker (34 vs 67 files/s, 1024x768 JPEGs). A fixed 64 MiB mmap
    threshold keeps those buffers on the heap. glibc only; elsewhere nothing happens.

    Pool workers need it too: a nanny sets the variable in its *own* process, for good
    (`os.environ.update`), so a process that hosted a LocalCluster (bench/scan.py, a
    notebook, the tests) passes it to every scan it starts later. There it cost 2,700
    page faults and ~8 ms of system time per 1024x768 JPEG: 53 instead of 105 files
    per CPU-second with 1 or 2 workers.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: trim only above this much free
    except (OSError, AttributeError):
        pass


def __getattr__(name: str) -> Any:
    if name == "MatcherPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dask_check_chunk(tasks: Sequence[FileTask]) -> tuple[int, list[FileResult]]:
    """Dask task: (this worker's store version, results) with the plugin's Matcher."""
    from distributed import get_worker

    plugin: Any = get_worker().plugins[DASK_PLUGIN]
    matcher = plugin.matcher
    return matcher.indexes.version, [check_file(t, matcher, plugin.lists) for t in tasks]


class DaskBackend:
    """Runs checks on a Dask cluster (`--scheduler` / `--dask-local`).

    Workers read the files themselves (shared storage, absolute paths) and each loads
    the index once, through `MatcherPlugin`. Results stream back with `as_completed`.
    A worker whose store is *behind* this client's (a stale copy of the data dir) would
    silently miss entries, so that stops the scan; ahead (a list edited meanwhile) is fine.

    A Dask task costs the client (scheduler, futures, pickling) ~10 CPU-ms, ten times a
    pool round trip, so once every worker slot has had two tasks of `chunk` files (a
    small scan still spreads over all workers), tasks grow up to `max_chunk` files while
    they hold under `chunk_bytes`: ~40 files of a 1024x768 JPEG folder, 8 large photos.
    Steady state, 2 local workers, 2 rounds on bench/scan.py's corpus: 8 files a task
    186-210 files/s and 2.7 client CPU-s per 1,900 files; 32 a task 228-258 files/s and
    1.2 s; 48 a task 232-246 and 0.9-1.0 s; the process pool 231-272 in the same rounds.
    A task that fails (its worker died: a file that crashes the decoder) is retried file
    by file, so only the culprit is reported `worker_crashed`.
    """

    def __init__(
        self,
        client: Client,
        settings: Settings,
        lists: Collection[str] | None = None,
        *,
        min_version: int = 0,
        chunk: int = 8,
        max_chunk: int = 64,
        chunk_bytes: int = 8 << 20,
    ) -> None:
        self.client = client
        self.lists = frozenset(lists) if lists is not None else None
        self.min_version = min_version
        self.chunk = chunk
        self.max_chunk = max_chunk
        self.chunk_bytes = chunk_bytes
        # raises here if any worker cannot open the store: fail before the first file
        client.register_plugin(_plugin_class()(settings, self.lists), name=DASK_PLUGIN)
        self.slots = max(1, sum(client.nthreads().values()))

    def run(self, items: Iterator[Item | None]) -> Iterator[FileResult]:
        from distributed import as_completed

        pending: dict[Any, list[FileTask]] = {}
        ac = as_completed()
        for batch in self._batches(items):
            tasks = [t for t in batch if isinstance(t, FileTask)]
            yield from (r for r in batch if isinstance(r, FileResult))
            if tasks:
                fut = self.client.submit(dask_check_chunk, tasks, pure=False)
                pending[fut] = tasks
                ac.add(fut)
            while ac.count() >= 2 * self.slots:
                yield from self._collect(next(ac), pending)
            while ac.has_ready():
                yield from self._collect(next(ac), pending)
        for fut in ac:
            yield from self._collect(fut, pending)

    def _batches(self, items: Iterator[Item | None]) -> Iterator[list[Item]]:
        """`chunk` files a task until every worker slot has had two, then growing."""
        items = iter(items)
        sent = 0
        for batch in _batches(items, self.chunk):
            yield batch  # suspended here: `items` is not read past this batch
            sent += any(isinstance(t, FileTask) for t in batch)
            if sent >= 2 * self.slots:
                break
        yield from _batches(items, self.chunk, most=self.max_chunk, small=self.chunk_bytes)

    def _collect(self, fut: Any, pending: dict[Any, list[FileTask]]) -> Iterator[FileResult]:
        tasks = pending.pop(fut)
        try:
            version, results = fut.result()
        except Exception as e:  # KilledWorker (a file crashed workers repeatedly), ...
            if len(tasks) > 1:  # which file it was is unknown: each alone, in turn
                for t in tasks:
                    single = self.client.submit(dask_check_chunk, [t], pure=False)
                    pending[single] = [t]
                    yield from self._collect(single, pending)
                return
            for t in tasks:
                yield FileResult.failed(t.path, ErrorKind.WORKER_CRASHED,
                                        f"{type(e).__name__}: {e}", t.size, t.mtime_ns)  # fmt: skip
            return
        finally:
            fut.release()
        if version < self.min_version:
            raise ScanError(
                f"a Dask worker's store is at version {version}, behind this client's "
                f"{self.min_version}: every worker must use the same, current data dir"
            )
        yield from results

    def close(self) -> None:
        # the cluster may already be gone; then there is nothing of ours to clean up
        with suppress(Exception):
            self.client.unregister_worker_plugin(DASK_PLUGIN)


@contextmanager
def dask_client(scheduler: str | None = None, local_workers: int | None = None) -> Iterator[Client]:
    """A client of an existing cluster, or of a LocalCluster of `local_workers`
    single-threaded worker processes (threads would share one Matcher and the GIL)."""
    import logging

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ScanError(
            "Dask is not installed: pip install 'hashsvc[cluster]' (dask[distributed])"
        ) from None
    if scheduler:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError) as e:
            raise ScanError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
        return
    import dask

    with (
        dask.config.set(SCAN_WORKER_CONFIG),  # nannies hand it to their workers
        _preloaded_forkserver(),
        LocalCluster(
            n_workers=local_workers or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,  # nobody is told its address: no dashboard to serve
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextmanager
def _preloaded_forkserver() -> Iterator[None]:
    """Local Dask workers forked from a server that has imported distributed (Dask's own
    forkserver preload) and our kernels (as the process pool's): each spawned worker
    otherwise imported both and loaded the kernels itself, ~2 CPU-s per worker before
    its first file. Spawn where there is no forkserver."""
    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # sets Dask's preload list once; the server starts with a worker
        from multiprocessing import forkserver

        dask_preload = list(getattr(forkserver._forkserver, "_preload_modules", []))
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            dask_preload + list(KERNEL_PRELOAD)
        )
        yield


#: Dask settings for the workers of a scan's local cluster (README: set the same on a
#: real cluster's workers). The statistical profiler samples every worker thread's
#: stack every 10 ms for the dashboard's profile page; during a scan that cost ~15% of
#: the throughput (bench/scan.py, 2 local workers: 133-139 -> 153-171 files/s; CPU per
#: 2,000 files 32-34 -> 27-29 s, the process pool 22-25 s).
SCAN_WORKER_CONFIG: dict[str, object] = {"distributed.worker.profile.enabled": False}


def _batches(
    items: Iterator[Item | None], n: int, *, most: int = 0, small: int = 0
) -> Iterator[list[Item]]:
    """Batches of up to n tasks (fewer round trips for tiny files), or up to `most` while
    the tasks' files total under `small` bytes. A batch also goes when the walk is idle
    (then possibly empty: a chance to collect finished work) or at 4 times that many
    items (a long run of results decided by the walk, skips, is reported at once)."""
    batch: list[Item] = []
    tasks = size = 0
    items_max = 4 * max(n, most)
    for item in items:
        if item is not None:
            batch.append(item)
            if isinstance(item, FileTask):
                tasks += 1
                size += item.size
            room = tasks < n or (tasks < most and size < small)
            if room and len(batch) < items_max:
                continue
        yield batch
        batch, tasks, size = [], 0, 0
    if batch:
        yield batch


# --- the scan ----------------------------------------------------------------------------


class Scan:
    """One scan: walk `paths` in a background thread (so the total is known early),
    skip what `done` already holds, run the rest on `backend`, yield results as they
    complete, and keep `stats` current. Iterate it once."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        backend: Backend,
        *,
        follow_symlinks: bool = False,
        previous: Iterable[FileResult] = (),
        exclude: Collection[tuple[int, int]] = (),
    ) -> None:
        self.paths = list(paths)
        self.backend = backend
        self.follow_symlinks = follow_symlinks
        self.exclude = exclude
        self.stats = ScanStats()
        self.done: set[ResumeKey] = set()
        for r in previous:
            self.done.add(r.key)
            self.stats.add(r, previous=True)
        self._queue: queue.Queue[Item | None | BaseException] = queue.Queue(WALK_AHEAD)
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[FileResult]:
        walker = threading.Thread(target=self._walk, name="hashsvc-scan-walk", daemon=True)
        walker.start()
        try:
            for result in self.backend.run(self._items()):
                self.stats.add(result)
                yield result
        finally:
            self._stop.set()
            self.stats.finished = time.monotonic()

    def _walk(self) -> None:
        try:
            for item in discover(self.paths, follow_symlinks=self.follow_symlinks,
                                 exclude=self.exclude):  # fmt: skip
                if item.key in self.done:
                    continue
                self.stats.discovered += 1
                if not self._put(item):
                    return
            self._put(None)
        except BaseException as e:  # surfaced in the consuming thread
            self._put(e)
        finally:
            self.stats.walk_done = True

    def _put(self, item: Item | None | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _items(self) -> Iterator[Item | None]:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_AFTER)
            except queue.Empty:
                yield None  # the walk is slow: let the backend flush what finished
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


# --- results files -----------------------------------------------------------------------

CSV_COLUMNS = ("path", "size", "mtime_ns", "verdict", "match_lists", "matches", "pdq",
               "pdq_quality", "phash", "md5", "sha256", "notes", "skipped", "error_kind",
               "error")  # fmt: skip
_HASH_COLUMNS = ("pdq", "pdq_quality", "phash", "md5", "sha256")


def to_csv_row(r: FileResult) -> list[str]:
    """One CSV row; `matches` is the JSON array of the JSONL line (lossless), and
    `match_lists` the distinct list names, for a spreadsheet filter."""
    lists = sorted({str(m.get("list")) for m in r.matches})
    return [
        r.path,
        "" if r.size is None else str(r.size),
        "" if r.mtime_ns is None else str(r.mtime_ns),
        r.verdict or "",
        ";".join(lists),
        json.dumps(list(r.matches), separators=(",", ":")) if r.verdict else "",
        *("" if r.hashes.get(k) is None else str(r.hashes[k]) for k in _HASH_COLUMNS),
        " | ".join(r.notes),
        r.skipped or "",
        r.error_kind or "",
        r.error or "",
    ]


def from_csv_row(row: dict[str, str]) -> FileResult:
    hashes: dict[str, Any] = {}
    for k in _HASH_COLUMNS:
        if row.get(k):
            hashes[k] = int(row[k]) if k == "pdq_quality" else row[k]
    return FileResult(
        path=row["path"],
        size=int(row["size"]) if row.get("size") else None,
        mtime_ns=int(row["mtime_ns"]) if row.get("mtime_ns") else None,
        verdict=row.get("verdict") or None,
        matches=tuple(json.loads(row["matches"])) if row.get("matches") else (),
        hashes=hashes,
        notes=tuple(row["notes"].split(" | ")) if row.get("notes") else (),
        skipped=row.get("skipped") or None,
        error_kind=row.get("error_kind") or None,
        error=row.get("error") or None,
    )


class ResultWriter:
    """Writes result lines to a text stream, flushing each one: a kill loses nothing
    already reported."""

    def __init__(self, stream: IO[str], fmt: Format, *, header: bool = True) -> None:
        self.stream = stream
        self.fmt = fmt
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None and header:
            self._csv.writerow(CSV_COLUMNS)
            stream.flush()

    def write(self, r: FileResult) -> None:
        if self._csv is not None:
            self._csv.writerow(to_csv_row(r))
        else:
            self.stream.write(json.dumps(r.to_record(), separators=(", ", ": ")) + "\n")
        self.stream.flush()


def read_results(path: Path, fmt: Format) -> tuple[list[FileResult], int]:
    """Parse a results file for `--resume`: (results, length of its complete part).

    A scan killed in the middle of writing can leave a partial last line; that line is
    not a result (its file is re-checked), and the caller truncates it away. Any other
    unreadable line means this is not a results file of ours: ScanError.
    """
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1  # complete lines only
    text = raw[:end].decode("utf-8", errors="strict")
    out: list[FileResult] = []
    try:
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(text, newline="")))
            if not rows:
                return [], end
            if tuple(rows[0]) != CSV_COLUMNS:
                raise ScanError(f"{path}: not a hashsvc scan CSV (unexpected header)")
            for i, row in enumerate(rows[1:], start=2):
                if len(row) != len(CSV_COLUMNS):
                    raise ScanError(f"{path}: row {i} has {len(row)} fields")
                out.append(from_csv_row(dict(zip(CSV_COLUMNS, row, strict=True))))
        else:
            for line in text.splitlines():
                if line.strip():
                    out.append(FileResult.from_record(json.loads(line)))
    except (ValueError, KeyError, TypeError) as e:
        raise ScanError(f"{path}: not a hashsvc scan results file ({e})") from None
    return out, end


def open_results(path: Path, fmt: Format, *, resume: bool) -> tuple[ResultWriter, list[FileResult]]:
    """Open the results file (mode 0600: it names files that matched abuse lists).

    Without `resume` an existing non-empty file is refused rather than overwritten:
    it may be the only record of an interrupted scan. With it, earlier results are read
    back and a partial last line is cut off before appending.
    """
    previous: list[FileResult] = []
    exists = has_results(path)
    if exists and not resume:
        raise ScanError(f"{path} exists: use --resume to continue that scan, or remove it")
    if exists:
        previous, end = read_results(path, fmt)
        with open(path, "r+b") as f:
            f.truncate(end)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    stream = os.fdopen(fd, "w", encoding="utf-8", newline="")
    empty = os.fstat(fd).st_size == 0  # new, or only a partial header was there
    return ResultWriter(stream, fmt, header=empty), previous


def has_results(path: Path) -> bool:
    """Is there a results file to continue (or to refuse to overwrite) at `path`?"""
    return path.exists() and path.stat().st_size > 0


def file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
