"""The embedded store (SQLite): trusted lists, their entries, import batches, a change log.

Crash safety comes from SQLite itself: WAL journal, ``synchronous=FULL``, and every
write in one explicit transaction, so a killed process leaves either all of a write or
none of it. Files are private (0600), since the entries are hashes of abusive media.

Concurrency: a `Store` owns one connection. Threads may share a Store (a lock serialises
them), but for parallel work each thread or worker process opens its own Store on the
same file; WAL lets readers run beside the single writer. Never use a Store across a
``fork``: open it in the child.

Index processes stay fresh without rebuilding: every entry change appends a row to
``changes`` in the same transaction, so a process can poll `Store.version` and apply
`Store.changes_since`. The recommended consumer is idempotent: for each changed entry id,
drop it from the index, then re-add it if `Store.live_codes` (with ``entry_ids``) still
returns codes for it. Reading `version()` *before* `live_codes()` when building makes
any change that races the build get replayed harmlessly.

A timed disable (`set_enabled(..., until=t)`) ends by the clock, not by a write, so no
change row marks it: the entry counts as disabled before ``t`` everywhere in this module,
and shows up in an index at its next refresh; a refresher that polls
`Store.disables_expired` gets it within one poll.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from hashsvc.errors import Conflict, InvalidHash, InvalidValue, NotFound, StoreError
from hashsvc.hashlist import MAX_FIELD_CHARS, ListEntry
from hashsvc.signals import Hash, SignalType
from hashsvc.vpdq import MAX_FRAMES as MAX_VIDEO_FRAMES
from hashsvc.vpdq import MIN_QUALITY as VPDQ_MIN_QUALITY
from hashsvc.vpdq import Frame

APPLICATION_ID = 0x68737663  # "hsvc": tells our databases from other SQLite files

# Append-only: a released migration is never edited, since databases in the field
# already ran it. Each runs in one transaction together with its user_version bump.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE lists (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE COLLATE NOCASE,
        action          TEXT NOT NULL CHECK (action IN ('block', 'report')),
        pdq_threshold   INTEGER NOT NULL DEFAULT 31 CHECK (pdq_threshold BETWEEN 0 AND 256),
        phash_threshold INTEGER NOT NULL DEFAULT 6 CHECK (phash_threshold BETWEEN 0 AND 64),
        description     TEXT NOT NULL DEFAULT '',
        options         TEXT NOT NULL DEFAULT '{}',
        created_at      REAL NOT NULL
    );
    CREATE TABLE import_batches (
        id                 INTEGER PRIMARY KEY,
        list_id            INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        source_name        TEXT NOT NULL,
        file_sha256        TEXT NOT NULL,
        origin             TEXT NOT NULL CHECK (origin IN ('import', 'enroll')),
        created_at         REAL NOT NULL,
        added              INTEGER NOT NULL,
        skipped_duplicates INTEGER NOT NULL
    );
    CREATE INDEX import_batches_by_list ON import_batches(list_id);
    CREATE TABLE entries (
        id             INTEGER PRIMARY KEY,
        list_id        INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        signal_type    TEXT NOT NULL,
        hash           BLOB NOT NULL,
        external_id    TEXT NOT NULL DEFAULT '',
        category       TEXT NOT NULL DEFAULT '',
        source         TEXT NOT NULL DEFAULT '',
        note           TEXT NOT NULL DEFAULT '',
        added_at       REAL NOT NULL,
        enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        disabled_until REAL,
        batch_id       INTEGER REFERENCES import_batches(id) ON DELETE SET NULL,
        origin         TEXT NOT NULL DEFAULT 'import' CHECK (origin IN ('import', 'enroll')),
        -- hash first: the one unique index also serves exact lookups across lists;
        -- a second (signal_type, hash) index made 300k-entry imports 1.6x slower
        UNIQUE (signal_type, hash, list_id),
        CHECK (typeof(hash) = 'blob' AND length(hash) = CASE signal_type
            WHEN 'pdq' THEN 32 WHEN 'phash' THEN 8 WHEN 'md5' THEN 16 WHEN 'sha256' THEN 32
            END)
    );
    CREATE INDEX entries_by_list ON entries(list_id);
    CREATE INDEX entries_by_batch ON entries(batch_id);
    CREATE INDEX entries_disabled_until ON entries(disabled_until)
        WHERE disabled_until IS NOT NULL;
    CREATE TABLE entry_variants (
        id          INTEGER PRIMARY KEY,
        entry_id    INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
        signal_type TEXT NOT NULL,
        hash        BLOB NOT NULL,
        kind        TEXT NOT NULL,
        UNIQUE (entry_id, signal_type, hash),
        CHECK (typeof(hash) = 'blob' AND length(hash) = CASE signal_type
            WHEN 'pdq' THEN 32 WHEN 'phash' THEN 8 WHEN 'md5' THEN 16 WHEN 'sha256' THEN 32
            END)
    );
    CREATE INDEX entry_variants_by_hash ON entry_variants(signal_type, hash);
    -- no foreign key on entry_id: a 'remove' row must outlive its entry
    CREATE TABLE changes (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id INTEGER,
        list_id  INTEGER NOT NULL,
        op       TEXT NOT NULL CHECK (op IN ('add', 'remove', 'disable', 'enable', 'list')),
        at       REAL NOT NULL
    );
    PRAGMA application_id = 1752397411;
    """,
    # 2: the API's records (hashsvc.keys, hashsvc.reports, hashsvc.audit). No foreign
    # keys to entries or keys: a report or an audit row must outlive what it names.
    """
    CREATE TABLE api_keys (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
        prefix     TEXT NOT NULL UNIQUE,
        key_hash   BLOB NOT NULL CHECK (typeof(key_hash) = 'blob' AND length(key_hash) = 32),
        scopes     TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE reports (
        id              INTEGER PRIMARY KEY,
        created_at      REAL NOT NULL,
        verdict         TEXT NOT NULL CHECK (verdict IN ('block', 'report')),
        status          TEXT NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'confirmed', 'false_positive')),
        source          TEXT NOT NULL CHECK (source IN ('media', 'hashes')),
        key_id          INTEGER,
        request_id      TEXT NOT NULL DEFAULT '',
        hashes          TEXT NOT NULL,
        matches         TEXT NOT NULL,
        resolved_at     REAL,
        resolved_by     INTEGER,
        resolution_note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX reports_by_time ON reports(created_at);
    CREATE INDEX reports_by_status ON reports(status, id);
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY,
        at         REAL NOT NULL,
        key_id     INTEGER,
        request_id TEXT NOT NULL DEFAULT '',
        action     TEXT NOT NULL,
        verdict    TEXT CHECK (verdict IS NULL OR verdict IN ('block', 'report', 'allow')),
        count      INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
        entry_ids  TEXT NOT NULL DEFAULT '[]',
        report_id  INTEGER,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_by_time ON audit(at);
    """,
    # 3: videos. A `vpdq` entry's hash is the SHA-256 of its frame lines (its identity,
    # so a re-import adds nothing); its frames, in file order, live here. (The entries
    # CHECK has no length for 'vpdq': the Hash value object enforces 32 bytes.)
    """
    CREATE TABLE video_frames (
        entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
        seq      INTEGER NOT NULL,
        frame    INTEGER NOT NULL CHECK (frame >= 0),
        quality  INTEGER NOT NULL CHECK (quality BETWEEN 0 AND 100),
        hash     BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32),
        ts       REAL NOT NULL CHECK (ts >= 0),
        PRIMARY KEY (entry_id, seq)
    ) WITHOUT ROWID;
    """,
    # 4: an item's entries (PDQ, pHash... of one media file) share an external id; the
    # matcher's corroboration looks a pHash hit's PDQ sibling up by it. Partial: bare
    # hash lists without ids pay nothing on import.
    """
    CREATE INDEX entries_by_external ON entries(list_id, external_id)
        WHERE external_id <> '';
    """,
    # 5: at most MAX_VARIANTS (63) variants per entry and signal. Before, enrolling
    # near-copies of one image (same PDQ, other crops) piled up more, and one entry past
    # 64 codes made every index refresh fail. Keep each entry's first 63 and log an
    # 'add' so every worker reloads those entries' codes.
    """
    CREATE TEMP TABLE over_cap AS
        SELECT id, entry_id FROM (
            SELECT id, entry_id, row_number() OVER (
                PARTITION BY entry_id, signal_type ORDER BY id) AS n
            FROM entry_variants)
        WHERE n > 63;
    INSERT INTO changes (entry_id, list_id, op, at)
        SELECT DISTINCT o.entry_id, e.list_id, 'add', (julianday('now') - 2440587.5) * 86400.0
        FROM over_cap o JOIN entries e ON e.id = o.entry_id;
    DELETE FROM entry_variants WHERE id IN (SELECT id FROM over_cap);
    DROP TABLE over_cap;
    """,
    # 6: which lists hold items with both a PDQ and a pHash entry (`corroborable_lists`),
    # answered by two index seeks per list instead of a walk over the list's entries.
    # external_id is its last column so that `pdq_siblings` finds a sibling on all three
    # columns: with (signal_type, list_id) alone the planner chose it there and read
    # every PDQ of the list per pHash hit (seconds per upload on 1M enrolled items). It
    # replaces migration 4's (list_id, external_id): no query reads that one any more,
    # and each import of entries with ids would keep updating both
    """
    CREATE INDEX IF NOT EXISTS entries_external_by_signal
        ON entries(signal_type, list_id, external_id) WHERE external_id <> '';
    DROP INDEX IF EXISTS entries_by_external;
    """,
]

