"""`hashsvc lists ...`: create, import, enroll, inspect, export and edit trusted lists.

After any change the saved search index is brought up to date, so the next `match`
starts from a current index instead of replaying the change log.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hashsvc.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    DataDir,
    emit,
    errors_to_exit,
    fail,
    say,
    settings_for,
)
from hashsvc.config import Settings

if TYPE_CHECKING:
    from hashsvc.store import Store

app = typer.Typer(help="Manage trusted hash lists.", no_args_is_help=True)
_SAFE_STEM = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _store(settings: Settings) -> Store:
    from hashsvc.store import Store

    return Store.open(settings.db_path)


def _sync_index(settings: Settings, store: Store) -> None:
    """Catch the saved index up with the store and save it."""
    from hashsvc.index_sync import IndexSet

    IndexSet.open(store, settings.data_dir, settings.index_inline_max_bytes).save()


def _audit(
    store: Store, action: str, detail: dict[str, object], entry_ids: list[int] | None = None
) -> None:
    """The audit row of a list change made here, as the API writes one (same action
    names), with no key (`key_id` null) and `"via": "cli"`: whoever can run these
    commands has the database itself, and the audit log still says what changed."""
    from hashsvc.audit import AuditEvent, AuditLog

    event = AuditEvent(
        action, key_id=None, entry_ids=entry_ids or [], detail={**detail, "via": "cli"}
    )
    AuditLog(store).record_now([event])


def _audit_added(store: Store, name: str, added: int, batch_id: int | None) -> None:
    if added:
        _audit(store, "entries.add", {"list": name, "added": added, "batch_id": batch_id})


@app.command("create")
def create(
    name: str,
    action: Annotated[str, typer.Option(help="block or report")],
    pdq_threshold: Annotated[
        int | None, typer.Option(help="Max PDQ distance (default 31).")
    ] = None,
    phash_threshold: Annotated[
        int | None, typer.Option(help="Max pHash distance (default 6).")
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            metavar="NAME=BOOL",
            help="A per-list switch, NAME=true|false (repeatable): dihedral, trim_borders,"
            " crops, corroborate. Left out: the service's setting.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a list."""
    settings = settings_for(data_dir)
    with errors_to_exit():
        options = _parse_options(option or [])
        with _store(settings) as store:
            lst = store.create_list(
                name, action, pdq_threshold, phash_threshold, description, options
            )
            _audit(store, "list.create", {"list": lst.name})
            emit(store.list_summary(lst))


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_options(pairs: list[str]) -> dict[str, bool]:
    """`["crops=false"]` -> `{"crops": False}`; the store then refuses unknown names."""
    from hashsvc.errors import InvalidValue

    out: dict[str, bool] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or value.strip().lower() not in _BOOL_WORDS:
            raise InvalidValue(f"--option {pair!r}: expected NAME=true or NAME=false")
        out[name.strip()] = _BOOL_WORDS[value.strip().lower()]
    return out


