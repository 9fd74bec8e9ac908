"""hashsvc.store: lists, all-or-nothing imports, the change log, timed disables,
migrations, private files and crash safety under SIGKILL.

Hashes here are random bytes, not hashes of any media.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hashsvc import store as store_mod
from hashsvc.errors import (
    Conflict,
    HashListError,
    InvalidHash,
    InvalidValue,
    NotFound,
    StoreError,
)
from hashsvc.hashlist import ListEntry, format_export, parse_list
from hashsvc.signals import Hash, SignalType
from hashsvc.store import MIGRATIONS, Action, Store

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
PDQ, PHASH, MD5, SHA256 = SignalType.PDQ, SignalType.PHASH, SignalType.MD5, SignalType.SHA256


class Clock:
    """A settable clock, so timed disables lapse without waiting."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "hashsvc.db"


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Iterator[Store]:
    with Store.open(db_path, clock=clock) as s:
        yield s


def rand_hash(rng: random.Random, sig: SignalType = PDQ) -> Hash:
    return Hash(sig, rng.randbytes(sig.bits // 8))


def make_entries(n: int, seed: int = 0, sig: SignalType = PDQ) -> list[ListEntry]:
    rng = random.Random(seed)
    return [ListEntry(rand_hash(rng, sig), external_id=f"x{i}", line=i + 1) for i in range(n)]


def load(store: Store, name: str, entries: list[ListEntry], action: str = "block") -> list[int]:
    """Create a list, import entries, return their ids in import order."""
    store.create_list(name, action)
    store.import_entries(name, entries, source_name=f"{name}.csv", file_sha256="")
    return [e.id for e in store.entries(name)]


def raw_sql(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


# -- opening: files, pragmas, modes -----------------------------------------------------


def test_open_creates_private_files_with_safe_pragmas(db_path: Path, clock: Clock) -> None:
    umask = os.umask(0o022)
    try:
        with Store.open(db_path, clock=clock) as s:
            s.create_list("demo", "block")  # a write, so the WAL has frames
            conn = s._connection()
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
            assert conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)
            assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            for suffix in ("", "-wal", "-shm"):
                mode = stat.S_IMODE(os.stat(f"{db_path}{suffix}").st_mode)
                assert mode == 0o600, (suffix, oct(mode))
            assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
        assert os.umask(0o022) == 0o022  # open() put the process umask back
    finally:
        os.umask(umask)


def test_open_tightens_a_file_that_is_too_open(db_path: Path) -> None:
    with Store.open(db_path):
        pass
    db_path.chmod(0o644)
    with Store.open(db_path):
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_a_closed_store_refuses_work(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.lists()


def test_a_store_refuses_to_cross_fork(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_pid", -1)  # as if this process were a forked child
    with pytest.raises(StoreError, match="fork"):
        store.version()


def test_a_foreign_sqlite_file_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE photos (x)")
    with pytest.raises(StoreError, match="not a hashsvc database"):
        Store.open(db_path)


# -- migrations -------------------------------------------------------------------------


def test_an_older_database_is_migrated_and_keeps_its_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(db_path) as s:
        ids = load(s, "old", make_entries(3))
    v2 = "ALTER TABLE lists ADD COLUMN owner TEXT NOT NULL DEFAULT 'nobody';"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, v2])
    with Store.open(db_path) as s:
        conn = s._connection()
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) + 1,)
        assert conn.execute("SELECT name, owner FROM lists").fetchall() == [("old", "nobody")]
        assert [e.id for e in s.entries("old")] == ids