LIST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Per-list switches the matcher reads; a key left out means "use the service default"
# (Settings). Unknown keys are refused so a typo cannot silently do nothing.
KNOWN_OPTIONS: dict[str, type] = {
    "dihedral": bool, "trim_borders": bool, "crops": bool, "corroborate": bool,
}  # fmt: skip
MAX_KIND_CHARS = 64
#: Variants one entry may hold per signal type. The search index gives each entry 64
#: slots per signal (`index_sync.KEY_SLOTS`: slot 0 is the entry's own hash); one code
#: more and every refresh of every worker's index failed, and the list stopped updating.
MAX_VARIANTS = 63
_PAGE = 1000
_CHUNK = 65536
_UMASK_LOCK = threading.Lock()
_LIVE = "(e.enabled = 1 OR e.disabled_until <= :now)"  # NULL until: never by itself
#: `Store.pdq_siblings`: the live PDQ entries sharing a list and an external id with the
#: given entries (a JSON array of ids in :ids). Named so a test can check its query plan.
#: CROSS JOIN fixes the order (the given ids first, then a seek per sibling): left to
#: itself the planner scanned every PDQ entry, 2.5 s at 1M; `e.external_id <> ''` lets
#: it use the partial index `entries_external_by_signal` (migration 6)
SIBLINGS_SQL = (
    "SELECT p.id, e.id, e.hash FROM entries p CROSS JOIN entries e"
    " ON e.list_id = p.list_id AND e.external_id = p.external_id"
    " WHERE p.id IN (SELECT value FROM json_each(:ids)) AND p.external_id <> ''"
    f" AND e.external_id <> '' AND e.signal_type = 'pdq' AND e.id <> p.id AND {_LIVE}"
)