@app.command("import")
def import_(
    name: str,
    file: Path,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, jsonl, txt or vpdq (one video per file)")
    ] = None,
    signal_type: Annotated[str | None, typer.Option(help="For txt: the hashes' type.")] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Import the valid lines and report the rest.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Import a list file. Every line is validated first; any bad line imports nothing
    (unless --skip-invalid). Re-importing a file adds nothing twice.

    vPDQ files (one video each, `frame,quality,pdq_hex,timestamp` lines, as the vpdq
    package writes them) are recognised by content, or say --format vpdq; FILE may then
    be a folder of them."""
    from hashsvc.hashlist import parse_list
    from hashsvc.signals import SignalType

    settings = settings_for(data_dir)
    if _is_vpdq_import(file, fmt, signal_type):
        _import_vpdq(name, file, settings)
        return
    with errors_to_exit():
        try:
            data = file.read_bytes()
        except OSError as e:
            fail(f"{file}: cannot read ({e.strerror or e})")
        sig = SignalType.parse(signal_type) if signal_type else None
        parsed = parse_list(data, fmt, signal_type=sig, source_name=str(file))
        if not skip_invalid:
            parsed.raise_if_invalid()
        for p in parsed.problems:
            say(f"{file}: {p} (skipped)")
        with _store(settings) as store:
            result = store.import_entries(
                name, parsed.entries, source_name=file.name, file_sha256=parsed.sha256
            )
            _audit_added(store, name, result.added, result.batch_id)
            _sync_index(settings, store)
    emit(
        {
            "list": name,
            "added": result.added,
            "skipped_duplicates": result.skipped_duplicates,
            "invalid_skipped": len(parsed.problems),
            "batch_id": result.batch_id,
        }
    )


def _is_vpdq_import(file: Path, fmt: str | None, signal_type: str | None) -> bool:
    if fmt is not None:
        return fmt.lower() == "vpdq"
    if signal_type is not None:
        return False
    if file.is_dir():
        return True
    from hashsvc.vpdq import looks_like_vpdq

    try:
        with file.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return looks_like_vpdq(head.rsplit("\n", 1)[0] if len(head) == 4096 else head)


def _import_vpdq(name: str, file: Path, settings: Settings) -> None:
    """Each vPDQ file is one list video; all files are validated, then added in one
    transaction (any bad file: nothing is added)."""
    from hashsvc import enrollment, vpdq
    from hashsvc.errors import HashListError

    with errors_to_exit():
        files = sorted(p for p in file.iterdir() if p.is_file()) if file.is_dir() else [file]
        entries, frames, problems = [], {}, []
        digest = hashlib.sha256()
        for path in files:
            try:
                data = path.read_bytes()
                parsed = vpdq.parse(data.decode("utf-8"), source=str(path))
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"{path}: cannot read ({e})")
                continue
            except HashListError as e:
                problems.append(str(e))
                continue
            media = enrollment.vpdq_entry(parsed)
            entries += media.entries
            frames.update(media.frames)
            digest.update(hashlib.sha256(data).digest())
        if problems:
            for p in problems:
                say(p)
            fail(f"{len(problems)} invalid vPDQ file(s): nothing imported")
        with _store(settings) as store:
            result = store.import_entries(
                name, entries, source_name=file.name, file_sha256=digest.hexdigest(),
                frames=frames,
            )  # fmt: skip
            _audit_added(store, name, result.added, result.batch_id)
            _sync_index(settings, store)
    emit(
        {
            "list": name,
            "videos": len(files),
            "added": result.added,
            "skipped_duplicates": result.skipped_duplicates,
            "batch_id": result.batch_id,
        }
    )


@app.command("enroll")
def enroll(
    name: str,
    paths: Annotated[list[Path], typer.Argument(help="Media files or directories.")],
    category: Annotated[str, typer.Option()] = "",
    data_dir: DataDir = None,
) -> None:
    """Hash media files (reference PDQ, pHash, MD5, SHA-256; vPDQ for videos) into a list."""
    from hashsvc import enrollment
    from hashsvc.media import read_bytes
    from hashsvc.walk import WalkError, iter_files

    settings = settings_for(data_dir)
    walk_errors: list[str] = []

    def items() -> Iterator[tuple[str, bytes]]:
        for item in iter_files(paths):
            if isinstance(item, WalkError):
                walk_errors.append(f"{item.path}: {item.message}")
                continue
            try:
                yield str(item), read_bytes(item)
            except Exception as e:  # unreadable file: report, keep going
                walk_errors.append(str(e))

    with errors_to_exit(), _store(settings) as store:
        out = enrollment.enroll(
            store, name, items(), category=category, default_crops=settings.enroll_crops,
            max_pixels=settings.max_pixels,
            video_options=enrollment.VideoOptions(
                settings.vpdq_seconds_per_hash, settings.video_limits
            ),
        )  # fmt: skip
        if out.result is not None:
            _audit_added(store, name, out.result.added, out.result.batch_id)
        _sync_index(settings, store)
    for message in walk_errors:
        say(message)
    for p in out.problems:
        say(f"{p.name}: {p.message}")
    emit(
        {
            "list": name,
            "files": out.files,
            "enrolled_files": out.files - len(out.problems),
            "added": out.result.added if out.result else 0,
            "skipped_duplicates": out.result.skipped_duplicates if out.result else 0,
            "errors": len(out.problems) + len(walk_errors),
        }
    )
    raise typer.Exit(EXIT_ERROR if out.problems or walk_errors else EXIT_OK)


@app.command("ls")
def ls(data_dir: DataDir = None) -> None:
    """List the lists, one JSON line each."""
    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        for lst in store.lists():
            emit(store.list_summary(lst))


@app.command("show")
def show(name: str, data_dir: DataDir = None) -> None:
    """A list's settings, entry counts and import batches."""
    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        lst = store.get_list(name)
        record = store.list_summary(lst)
        record["batches"] = [
            {
                "id": b.id,
                "source": b.source_name,
                "sha256": b.file_sha256,
                "origin": b.origin,
                "added": b.added,
                "skipped_duplicates": b.skipped_duplicates,
                "at": _iso(b.created_at),
            }
            for b in store.import_batches(name)
        ]
        emit(record)