def test_a_failing_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(db_path):
        pass
    broken = "CREATE TABLE half_done (x); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match=f"migration to schema version {len(MIGRATIONS) + 1}"):
        Store.open(db_path)
    assert raw_sql(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert raw_sql(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


def test_a_newer_database_is_refused(db_path: Path) -> None:
    with Store.open(db_path):
        pass
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this hashsvc supports"):
        Store.open(db_path)


# -- lists ------------------------------------------------------------------------------


def test_create_list_uses_default_thresholds(store: Store, clock: Clock) -> None:
    lst = store.create_list("ncmec-demo", "report", description="demo", options={"crops": True})
    assert lst.action is Action.REPORT
    # the defaults are the signal types' (PDQ 31, pHash 6 as measured in bench/)
    assert (lst.pdq_threshold, lst.phash_threshold) == (31, 6)
    assert (lst.threshold(PDQ), lst.threshold(PHASH), lst.threshold(MD5)) == (31, 6, 0)
    assert lst.options == {"crops": True} and lst.created_at == T0
    assert store.get_list("ncmec-demo") == lst
    assert store.get_list("NCMEC-Demo") == lst  # names are case-insensitive


def test_list_names_are_unique_regardless_of_case(store: Store) -> None:
    store.create_list("Own.Bank_1", "block")
    with pytest.raises(Conflict):
        store.create_list("own.bank_1", "report")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "a" * 65},
        {"name": "has space"},
        {"name": "semi;colon"},
        {"name": "trailing\n"},
        {"action": "delete"},
        {"pdq_threshold": 257},
        {"pdq_threshold": -1},
        {"phash_threshold": 65},
        {"phash_threshold": True},
        {"options": {"dihedal": True}},
        {"options": {"dihedral": "yes"}},
        {"description": "d" * 1001},
    ],
)
def test_create_list_refuses_bad_values(store: Store, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"name": "ok", "action": "block", **kwargs}
    with pytest.raises(InvalidValue):
        store.create_list(**args)  # type: ignore[arg-type]
    assert store.lists() == []


def test_update_list_changes_only_what_is_given(store: Store) -> None:
    store.create_list("a", "block", options={"dihedral": True, "crops": True})
    updated = store.update_list("a", pdq_threshold=20, options={"trim_borders": False})
    assert (updated.action, updated.pdq_threshold, updated.phash_threshold) == ("block", 20, 6)
    assert updated.options == {"trim_borders": False}  # replaced whole, not merged
    assert store.update_list("a") == updated
    with pytest.raises(NotFound):
        store.update_list("nope", action="report")
    with pytest.raises(InvalidValue):
        store.update_list("a", phash_threshold=99)


def test_lists_are_sorted_by_name_and_get_list_raises_not_found(store: Store) -> None:
    for name in ("b", "a", "c"):
        store.create_list(name, "block")
    assert [lst.name for lst in store.lists()] == ["a", "b", "c"]
    with pytest.raises(NotFound):
        store.get_list("zzz")


def test_delete_list_removes_entries_variants_and_batches(store: Store) -> None:
    ids = load(store, "gone", make_entries(5))
    keep = load(store, "kept", make_entries(2, seed=1))
    store.add_variants(ids[0], [(rand_hash(random.Random(9)), "crop")])
    v = store.version()
    assert store.delete_list("gone") == 5
    with pytest.raises(NotFound):
        store.get_list("gone")
    assert [e.id for e in store.entries()] == keep
    assert set(store.live_codes(PDQ)[0].tolist()) == set(keep)
    conn = store._connection()
    assert conn.execute("SELECT count(*) FROM entry_variants").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM import_batches").fetchone() == (1,)
    changes = store.changes_since(v)
    assert [(c.op, c.entry_id) for c in changes] == [("remove", i) for i in ids] + [("list", None)]


# -- imports ----------------------------------------------------------------------------


def test_import_adds_entries_with_their_metadata(store: Store, clock: Clock) -> None:
    store.create_list("a", "block")
    e = ListEntry(rand_hash(random.Random(1), MD5), "ext-1", "cat", "hotline", "note", line=2)
    result = store.import_entries("a", [e], source_name="a.csv", file_sha256="ab" * 32)
    assert (result.added, result.skipped_duplicates) == (1, 0)
    (stored,) = store.entries("a")
    assert stored.hash == e.hash and stored.list_name == "a"
    assert (stored.external_id, stored.category, stored.source, stored.note) == (
        "ext-1", "cat", "hotline", "note",
    )  # fmt: skip
    assert (stored.enabled, stored.disabled_until, stored.origin) == (True, None, "import")
    assert (stored.batch_id, stored.added_at) == (result.batch_id, T0)
    (batch,) = store.import_batches("a")
    assert (batch.source_name, batch.file_sha256, batch.added) == ("a.csv", "ab" * 32, 1)