class Action(StrEnum):
    """What a match against a list leads to."""

    BLOCK = "block"
    REPORT = "report"


@dataclass(frozen=True)
class HashList:
    """One trusted list and its matching settings."""

    id: int
    name: str
    action: Action
    pdq_threshold: int
    phash_threshold: int
    description: str
    options: dict[str, Any]
    created_at: float

    def threshold(self, signal: SignalType) -> int:
        return _threshold(signal, self.pdq_threshold, self.phash_threshold)


@dataclass(frozen=True)
class Entry:
    """One stored entry (`hashlist.ExportRow`-compatible, so it can be exported)."""

    id: int
    list_id: int
    list_name: str
    hash: Hash
    external_id: str
    category: str
    source: str
    note: str
    added_at: float
    enabled: bool
    disabled_until: float | None
    batch_id: int | None
    origin: str

    @property
    def signal(self) -> SignalType:
        return self.hash.signal

    def live_at(self, now: float) -> bool:
        """Whether matching uses this entry at `now`; a timed disable ends by itself."""
        return self.enabled or (self.disabled_until is not None and self.disabled_until <= now)


@dataclass(frozen=True)
class EntryMeta:
    """What the policy needs about a matched entry, without its hash.

    `category` and `external_id` are list metadata: adapters show them only to callers
    with the admin scope (DESIGN.md, privacy rules).
    """

    entry_id: int
    list_id: int
    list_name: str
    action: Action
    signal: SignalType
    pdq_threshold: int
    phash_threshold: int
    category: str
    external_id: str
    options: dict[str, Any]
    live: bool

    def threshold(self, signal: SignalType) -> int:
        return _threshold(signal, self.pdq_threshold, self.phash_threshold)


@dataclass(frozen=True)
class ImportResult:
    added: int
    skipped_duplicates: int
    batch_id: int


@dataclass(frozen=True)
class ImportBatch:
    id: int
    list_name: str
    source_name: str
    file_sha256: str
    origin: str
    created_at: float
    added: int
    skipped_duplicates: int


@dataclass(frozen=True)
class Change:
    """One row of the change log. `entry_id` is None for list-level changes (op 'list':
    a list was created, updated or deleted; re-read `lists()`)."""

    seq: int
    op: str
    entry_id: int | None
    list_id: int
    at: float