@app.command("export")
def export(
    name: str,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or vpdq")] = "csv",
    out: Annotated[
        Path | None, typer.Option(help="--format vpdq: the folder for one file per video.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Write a list's enabled entries to stdout in a format `lists import` reads.

    Videos (vpdq entries) are many lines each: `--format vpdq --out DIR` writes one
    vPDQ file per video (named by its external id); csv/jsonl leave them out and say so."""
    from hashsvc.hashlist import format_export
    from hashsvc.signals import SignalType

    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        store.get_list(name)
        rows = list(store.entries(name, enabled_only=True))
        videos = [r for r in rows if r.hash.signal is SignalType.VPDQ]
        if fmt == "vpdq":
            if out is None:
                fail("--format vpdq needs --out DIR (one file per video)")
            out.mkdir(parents=True, exist_ok=True)
            for r in videos:
                frames = store.video_frames(r.id)
                stem = r.external_id if _SAFE_STEM.fullmatch(r.external_id) else str(r.id)
                (out / f"{stem}.txt").write_text("".join(f.line() + "\n" for f in frames))
            emit({"list": name, "videos": len(videos), "out": str(out)})
            return
        if videos:
            say(f"{len(videos)} video(s) left out: use --format vpdq --out DIR for them")
        lines = [r for r in rows if r.hash.signal is not SignalType.VPDQ]
        sys.stdout.buffer.write(format_export(lines, fmt))
        sys.stdout.flush()


@app.command("disable")
def disable(
    entry_id: int,
    hours: Annotated[
        float | None, typer.Option(help="Re-enable by itself after this many hours.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Stop an entry from matching (a false-positive switch, effective at once)."""
    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        until = time.time() + hours * 3600 if hours else None
        entry = store.set_enabled(entry_id, False, until=until)
        _audit(store, "entry.disable", {"list": entry.list_name}, [entry_id])
        _sync_index(settings, store)
        emit({"entry_id": entry.id, "list": entry.list_name, "enabled": False,
              "disabled_until": _iso(until) if until else None})  # fmt: skip


@app.command("enable")
def enable(entry_id: int, data_dir: DataDir = None) -> None:
    """Let a disabled entry match again."""
    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        entry = store.set_enabled(entry_id, True)
        _audit(store, "entry.enable", {"list": entry.list_name}, [entry_id])
        _sync_index(settings, store)
        emit({"entry_id": entry.id, "list": entry.list_name, "enabled": True})


@app.command("remove")
def remove(entry_id: int, data_dir: DataDir = None) -> None:
    """Delete an entry for good."""
    settings = settings_for(data_dir)
    with errors_to_exit(), _store(settings) as store:
        entry = store.entry(entry_id)
        store.remove_entry(entry_id)
        _audit(store, "entry.remove", {"list": entry.list_name}, [entry_id])
        _sync_index(settings, store)
        emit({"entry_id": entry_id, "removed": True})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