def test_reimporting_the_same_file_adds_nothing_twice(store: Store) -> None:
    entries = make_entries(50)
    store.create_list("a", "block")
    first = store.import_entries("a", entries, source_name="a.csv", file_sha256="")
    first_ids = [e.id for e in store.entries("a")]
    v = store.version()
    again = store.import_entries("a", entries[::-1], source_name="a.csv", file_sha256="")
    assert (first.added, first.skipped_duplicates) == (50, 0)
    assert (again.added, again.skipped_duplicates) == (0, 50)
    assert [e.id for e in store.entries("a")] == first_ids
    assert store.version() == v  # nothing changed, so index processes have nothing to do
    assert [(b.added, b.skipped_duplicates) for b in store.import_batches("a")] == [
        (50, 0), (0, 50),
    ]  # fmt: skip


def test_a_hash_repeated_within_one_import_counts_as_skipped(store: Store) -> None:
    (entry,) = make_entries(1)
    store.create_list("a", "block")
    result = store.import_entries("a", [entry, entry], source_name="", file_sha256="")
    assert (result.added, result.skipped_duplicates) == (1, 1)


def test_a_partly_new_file_adds_only_the_new_entries(store: Store) -> None:
    entries = make_entries(10)
    store.create_list("a", "block")
    store.import_entries("a", entries[:6], source_name="", file_sha256="")
    store.set_enabled(store.exact_lookup(PDQ, entries[0].hash.value)[0], False)
    result = store.import_entries("a", entries, source_name="", file_sha256="")
    assert (result.added, result.skipped_duplicates) == (4, 6)
    assert store.count_entries("a") == 10
    assert store.count_entries("a", enabled_only=True) == 9  # a re-import does not re-enable


def test_the_same_hash_may_sit_in_two_lists(store: Store) -> None:
    entries = make_entries(3)
    a = load(store, "a", entries)
    b = load(store, "b", entries)
    assert store.exact_lookup(PDQ, entries[1].hash.value) == [a[1], b[1]]


def test_import_into_a_missing_list_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.import_entries("nope", make_entries(1), source_name="", file_sha256="")


def test_import_refuses_a_bad_origin_or_digest(store: Store) -> None:
    store.create_list("a", "block")
    with pytest.raises(InvalidValue):
        store.import_entries("a", [], source_name="", file_sha256="", origin="scrape")
    with pytest.raises(InvalidValue):
        store.import_entries("a", [], source_name="", file_sha256="XYZ")


def test_an_invalid_file_never_reaches_the_store(store: Store) -> None:
    """The all-or-nothing contract end to end: one bad line, nothing imported."""
    good = make_entries(3)
    text = "signal_type,hash\n" + "".join(f"pdq,{e.hash.hex}\n" for e in good) + "pdq,beef\n"
    parsed = parse_list(text.encode(), "csv", source_name="upload.csv")
    store.create_list("a", "block")
    with pytest.raises(HashListError) as caught:
        parsed.raise_if_invalid()
        store.import_entries("a", parsed.entries, source_name="", file_sha256="")
    assert [p.line for p in caught.value.problems] == [5]
    assert store.count_entries() == 0 and store.version() == 1  # only the list's creation


def test_a_failure_mid_import_rolls_everything_back(store: Store) -> None:
    entries = make_entries(200)
    store.create_list("a", "block")
    v = store.version()

    def failing() -> Iterator[ListEntry]:
        yield from entries  # every row is inserted before the failure
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        store.import_entries("a", failing(), source_name="", file_sha256="")
    assert store.count_entries() == 0
    assert store.import_batches("a") == []
    assert store.version() == v
    # and the connection is usable afterwards, outside any transaction
    assert store.import_entries("a", entries, source_name="", file_sha256="").added == 200