class Store:
    """The SQLite store. Build it with `Store.open`; close it (or use ``with``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._clock = clock
        self.path = path

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        busy_timeout: float = 5.0,
        cache_mib: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Open (creating and migrating as needed) the database at `path`.

        `busy_timeout` is how long a write waits for another writer before failing.
        `cache_mib` caps this connection's page cache; SQLite's 2 MiB default makes a
        big import thrash the hash index (measured 1.4x slower at 300k entries).
        `clock` exists so tests can move time for timed disables.
        """
        path = Path(path)
        # umask is process-wide: the lock keeps two concurrent opens from restoring each
        # other's temporary value and leaving the process at 0o077 for good (a file
        # another thread creates meanwhile is only made more private)
        with _UMASK_LOCK:
            old_umask = os.umask(0o077)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = _connect(path, busy_timeout, cache_mib)
            finally:
                os.umask(old_umask)
        try:
            # the files may predate us (or a looser umask); WAL/SHM exist now that the
            # connection has read the database in WAL mode
            for suffix in ("", "-wal", "-shm"):
                _make_private(Path(f"{path}{suffix}"))
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lists ------------------------------------------------------------------------

    def create_list(
        self,
        name: str,
        action: Action | str,
        pdq_threshold: int | None = None,
        phash_threshold: int | None = None,
        description: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> HashList:
        """Create a list. Names are unique regardless of case (`Conflict`)."""
        _check_name(name)
        act = _check_action(action)
        pdq = _check_threshold(SignalType.PDQ, pdq_threshold)
        phash = _check_threshold(SignalType.PHASH, phash_threshold)
        _check_text("description", description)
        opts = _check_options(options or {})
        with self._write() as conn:
            if _find_list(conn, name) is not None:
                raise Conflict(f"a list named {name!r} already exists")
            cur = conn.execute(
                "INSERT INTO lists (name, action, pdq_threshold, phash_threshold, description,"
                " options, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, act.value, pdq, phash, description, _dump(opts), self._clock()),
            )
            list_id = _rowid(cur)
            self._log(conn, "list", None, list_id)
            return self._list_by_id(conn, list_id)

    def get_list(self, name: str) -> HashList:
        with self._read() as conn:
            found = _find_list(conn, name)
            if found is None:
                raise NotFound(f"no list named {name!r}")
            return found

    def list_summary(self, lst: HashList) -> dict[str, Any]:
        """A list's settings and entry counts as JSON (the CLI and the API print this)."""
        return {
            "name": lst.name,
            "action": lst.action.value,
            "pdq_threshold": lst.pdq_threshold,
            "phash_threshold": lst.phash_threshold,
            "description": lst.description,
            "options": lst.options,
            "entries": self.count_entries(lst.name),
            "enabled_entries": self.count_entries(lst.name, enabled_only=True),
            "created_at": iso(lst.created_at),
        }

    def lists(self) -> list[HashList]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_LIST_COLS} FROM lists ORDER BY name").fetchall()
            return [_hash_list(r) for r in rows]

    def update_list(
        self,
        name: str,
        *,
        action: Action | str | None = None,
        pdq_threshold: int | None = None,
        phash_threshold: int | None = None,
        description: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> HashList:
        """Change the given settings (None leaves one as it is; `options` is replaced
        whole, so the result is exactly what was asked for)."""
        changes: dict[str, object] = {}
        if action is not None:
            changes["action"] = _check_action(action).value
        if pdq_threshold is not None:
            changes["pdq_threshold"] = _check_threshold(SignalType.PDQ, pdq_threshold)
        if phash_threshold is not None:
            changes["phash_threshold"] = _check_threshold(SignalType.PHASH, phash_threshold)
        if description is not None:
            changes["description"] = _check_text("description", description)
        if options is not None:
            changes["options"] = _dump(_check_options(options))
        with self._write() as conn:
            current = _require_list(conn, name)
            if changes:
                # column names come from the fixed keys above, never from the caller
                assignments = ", ".join(f"{column} = ?" for column in changes)
                conn.execute(
                    f"UPDATE lists SET {assignments} WHERE id = ?", (*changes.values(), current.id)
                )
                self._log(conn, "list", None, current.id)
            return self._list_by_id(conn, current.id)

    def delete_list(self, name: str) -> int:
        """Delete a list with its entries, variants and batches; returns the entry count."""
        with self._write() as conn:
            lst = _require_list(conn, name)
            cur = conn.execute(
                "INSERT INTO changes (entry_id, list_id, op, at)"
                " SELECT id, list_id, 'remove', ? FROM entries WHERE list_id = ? ORDER BY id",
                (self._clock(), lst.id),
            )
            removed = cur.rowcount
            conn.execute("DELETE FROM lists WHERE id = ?", (lst.id,))
            self._log(conn, "list", None, lst.id)
            return removed

    # -- entries: writes --------------------------------------------------------------

    def import_entries(
        self,
        list_name: str,
        entries: Iterable[ListEntry],
        *,
        source_name: str,
        file_sha256: str,
        origin: str = "import",
        variants: Mapping[Hash, Sequence[tuple[Hash, str]]] | None = None,
        frames: Mapping[Hash, Sequence[Frame]] | None = None,
    ) -> ImportResult:
        """Add entries to a list in one transaction: all of them or, on any failure, none.

        `variants` maps an entry's hash to extra hashes that match as that entry (crops
        of enrolled media); they are written in the same transaction, so an enrollment is
        never left without its variants. `frames` does the same for `vpdq` entries: each
        must come with its frames, written in the same transaction.

        An entry whose (signal type, hash) the list already holds is skipped and counted,
        so re-importing a file adds nothing twice; the existing entry keeps its metadata
        and its enabled state. A batch row records every import, even one that added
        nothing. Validate the file first (`ParsedList.raise_if_invalid`).

        `entries` is consumed inside the write transaction, so a slow generator keeps
        other writers waiting (up to their busy timeout): pass a list unless memory says
        otherwise.
        """
        if origin not in ("import", "enroll"):
            raise InvalidValue(f"origin must be 'import' or 'enroll', got {origin!r}")
        _check_text("source_name", source_name)
        if file_sha256 and not re.fullmatch(r"[0-9a-f]{64}", file_sha256):
            raise InvalidValue("file_sha256 must be 64 lower-case hex digits (or empty)")
        now = self._clock()
        with self._write() as conn:
            lst = _require_list(conn, list_name)
            batch_id = _rowid(
                conn.execute(
                    "INSERT INTO import_batches (list_id, source_name, file_sha256, origin,"
                    " created_at, added, skipped_duplicates) VALUES (?, ?, ?, ?, ?, 0, 0)",
                    (lst.id, source_name, file_sha256, origin, now),
                )
            )
            offered = 0

            def rows() -> Iterator[tuple[object, ...]]:
                nonlocal offered
                for e in entries:
                    offered += 1
                    h = e.hash
                    if h.signal is SignalType.VPDQ and h not in (frames or {}):
                        raise InvalidValue("a vpdq entry needs its frames (vPDQ file)")
                    yield (lst.id, h.signal.value, h.value, e.external_id, e.category,
                           e.source, e.note, now, batch_id, origin)  # fmt: skip

            # ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: OR IGNORE would also
            # swallow CHECK failures and count a corrupt row as a duplicate
            conn.executemany(
                "INSERT INTO entries (list_id, signal_type, hash, external_id, category,"
                " source, note, added_at, batch_id, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (signal_type, hash, list_id) DO NOTHING",
                rows(),
            )
            for owner, extra in (variants or {}).items():
                row = conn.execute(
                    "SELECT id FROM entries WHERE list_id = ? AND signal_type = ? AND hash = ?",
                    (lst.id, owner.signal.value, owner.value),
                ).fetchone()
                if row is None:
                    raise InvalidValue(f"variants given for {owner!r}, which is not imported")
                if conn.execute(
                    "SELECT 1 FROM entry_variants WHERE entry_id = ? LIMIT 1", (row[0],)
                ).fetchone():
                    # an entry's variants come from the first media enrolled for it: each
                    # near-copy enrolled later (same PDQ, other crops) would add its own
                    continue
                _insert_variants(conn, row[0], extra)
            for owner, video in (frames or {}).items():
                row = conn.execute(
                    "SELECT id, batch_id FROM entries"
                    " WHERE list_id = ? AND signal_type = 'vpdq' AND hash = ?",
                    (lst.id, owner.value),
                ).fetchone()
                if row is None:
                    raise InvalidValue(f"frames given for {owner!r}, which is not imported")
                if row[1] != batch_id:
                    continue  # already in the list: its frames are there
                if len(video) > MAX_VIDEO_FRAMES:
                    raise InvalidValue(f"a video may have at most {MAX_VIDEO_FRAMES} frames")
                conn.executemany(
                    "INSERT INTO video_frames (entry_id, seq, frame, quality, hash, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(row[0], i, f.number, f.quality, f.pdq.value, f.timestamp)
                     for i, f in enumerate(video)],
                )  # fmt: skip
            added = conn.execute(
                "SELECT count(*) FROM entries WHERE batch_id = ?", (batch_id,)
            ).fetchone()[0]
            conn.execute(
                "UPDATE import_batches SET added = ?, skipped_duplicates = ? WHERE id = ?",
                (added, offered - added, batch_id),
            )
            conn.execute(
                "INSERT INTO changes (entry_id, list_id, op, at)"
                " SELECT id, list_id, 'add', ? FROM entries WHERE batch_id = ? ORDER BY id",
                (now, batch_id),
            )
            return ImportResult(added=added, skipped_duplicates=offered - added, batch_id=batch_id)

    def add_variants(self, entry_id: int, variants: Iterable[tuple[Hash, str]]) -> int:
        """Attach extra hashes (crops, rotations...) that match as `entry_id`; returns how
        many were new. `kind` says what the variant is, e.g. 'crop' or 'rot90'."""
        with self._write() as conn:
            _require_entry(conn, entry_id)
            added = _insert_variants(conn, entry_id, list(variants))
            if added:
                # 'add' on a present entry means "its codes changed: reload it"
                self._log_entry(conn, "add", entry_id)
            return added

    def set_enabled(self, entry_id: int, enabled: bool, until: float | None = None) -> Entry:
        """Enable or disable an entry. A disable with `until` (a Unix time in the future)
        lapses by itself at that time; one without lasts until re-enabled.

        Disable, rather than remove, an entry that must stay out across re-imports of
        its provider's list: a removed entry comes back with the next import.
        """
        if until is not None:
            if enabled:
                raise InvalidValue("'until' only applies to disabling")
            if not until > self._clock():  # also refuses NaN
                raise InvalidValue("'until' must be in the future")
        with self._write() as conn:
            _require_entry(conn, entry_id)
            conn.execute(
                "UPDATE entries SET enabled = ?, disabled_until = ? WHERE id = ?",
                (int(enabled), until, entry_id),
            )
            self._log_entry(conn, "enable" if enabled else "disable", entry_id)
            return _require_entry(conn, entry_id)

    def remove_entry(self, entry_id: int) -> None:
        """Delete an entry and its variants for good (see `set_enabled` for the
        alternative that survives re-imports)."""
        with self._write() as conn:
            _require_entry(conn, entry_id)
            self._log_entry(conn, "remove", entry_id)
            conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    # -- entries: reads ---------------------------------------------------------------

    def entry(self, entry_id: int) -> Entry:
        with self._read() as conn:
            return _require_entry(conn, entry_id)

    def entries(
        self,
        list_name: str | None = None,
        signal_type: SignalType | None = None,
        *,
        enabled_only: bool = False,
        after_id: int = 0,
        limit: int | None = None,
    ) -> Iterator[Entry]:
        """Entries in id order, fetched a page at a time so no statement (and no read
        snapshot) stays open while the caller works; `after_id` resumes a listing.
        `enabled_only` means live now (a lapsed timed disable counts as enabled).
        An unknown `list_name` raises `NotFound` here, not at the first iteration."""
        where, params = self._entry_filter(list_name, signal_type, enabled_only)
        return self._entry_pages(where, params, after_id, limit)

    def _entry_pages(
        self, where: str, params: dict[str, object], after_id: int, limit: int | None
    ) -> Iterator[Entry]:
        remaining = limit
        last = after_id
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            with self._read() as conn:
                rows = conn.execute(
                    f"SELECT {_ENTRY_COLS} FROM entries e JOIN lists l ON l.id = e.list_id"
                    f" WHERE e.id > :after{where} ORDER BY e.id LIMIT :page",
                    {**params, "after": last, "page": page, "now": self._clock()},
                ).fetchall()
            for row in rows:
                yield _entry(row)
            if len(rows) < page:
                return
            last = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def count_entries(
        self,
        list_name: str | None = None,
        signal_type: SignalType | None = None,
        *,
        enabled_only: bool = False,
    ) -> int:
        where, params = self._entry_filter(list_name, signal_type, enabled_only)
        with self._read() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM entries e WHERE 1{where}",
                {**params, "now": self._clock()},
            ).fetchone()
            return int(row[0])

    def import_batches(self, list_name: str) -> list[ImportBatch]:
        with self._read() as conn:
            lst = _require_list(conn, list_name)
            rows = conn.execute(
                "SELECT id, source_name, file_sha256, origin, created_at, added,"
                " skipped_duplicates FROM import_batches WHERE list_id = ? ORDER BY id",
                (lst.id,),
            ).fetchall()
            return [ImportBatch(r[0], lst.name, *r[1:]) for r in rows]

    # -- matching ---------------------------------------------------------------------

    def live_codes(
        self, signal_type: SignalType, entry_ids: Iterable[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), codes uint8 (n, bits//8)) of every live entry of one signal
        type, variants included (a variant row carries its entry's id, so an id can
        repeat). This feeds the search index; `entry_ids` restricts it to those entries
        (for applying changes). Rows come in chunks so 1M entries never sit in memory
        as Python tuples all at once. For `vpdq` these are frame codes
        (`live_frame_codes`)."""
        if signal_type is SignalType.VPDQ:
            return self.live_frame_codes(entry_ids)
        width = signal_type.bits // 8
        restrict = ""
        params: dict[str, object] = {"sig": signal_type.value, "now": self._clock()}
        if entry_ids is not None:
            restrict = " AND e.id IN (SELECT value FROM json_each(:ids))"
            params["ids"] = _ids_json(entry_ids)
        # NOT INDEXED: one sequential table scan beats a million index-then-row hops
        # (rowid lookups for `entry_ids` stay allowed)
        sql = (
            "SELECT e.id, e.hash FROM entries e NOT INDEXED"
            f" WHERE e.signal_type = :sig AND {_LIVE}{restrict}"
            " UNION ALL"
            " SELECT v.entry_id, v.hash FROM entry_variants v JOIN entries e ON e.id = v.entry_id"
            f" WHERE v.signal_type = :sig AND {_LIVE}{restrict}"
        )
        id_parts: list[np.ndarray] = []
        code_parts: list[np.ndarray] = []
        with self._read() as conn:
            cur = conn.execute(sql, params)
            try:
                while rows := cur.fetchmany(_CHUNK):
                    # fromiter/join over the rows: ~7x faster than zip(*rows) + np.array
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    id_parts.append(ids)
                    code_parts.append(np.frombuffer(b"".join([r[1] for r in rows]), np.uint8))
            finally:
                cur.close()
        if not id_parts:
            return np.empty(0, dtype=np.int64), np.empty((0, width), dtype=np.uint8)
        return np.concatenate(id_parts), np.concatenate(code_parts).reshape(-1, width)

    def live_frame_codes(
        self, entry_ids: Iterable[int] | None = None, min_quality: int = VPDQ_MIN_QUALITY
    ) -> tuple[np.ndarray, np.ndarray]:
        """`live_codes` for videos: (entry ids, PDQ codes (n, 32)) of the distinct frame
        hashes of quality >= min_quality of every live `vpdq` entry, each entry's frames
        in first-seen order (so a rebuild assigns the same index keys)."""
        restrict = ""
        params: dict[str, object] = {"q": min_quality, "now": self._clock()}
        if entry_ids is not None:
            restrict = " AND e.id IN (SELECT value FROM json_each(:ids))"
            params["ids"] = _ids_json(entry_ids)
        sql = (
            "SELECT f.entry_id, f.hash, min(f.seq) AS first FROM video_frames f"
            " JOIN entries e ON e.id = f.entry_id"
            f" WHERE e.signal_type = 'vpdq' AND f.quality >= :q AND {_LIVE}{restrict}"
            " GROUP BY f.entry_id, f.hash ORDER BY f.entry_id, first"
        )
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        codes = np.frombuffer(b"".join([r[1] for r in rows]), np.uint8).reshape(-1, 32)
        return ids, codes

    def video_frame_counts(
        self, entry_ids: Iterable[int], min_quality: int = VPDQ_MIN_QUALITY
    ) -> dict[int, int]:
        """Distinct frame hashes of quality >= min_quality per `vpdq` entry (the
        denominator of vPDQ's compared-video percentage)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT entry_id, count(DISTINCT hash) FROM video_frames"
                " WHERE quality >= :q AND entry_id IN (SELECT value FROM json_each(:ids))"
                " GROUP BY entry_id",
                {"q": min_quality, "ids": _ids_json(entry_ids)},
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def video_frames(self, entry_id: int) -> list[Frame]:
        """A `vpdq` entry's frames in file order (exports)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT frame, quality, hash, ts FROM video_frames WHERE entry_id = ? ORDER BY seq",
                (entry_id,),
            ).fetchall()
        return [Frame(r[0], r[1], Hash(SignalType.PDQ, r[2]), r[3]) for r in rows]

    def corroborable_lists(self) -> list[int]:
        """Ids of the lists holding both a PDQ and a pHash entry with an external id.

        Why: only there can a pHash hit have a PDQ sibling (`pdq_siblings`), so where no
        list qualifies the matcher skips corroboration's wide pHash search (a scan of every
        pHash code: 0.5-0.9 ms per upload at 1M) and its sibling lookup. Liveness is not
        checked: a disabled pair still counts, which only keeps the search on."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT l.id FROM lists l WHERE"
                " EXISTS (SELECT 1 FROM entries e WHERE e.signal_type = 'pdq'"
                "         AND e.list_id = l.id AND e.external_id <> '')"
                " AND EXISTS (SELECT 1 FROM entries e WHERE e.signal_type = 'phash'"
                "             AND e.list_id = l.id AND e.external_id <> '')"
                " ORDER BY l.id"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def pdq_siblings(self, entry_ids: Iterable[int]) -> dict[int, list[tuple[int, bytes]]]:
        """For each given entry, the live PDQ entries of the same list with the same
        (non-empty) external id: the PDQ of the same media item, as (id, hash bytes)."""
        with self._read() as conn:
            rows = conn.execute(
                SIBLINGS_SQL, {"ids": _ids_json(entry_ids), "now": self._clock()}
            ).fetchall()
        out: dict[int, list[tuple[int, bytes]]] = {}
        for owner, sibling, value in rows:
            out.setdefault(owner, []).append((sibling, bytes(value)))
        return out

    def exact_lookup(self, signal_type: SignalType, value: bytes) -> list[int]:
        """Ids of live entries whose hash (or a variant's) is exactly `value`: the match
        for md5/sha256, and a shortcut for identical perceptual hashes."""
        if len(value) * 8 != signal_type.bits:
            raise InvalidHash(f"{signal_type} hash must be {signal_type.bits // 8} bytes")
        params = {"sig": signal_type.value, "h": bytes(value), "now": self._clock()}
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT e.id FROM entries e WHERE e.signal_type = :sig AND e.hash = :h"
                f" AND {_LIVE}"
                " UNION"
                " SELECT e.id FROM entry_variants v JOIN entries e ON e.id = v.entry_id"
                f" WHERE v.signal_type = :sig AND v.hash = :h AND {_LIVE}"
                " ORDER BY 1",
                params,
            ).fetchall()
        return [r[0] for r in rows]

    def entry_meta(self, entry_ids: Iterable[int]) -> dict[int, EntryMeta]:
        """List settings and metadata of the given entries, in one query; ids that no
        longer exist are left out. `live` lets the policy drop a match to an entry
        disabled since the index was last refreshed."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT e.id, e.list_id, l.name, l.action, e.signal_type, l.pdq_threshold,"
                f" l.phash_threshold, e.category, e.external_id, l.options, {_LIVE}"
                " FROM entries e JOIN lists l ON l.id = e.list_id"
                " WHERE e.id IN (SELECT value FROM json_each(:ids))",
                {"ids": _ids_json(entry_ids), "now": self._clock()},
            ).fetchall()
        options: dict[str, dict[str, Any]] = {}  # parse each list's options once
        out = {}
        for r in rows:
            opts = options.setdefault(r[9], json.loads(r[9]))
            out[r[0]] = EntryMeta(
                entry_id=r[0], list_id=r[1], list_name=r[2], action=Action(r[3]),
                signal=SignalType(r[4]), pdq_threshold=r[5], phash_threshold=r[6],
                category=r[7], external_id=r[8], options=opts, live=bool(r[10]),
            )  # fmt: skip
        return out

    # -- change log -------------------------------------------------------------------

    def version(self) -> int:
        """The latest change's sequence number (0 when none): cheap enough to poll."""
        with self._read() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
            return int(row[0]) if row else 0

    def changes_since(self, seq: int, limit: int | None = None) -> list[Change]:
        """Changes after `seq`, oldest first. After a big import a consumer may prefer a
        rebuild to applying a million rows: compare `version() - seq` first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT seq, op, entry_id, list_id, at FROM changes WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (seq, -1 if limit is None else limit),
            ).fetchall()
            return [Change(*r) for r in rows]

    def disables_expired(self, after: float, upto: float) -> list[int]:
        """Ids of entries whose timed disable lapsed in (after, upto]: what a refresher
        re-adds to its index, since a lapse writes no change row."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id FROM entries WHERE enabled = 0 AND disabled_until > ?"
                " AND disabled_until <= ? ORDER BY id",
                (after, upto),
            ).fetchall()
            return [r[0] for r in rows]

    # -- generic access for modules that own their own tables (keys, reports, audit) --

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this store's connection (committed, and so durable
        with synchronous=FULL, when the block ends; rolled back on an exception)."""
        with self._write() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This store's connection for reads, with sqlite errors raised as StoreError."""
        with self._read() as conn:
            yield conn

    def now(self) -> float:
        """The store's clock (tests move it), for rows other modules write."""
        return self._clock()

    # -- internals --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        if os.getpid() != self._pid:
            # a forked SQLite connection shares locks and file offsets with its parent
            raise StoreError("a Store must not cross fork(); open one in each process")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so a
        transaction never fails half-way because another writer got there first."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

    def _log(self, conn: sqlite3.Connection, op: str, entry_id: int | None, list_id: int) -> None:
        conn.execute(
            "INSERT INTO changes (entry_id, list_id, op, at) VALUES (?, ?, ?, ?)",
            (entry_id, list_id, op, self._clock()),
        )

    def _log_entry(self, conn: sqlite3.Connection, op: str, entry_id: int) -> None:
        conn.execute(
            "INSERT INTO changes (entry_id, list_id, op, at)"
            " SELECT id, list_id, ?, ? FROM entries WHERE id = ?",
            (op, self._clock(), entry_id),
        )

    def _list_by_id(self, conn: sqlite3.Connection, list_id: int) -> HashList:
        row = conn.execute(f"SELECT {_LIST_COLS} FROM lists WHERE id = ?", (list_id,)).fetchone()
        return _hash_list(row)

    def _entry_filter(
        self, list_name: str | None, signal_type: SignalType | None, enabled_only: bool
    ) -> tuple[str, dict[str, object]]:
        where = ""
        params: dict[str, object] = {}
        if list_name is not None:
            with self._read() as conn:
                params["list_id"] = _require_list(conn, list_name).id
            where += " AND e.list_id = :list_id"
        if signal_type is not None:
            params["sig"] = SignalType(signal_type).value
            where += " AND e.signal_type = :sig"
        if enabled_only:
            where += f" AND {_LIVE}"
        return where, params


# -- module helpers -------------------------------------------------------------------

_LIST_COLS = "id, name, action, pdq_threshold, phash_threshold, description, options, created_at"
_ENTRY_COLS = (
    "e.id, e.list_id, l.name, e.signal_type, e.hash, e.external_id, e.category, e.source,"
    " e.note, e.added_at, e.enabled, e.disabled_until, e.batch_id, e.origin"
)


def _connect(path: Path, busy_timeout: float, cache_mib: int) -> sqlite3.Connection:
    """Connect, set the pragmas every connection needs, and migrate the schema.

    isolation_level=None hands transaction control to us (explicit BEGIN/COMMIT);
    check_same_thread=False is safe because `Store` serialises use with a lock.
    """
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = {-int(cache_mib) * 1024}")
        conn.execute("PRAGMA foreign_keys = ON")
        # a schema from a file must not run functions we did not ask for
        conn.execute("PRAGMA trusted_schema = OFF")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to len(MIGRATIONS), one migration per transaction.

    The version is read again inside each write transaction, so two processes opening
    a fresh file at once do not both run the same migration.
    """
    migrations = MIGRATIONS  # looked up per call, so tests can add a migration
    while True:
        if _schema_state(conn, path, len(migrations)) >= len(migrations):
            return
        version = -1
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _schema_state(conn, path, len(migrations))
            if version < len(migrations):
                for statement in _statements(migrations[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(
                f"{path}: migration to schema version {version + 1} failed: {exc}"
            ) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _schema_state(conn: sqlite3.Connection, path: Path, latest: int) -> int:
    """The file's schema version, after refusing files that are not ours."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > latest:
        raise StoreError(
            f"{path}: schema version {version} is newer than this hashsvc supports ({latest})"
        )
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreError(f"{path}: not a hashsvc database (it holds other tables)")
    elif conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise StoreError(f"{path}: not a hashsvc database (application_id differs)")
    return version


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (executescript would COMMIT first)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                yield pending
            pending = ""
    if pending.strip(" \n\t;"):
        raise StoreError(f"incomplete statement in migration: {pending.strip()[:60]!r}")