def test_a_failure_mid_update_rolls_back(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    (entry_id,) = load(store, "a", make_entries(1))
    v = store.version()

    def broken_log(*args: object) -> None:
        raise sqlite3.OperationalError("injected")

    monkeypatch.setattr(Store, "_log_entry", broken_log)
    with pytest.raises(StoreError, match="injected"):
        store.set_enabled(entry_id, False)
    with pytest.raises(StoreError, match="injected"):
        store.remove_entry(entry_id)
    monkeypatch.undo()
    assert store.entry(entry_id).enabled and store.version() == v


# -- entries ----------------------------------------------------------------------------


def test_entries_pages_filters_and_resumes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "_PAGE", 3)  # several pages from a few rows
    pdq = load(store, "a", make_entries(7))
    store.import_entries("a", make_entries(2, 5, MD5), source_name="", file_sha256="")
    other = load(store, "b", make_entries(4, seed=1))
    md5 = [e.id for e in store.entries("a", MD5)]
    store.set_enabled(pdq[1], False)
    assert [e.id for e in store.entries()] == pdq + md5 + other
    assert [e.id for e in store.entries("a", PDQ)] == pdq
    assert [e.id for e in store.entries(signal_type=MD5)] == md5
    assert [e.id for e in store.entries("a", enabled_only=True)] == [pdq[0], *pdq[2:], *md5]
    assert [e.id for e in store.entries(after_id=pdq[3], limit=5)] == pdq[4:] + md5
    assert [e.id for e in store.entries(limit=0)] == []
    assert store.count_entries() == 13 and store.count_entries("b") == 4
    with pytest.raises(NotFound):
        store.entries("missing")  # raised at the call, not at the first next()


def test_entry_and_remove_entry(store: Store) -> None:
    ids = load(store, "a", make_entries(2))
    assert store.entry(ids[0]).external_id == "x0"
    store.remove_entry(ids[0])
    with pytest.raises(NotFound):
        store.entry(ids[0])
    with pytest.raises(NotFound):
        store.remove_entry(ids[0])
    assert [e.id for e in store.entries()] == ids[1:]


def test_an_entry_holds_at_most_max_variants(store: Store, tmp_path: Path) -> None:
    """The index keys 64 codes per entry and signal (its hash + 63 variants); one more
    once made every worker's index refresh fail. The store refuses it, writing nothing."""
    from hashsvc.index_sync import KEY_SLOTS, IndexSet

    rng = random.Random(5)
    (entry_id,) = load(store, "a", make_entries(1))
    full = [(rand_hash(rng), "crop") for _ in range(store_mod.MAX_VARIANTS)]
    assert store.add_variants(entry_id, full) == store_mod.MAX_VARIANTS == KEY_SLOTS - 1
    v = store.version()
    with pytest.raises(InvalidValue, match=f"at most {store_mod.MAX_VARIANTS}"):
        store.add_variants(entry_id, [(rand_hash(rng), "crop")])
    assert store.version() == v and store.live_codes(PDQ)[0].size == KEY_SLOTS
    assert store.add_variants(entry_id, full[:3]) == 0  # known ones are still fine
    indexes = IndexSet.open(store, tmp_path / "idx")
    indexes.refresh()
    assert set(indexes.search(full[-1][0], 0)[0].tolist()) == {entry_id}


def test_opening_an_older_database_trims_variants_past_the_cap(tmp_path: Path) -> None:
    """A database written before the cap may hold more variants than the index can key;
    opening it keeps each entry's first MAX_VARIANTS per signal, logs the change, and the
    index then loads and refreshes."""
    from hashsvc.index_sync import IndexSet

    db = tmp_path / "hashsvc.db"
    rng = random.Random(8)
    with Store.open(db) as store:
        a, b = load(store, "a", make_entries(2))
        v = store.version()
    extra = [rand_hash(rng) for _ in range(100)]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(  # as an older hashsvc let enrollment do
            "INSERT INTO entry_variants (entry_id, signal_type, hash, kind)"
            " VALUES (?, 'pdq', ?, 'crop')",
            [(a, h.value) for h in extra] + [(b, h.value) for h in extra[:5]],
        )
        conn.execute("PRAGMA user_version = 4")  # migration 5 (the variant cap) runs again
    with Store.open(db) as store:
        ids, codes = store.live_codes(PDQ)
        assert ids.tolist().count(a) == 1 + store_mod.MAX_VARIANTS
        assert ids.tolist().count(b) == 1 + 5  # under the cap: untouched
        kept = {bytes(c) for i, c in zip(ids.tolist(), codes, strict=True) if i == a}
        assert kept >= {h.value for h in extra[: store_mod.MAX_VARIANTS]}
        assert [(c.op, c.entry_id) for c in store.changes_since(v)] == [("add", a)]
        indexes = IndexSet.open(store, tmp_path / "idx")
        indexes.refresh()
        assert set(indexes.search(extra[10], 0)[0].tolist()) == {a}  # kept; not b's
        assert indexes.search(extra[-1], 0)[0].size == 0  # trimmed