def _make_private(path: Path) -> None:
    try:
        if path.exists() and path.stat().st_mode & 0o777 != 0o600:
            path.chmod(0o600)
    except OSError as exc:
        raise StoreError(f"cannot make {path} private (mode 0600): {exc}") from exc


def _rowid(cur: sqlite3.Cursor) -> int:
    assert cur.lastrowid is not None  # every INSERT here has a rowid
    return cur.lastrowid


def _dump(options: Mapping[str, Any]) -> str:
    return json.dumps(dict(options), sort_keys=True)


def _ids_json(entry_ids: Iterable[int]) -> str:
    """Ids as one JSON parameter for json_each: no limit on how many, no SQL built."""
    ids = []
    for i in entry_ids:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise InvalidValue(f"entry ids must be integers, got {i!r}")
        ids.append(int(i))
    return json.dumps(ids)


def _threshold(signal: SignalType, pdq: int, phash: int) -> int:
    if signal in (SignalType.PDQ, SignalType.VPDQ):  # vPDQ: the distance between frames
        return pdq
    if signal is SignalType.PHASH:
        return phash
    return 0  # cryptographic hashes match only when identical


def _find_list(conn: sqlite3.Connection, name: str) -> HashList | None:
    row = conn.execute(f"SELECT {_LIST_COLS} FROM lists WHERE name = ?", (name,)).fetchone()
    return None if row is None else _hash_list(row)