def test_enrolling_near_copies_keeps_the_first_variants(store: Store) -> None:
    """Media with one PDQ enrolled again and again (re-encodes: same hash, other crops)
    must not pile variants onto the entry; an entry imported as a bare hash gets the
    variants of the first media enrolled for it."""
    rng = random.Random(6)
    store.create_list("a", "block")
    (bare,) = make_entries(1, seed=7)
    store.import_entries("a", [bare], source_name="hashes.csv", file_sha256="")
    first = [(rand_hash(rng), "crop") for _ in range(5)]
    for i in range(20):
        crops = first if i == 0 else [(rand_hash(rng), "crop") for _ in range(5)]
        store.import_entries(
            "a", [bare], source_name="enroll", file_sha256="", origin="enroll",
            variants={bare.hash: crops},
        )  # fmt: skip
    ids, codes = store.live_codes(PDQ)
    assert len(ids) == 1 + len(first)
    assert {bytes(c) for c in codes} == {bare.hash.value, *(h.value for h, _ in first)}


def test_stored_entries_export_and_parse_back(store: Store) -> None:
    load(store, "a", make_entries(4) + make_entries(2, 3, SHA256))
    stored = list(store.entries("a"))
    for fmt in ("csv", "jsonl"):
        parsed = parse_list(format_export(stored, fmt), fmt)
        assert parsed.ok
        assert [(e.hash, e.external_id) for e in parsed.entries] == [
            (e.hash, e.external_id) for e in stored
        ]


def test_variants_match_as_their_entry(store: Store) -> None:
    rng = random.Random(3)
    (entry_id,) = load(store, "a", make_entries(1))
    crop, rot = rand_hash(rng), rand_hash(rng)
    v = store.version()
    assert store.add_variants(entry_id, [(crop, "crop"), (rot, "rot90"), (crop, "crop")]) == 2
    assert store.add_variants(entry_id, [(crop, "crop")]) == 0
    assert [(c.op, c.entry_id) for c in store.changes_since(v)] == [("add", entry_id)]
    ids, codes = store.live_codes(PDQ)
    assert ids.tolist() == [entry_id] * 3
    assert {bytes(row) for row in codes} >= {crop.value, rot.value}
    assert store.exact_lookup(PDQ, rot.value) == [entry_id]
    with pytest.raises(InvalidValue):
        store.add_variants(entry_id, [(crop, "")])
    with pytest.raises(NotFound):
        store.add_variants(999, [(crop, "crop")])
    store.remove_entry(entry_id)
    assert store.live_codes(PDQ)[0].size == 0
    assert store.exact_lookup(PDQ, rot.value) == []


# -- matching reads ---------------------------------------------------------------------


def test_live_codes_match_a_brute_force_oracle(store: Store, clock: Clock) -> None:
    rng = random.Random(11)
    for name in ("a", "b"):
        store.create_list(name, "block")
        mixed = [ListEntry(rand_hash(rng, rng.choice([PDQ, PHASH, MD5]))) for _ in range(120)]
        store.import_entries(name, mixed, source_name="", file_sha256="")
    every = list(store.entries())
    for e in rng.sample(every, 40):
        store.add_variants(e.id, [(rand_hash(rng, e.signal), "crop")])
    for e in rng.sample(every, 50):
        choice = rng.randrange(3)
        until = None if choice == 0 else clock.now + (10 if choice == 1 else 1000)
        store.set_enabled(e.id, False, until=until)
    clock.now += 100  # the 10 s disables have lapsed, the 1000 s ones have not

    conn = store._connection()
    variants = conn.execute("SELECT entry_id, signal_type, hash FROM entry_variants").fetchall()
    for sig in (PDQ, PHASH, MD5, SHA256):
        live = {e.id for e in store.entries() if e.live_at(clock.now)}
        expected = sorted(
            [(e.id, e.hash.value) for e in store.entries(signal_type=sig) if e.id in live]
            + [(i, h) for i, s, h in variants if s == sig.value and i in live]
        )
        ids, codes = store.live_codes(sig)
        assert ids.dtype == np.int64 and codes.dtype == np.uint8
        assert codes.shape == (len(expected), sig.bits // 8)
        assert sorted(zip(ids.tolist(), map(bytes, codes), strict=True)) == expected
        some = sorted({i for i, _ in expected})[::3]
        sub_ids, _ = store.live_codes(sig, entry_ids=some)
        assert sorted(sub_ids.tolist()) == sorted(i for i, _ in expected if i in set(some))


def test_exact_lookup_finds_live_md5_and_sha256_entries(store: Store) -> None:
    md5 = make_entries(3, 1, MD5)
    sha = make_entries(2, 2, SHA256)
    load(store, "a", md5 + sha)
    first_md5 = store.exact_lookup(MD5, md5[0].hash.value)
    assert len(first_md5) == 1
    assert store.exact_lookup(SHA256, sha[1].hash.value) != []
    assert store.exact_lookup(SHA256, md5[0].hash.value * 2) == []
    store.set_enabled(first_md5[0], False)
    assert store.exact_lookup(MD5, md5[0].hash.value) == []
    with pytest.raises(InvalidHash):
        store.exact_lookup(MD5, b"short")


def test_entry_meta_gives_the_policy_what_it_needs(store: Store) -> None:
    store.create_list("a", "report", pdq_threshold=20, options={"dihedral": False})
    e = ListEntry(rand_hash(random.Random(2)), external_id="p-9", category="A1")
    store.import_entries("a", [e], source_name="", file_sha256="")
    (entry_id,) = store.exact_lookup(PDQ, e.hash.value)
    meta = store.entry_meta([entry_id, 424242])
    assert list(meta) == [entry_id]  # unknown ids are left out
    m = meta[entry_id]
    assert (m.list_name, m.action, m.signal, m.category, m.external_id) == (
        "a", Action.REPORT, PDQ, "A1", "p-9",
    )  # fmt: skip
    assert (m.threshold(PDQ), m.threshold(PHASH), m.options, m.live) == (
        20, 6, {"dihedral": False}, True,
    )  # fmt: skip
    store.set_enabled(entry_id, False)
    assert store.entry_meta(np.array([entry_id]))[entry_id].live is False
    assert store.entry_meta([]) == {}
    with pytest.raises(InvalidValue):
        store.entry_meta(["1"])  # type: ignore[list-item]


# -- timed disables ---------------------------------------------------------------------


def test_a_timed_disable_lapses_by_the_clock(store: Store, clock: Clock) -> None:
    entries = make_entries(2, 1, MD5)
    ids = load(store, "a", entries)
    store.set_enabled(ids[0], False, until=T0 + 60)
    assert store.live_codes(MD5)[0].tolist() == [ids[1]]
    assert store.exact_lookup(MD5, entries[0].hash.value) == []
    assert store.entry_meta([ids[0]])[ids[0]].live is False
    assert store.disables_expired(T0, T0 + 59) == []

    v = store.version()
    clock.now = T0 + 60  # the disable holds *before* its time, not at it
    assert sorted(store.live_codes(MD5)[0].tolist()) == ids
    assert store.exact_lookup(MD5, entries[0].hash.value) == [ids[0]]
    assert store.entry_meta([ids[0]])[ids[0]].live is True
    assert store.count_entries(enabled_only=True) == 2
    assert store.entry(ids[0]).live_at(clock.now)
    assert store.disables_expired(T0 + 59, T0 + 60) == [ids[0]]
    assert store.version() == v  # a lapse writes nothing: refreshers poll disables_expired


def test_set_enabled_validates_until_and_enabling_clears_it(store: Store) -> None:
    (entry_id,) = load(store, "a", make_entries(1))
    with pytest.raises(InvalidValue, match="future"):
        store.set_enabled(entry_id, False, until=T0)
    with pytest.raises(InvalidValue):
        store.set_enabled(entry_id, False, until=float("nan"))
    with pytest.raises(InvalidValue, match="only applies to disabling"):
        store.set_enabled(entry_id, True, until=T0 + 10)
    assert store.set_enabled(entry_id, False, until=T0 + 10).disabled_until == T0 + 10
    enabled = store.set_enabled(entry_id, True)
    assert (enabled.enabled, enabled.disabled_until) == (True, None)
    with pytest.raises(NotFound):
        store.set_enabled(999, False)


# -- the change log ---------------------------------------------------------------------


def test_every_change_is_logged_in_order(store: Store, clock: Clock) -> None:
    assert store.version() == 0 and store.changes_since(0) == []
    ids = load(store, "a", make_entries(3))
    clock.now += 1
    store.set_enabled(ids[0], False)
    store.set_enabled(ids[0], True)
    store.remove_entry(ids[1])
    store.update_list("a", action="report")
    log = store.changes_since(0)
    assert [(c.op, c.entry_id) for c in log] == [
        ("list", None), ("add", ids[0]), ("add", ids[1]), ("add", ids[2]),
        ("disable", ids[0]), ("enable", ids[0]), ("remove", ids[1]), ("list", None),
    ]  # fmt: skip
    assert [c.seq for c in log] == list(range(1, 9)) and store.version() == 8
    assert {c.list_id for c in log} == {store.get_list("a").id}
    assert log[1].at == T0 and log[4].at == T0 + 1
    assert [c.seq for c in store.changes_since(5, limit=2)] == [6, 7]
    assert store.changes_since(8) == []


def test_another_connection_sees_changes_at_once(store: Store, db_path: Path) -> None:
    with Store.open(db_path) as reader:
        seen = reader.version()
        (entry_id,) = load(store, "a", make_entries(1))
        assert reader.version() > seen
        ops = [(c.op, c.entry_id) for c in reader.changes_since(seen)]
        assert ops == [("list", None), ("add", entry_id)]
        assert reader.live_codes(PDQ)[0].tolist() == [entry_id]


def test_an_incremental_consumer_ends_equal_to_a_rebuild(store: Store) -> None:
    """The consumer DESIGN.md relies on: replay changes by reloading each entry."""
    rng = random.Random(5)
    load(store, "a", make_entries(30))
    seq = store.version()
    ids, codes = store.live_codes(PDQ)
    index = {(i, bytes(c)) for i, c in zip(ids.tolist(), codes, strict=True)}
    every = [e.id for e in store.entries()]
    store.import_entries("a", make_entries(10, 1), source_name="", file_sha256="")
    store.set_enabled(every[0], False)
    store.remove_entry(every[1])
    store.add_variants(every[2], [(rand_hash(rng), "crop")])
    store.set_enabled(every[0], True)

    changed = {c.entry_id for c in store.changes_since(seq) if c.entry_id is not None}
    index = {(i, c) for i, c in index if i not in changed}
    new_ids, new_codes = store.live_codes(PDQ, entry_ids=changed)
    index |= {(i, bytes(c)) for i, c in zip(new_ids.tolist(), new_codes, strict=True)}
    ids, codes = store.live_codes(PDQ)
    assert index == {(i, bytes(c)) for i, c in zip(ids.tolist(), codes, strict=True)}


# -- concurrency ------------------------------------------------------------------------


def test_threads_may_share_a_store(store: Store) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            store.create_list(f"t{n}", "block")
            store.import_entries(f"t{n}", make_entries(100, n), source_name="", file_sha256="")
            store.live_codes(PDQ)
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_entries() == 400


def test_two_stores_on_one_file_write_in_turn(db_path: Path) -> None:
    with Store.open(db_path) as one, Store.open(db_path) as two:
        one.create_list("a", "block")
        two.create_list("b", "block")
        done = threading.Event()

        def import_b() -> None:
            two.import_entries("b", make_entries(2000, 2), source_name="", file_sha256="")
            done.set()

        t = threading.Thread(target=import_b)
        t.start()
        one.import_entries("a", make_entries(2000, 1), source_name="", file_sha256="")
        t.join()
        assert done.is_set()
        assert one.count_entries("b") == 2000 and two.count_entries("a") == 2000


# -- crash safety -----------------------------------------------------------------------

# The child imports N entries and reports where it is: "progress K" from inside the
# transaction (entries are fed lazily, so each line comes after BEGIN), then blocks on
# stdin when told to, so a kill at that point lands mid-transaction for certain; "fed"
# once every row is handed over (the commit work follows); "done" after COMMIT.
CHILD = r"""
import os, sys
import numpy as np
from hashsvc.hashlist import ListEntry
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Store

path, n, pause_at, cache_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
raw = np.random.default_rng(7).bytes(32 * n)  # the same entries in every run

def feed():
    for i in range(n):
        if i % (n // 10) == 0:
            print("progress", i, flush=True)
            if i == pause_at:
                sys.stdin.readline()
        yield ListEntry(Hash(SignalType.PDQ, raw[i * 32:(i + 1) * 32]))
    print("fed", flush=True)

with Store.open(path, cache_mib=cache_mib) as store:
    if not any(lst.name == "big" for lst in store.lists()):
        store.create_list("big", "block")
    print("importing", flush=True)
    store.import_entries("big", feed(), source_name="big.csv", file_sha256="")
    print("done", flush=True)
"""
N_BIG = 200_000


def run_child(path: Path, pause_at: int = -1, cache_mib: int = 64) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, str(path), str(N_BIG), str(pause_at), str(cache_mib)]
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