def _require_list(conn: sqlite3.Connection, name: str) -> HashList:
    found = _find_list(conn, name)
    if found is None:
        raise NotFound(f"no list named {name!r}")
    return found


def _insert_variants(
    conn: sqlite3.Connection, entry_id: int, variants: Sequence[tuple[Hash, str]]
) -> int:
    """Add `variants` to an entry inside the caller's transaction; returns how many were
    new. Refuses (InvalidValue, so the transaction writes nothing) a kind out of bounds or
    more than MAX_VARIANTS variants of one signal on the entry."""
    for _h, kind in variants:
        if not kind or len(kind) > MAX_KIND_CHARS:
            raise InvalidValue(f"variant kind must be 1..{MAX_KIND_CHARS} characters")
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO entry_variants (entry_id, signal_type, hash, kind)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (entry_id, signal_type, hash) DO NOTHING",
        [(entry_id, h.signal.value, h.value, kind) for h, kind in variants],
    )
    added = conn.total_changes - before
    over = conn.execute(
        "SELECT signal_type, count(*) FROM entry_variants WHERE entry_id = ?"
        " GROUP BY signal_type HAVING count(*) > ?",
        (entry_id, MAX_VARIANTS),
    ).fetchone()
    if over is not None:
        raise InvalidValue(
            f"entry {entry_id} would hold {over[1]} {over[0]} variants; at most {MAX_VARIANTS}"
        )
    return added