def read_until(child: subprocess.Popen[str], prefix: str) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(prefix):
            return
    child.wait()
    assert child.stderr is not None
    raise AssertionError(f"child ended before {prefix!r}: {child.stderr.read()}")


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    reap(child)


def reap(child: subprocess.Popen[str]) -> None:
    child.wait()
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def check_all_or_nothing(path: Path) -> int:
    assert raw_sql(path, "PRAGMA integrity_check") == [("ok",)]
    with Store.open(path) as s:
        count = s.count_entries("big")
        batches = s.import_batches("big")
    ((adds,),) = raw_sql(path, "SELECT count(*) FROM changes WHERE op = 'add'")
    assert count in (0, N_BIG)
    # a batch exists only for a committed import; a later re-import adds 0
    assert all(b.added in (0, N_BIG) for b in batches)
    assert sum(b.added for b in batches) == count == adds
    return count


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_during_an_import_leaves_all_or_nothing(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"kill-moment seed: {seed}")  # shown on failure, to replay the same moments
    rng = random.Random(seed)
    path = tmp_path / "big.db"
    tenth = N_BIG // 10

    # certainly mid-transaction: the child sits inside it, part of the rows written
    # (a 1 MiB page cache spills them to the WAL), when the kill lands
    for pause_at, cache_mib in ((rng.randrange(4) * tenth, 64), (rng.randrange(1, 4) * tenth, 1)):
        child = run_child(path, pause_at, cache_mib)
        read_until(child, f"progress {pause_at}")
        if cache_mib == 1:  # uncommitted pages did reach the WAL, for recovery to drop
            assert Path(f"{path}-wal").stat().st_size > 1024 * 1024
        kill(child)
        assert check_all_or_nothing(path) == 0

    # at random moments: while rows go in, and while the commit work runs (which the
    # kill may miss: then the import is complete, which is also fine)
    for marker, delay in (("importing", rng.uniform(0, 1.0)), ("fed", rng.uniform(0, 1.5))):
        child = run_child(path)
        read_until(child, marker)
        time.sleep(delay)  # not waiting *for* anything: this picks the moment to kill
        kill(child)
        check_all_or_nothing(path)