def _require_entry(conn: sqlite3.Connection, entry_id: int) -> Entry:
    row = conn.execute(
        f"SELECT {_ENTRY_COLS} FROM entries e JOIN lists l ON l.id = e.list_id WHERE e.id = ?",
        (entry_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no entry {entry_id}")
    return _entry(row)


def _hash_list(row: tuple[Any, ...]) -> HashList:
    return HashList(
        id=row[0], name=row[1], action=Action(row[2]), pdq_threshold=row[3],
        phash_threshold=row[4], description=row[5], options=json.loads(row[6]),
        created_at=row[7],
    )  # fmt: skip


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(
        id=row[0], list_id=row[1], list_name=row[2], hash=Hash(SignalType(row[3]), row[4]),
        external_id=row[5], category=row[6], source=row[7], note=row[8], added_at=row[9],
        enabled=bool(row[10]), disabled_until=row[11], batch_id=row[12], origin=row[13],
    )  # fmt: skip


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not LIST_NAME.fullmatch(name):
        raise InvalidValue(
            f"list name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )


def _check_action(action: Action | str) -> Action:
    try:
        return Action(action)
    except ValueError:
        raise InvalidValue(f"action must be 'block' or 'report', got {action!r}") from None


def _check_threshold(signal: SignalType, value: int | None) -> int:
    if value is None:
        return signal.default_threshold
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= signal.bits:
        raise InvalidValue(f"{signal} threshold must be an integer in 0..{signal.bits}")
    return value


def _check_text(name: str, value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise InvalidValue(f"{name} must be a string of at most {MAX_FIELD_CHARS} characters")
    return value


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        kind = KNOWN_OPTIONS.get(key)
        if kind is None:
            known = ", ".join(KNOWN_OPTIONS)
            raise InvalidValue(f"unknown list option {key!r} (known: {known})")
        if not isinstance(value, kind):
            raise InvalidValue(f"list option {key!r} must be a {kind.__name__}")
        out[key] = value
    return out


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds: how every timestamp leaves the service."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return f"{whole}.{int((ts % 1) * 1000):03d}Z"