def test_the_sibling_lookup_finds_each_sibling_by_list_and_external_id(
    store: Store, db_path: Path
) -> None:
    """Every upload's corroboration runs `pdq_siblings` for ~50 pHash hits: each sibling
    must be an index seek on (signal, list, external id). With an index on (signal, list)
    alone the planner took that one and read every PDQ of the list per hit: seconds per
    upload on 1M enrolled items (bench/api.py's paired list)."""
    rng = np.random.default_rng(3)
    store.create_list("items", "block")
    entries = [
        ListEntry(
            Hash(s, rng.integers(0, 256, s.bits // 8, np.uint8).tobytes()), external_id=f"i{i}"
        )
        for i in range(50)
        for s in (SignalType.PDQ, SignalType.PHASH)
    ]
    store.import_entries("items", entries, source_name="t", file_sha256="")
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        plan = [row[3] for row in conn.execute(
            "EXPLAIN QUERY PLAN " + store_mod.SIBLINGS_SQL, {"ids": "[2, 4]", "now": 0.0}
        )]  # fmt: skip
    (sibling_step,) = [step for step in plan if step.startswith("SEARCH e ")]
    assert "external_id=?" in sibling_step, plan
    assert {p: sorted(s) for p, s in store.pdq_siblings([2, 4]).items()} == {
        2: [(1, entries[0].hash.value)],
        4: [(3, entries[2].hash.value)],
    }
