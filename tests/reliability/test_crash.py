"""Crash safety (issue 8): SIGKILL at random points of (a) a list import, (b) an index save
(with its compaction), (c) report writing; after every kill, restart and check everything.

Each scenario runs `crash_child` (one operation in a loop) against one data directory
that lives through all its kills, the way a real service restarts on the same files.
Where a kill lands: the first child of a scenario runs two steps unhindered to time the
operation; every child is then killed a uniformly random delay after it announces the
operation ("begin"), within one operation's time for imports and saves (so kills spread
over the whole operation) and within ~20 of them for reports (each is about a
millisecond, mostly the commit's fsync). A save spends most of its time compacting in
memory, so random kills rarely hit its few file-system steps; the save scenario also
kills right before each of those steps by name (the child patches them, see
`crash_child._stop_at`; production code has no hook). The seed is printed; a failure
replays with HASHSVC_CRASH_SEED=<seed>.

After each kill, "restart" does what `hashsvc serve` does on start (open the store, open
the index set, save it if it is behind) and then checks:

* the database passes ``PRAGMA integrity_check`` and ``foreign_key_check``;
* no import is half-applied: every batch's entries (image hashes, and videos with their
  frames) are all there or none, counted by the label each entry carries, independently
  of the batch row; its batch row agrees; each entry has its one 'add' row in the change
  log; every import that returned is there;
* every acknowledged report (its call returned) is there with its exact content, the
  reports of one call are all there or none, and each has its audit row;
* whatever index is on disk loads (checksum, manifest) and is the old or the new save,
  never a torn one; and the index after restart holds exactly the store's live
  (entry id, code) pairs, as a rebuild from `Store.live_codes` does.

The figures (kills, where they landed, restart time) are printed; `make crash` runs 50
random kills per operation plus every named save step, `make test` a handful.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hashsvc import reports
from hashsvc.index_sync import PERCEPTUAL, IndexSet, entry_ids, slots_for
from hashsvc.search import BinaryIndex, persist
from hashsvc.search.persist import MANIFEST, read_manifest
from hashsvc.signals import SignalType
from hashsvc.store import Store
from tests.reliability import crash_child
from tests.reliability.conftest import LONG, scaled

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# kills per operation: 50 each under `make crash`; a handful under `make test`, where a
# save-scenario child costs ~2 s to start (it loads the index and its numba kernels)
KILLS = {"import": int(scaled(4, 50)), "save": int(scaled(3, 50)), "report": int(scaled(4, 50))}
IMPORT_N = int(scaled(4000, 10000))  # per signal: one import is 2 * IMPORT_N entries
SAVE_BASE_N = int(scaled(20000, 100000))  # per signal, in the index the save scenario writes
CHURN_N = crash_child.CHURN_N
BASE_N = 2000  # per signal, the list every scenario starts with
REPORT_SPAN = 20  # reports: kill within this many operations' time
TIMEOUT = scaled(150, 1800)


def _seed() -> int:
    seed = int(os.environ.get("HASHSVC_CRASH_SEED") or random.randrange(2**32))
    print(f"\ncrash seed: {seed} (replay: HASHSVC_CRASH_SEED={seed})")
    return seed


# -- the child process ------------------------------------------------------------------


class Child:
    """A crash_child process whose stdout lines a thread collects as they arrive, so a
    full pipe never stalls the child and every line printed before the kill is kept."""

    def __init__(self, args: list[str], stderr: Path) -> None:
        self._err = stderr.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "tests.reliability.crash_child", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._err,
        )  # fmt: skip
        self.stderr = stderr
        self.lines: list[tuple[float, str]] = []  # (monotonic time read, line)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith(b"\n"):  # a line cut by the kill was never printed whole
                with self._cond:
                    self.lines.append((time.monotonic(), raw.decode().strip()))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, line: str, timeout: float = 120.0) -> float:
        """When `line` arrived (monotonic); fails with the child's stderr if it died."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, got in self.lines:
                    if got == line or got.startswith(line + " "):
                        return at
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    break
                self._cond.wait(0.5)
        self.kill()
        raise AssertionError(f"child never printed {line!r}:\n{self.stderr.read_text()}")

    def kill(self) -> None:
        """SIGKILL (no cleanup runs), reap, and collect every line printed before."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._err.close()

    def steps(self) -> dict[int, dict[str, list[str]]]:
        """{step: {"begin": fields, "end": fields}} from the lines printed."""
        out: dict[int, dict[str, list[str]]] = {}
        for _, line in self.lines:
            kind, *rest = line.split()
            if kind in ("begin", "end"):
                out.setdefault(int(rest[0]), {})[kind] = rest[1:]
        return out


@dataclass
class Tally:
    """Where the kills landed and how long restarts took, for the printed figures."""

    name: str
    mid: int = 0  # the operation had begun and not returned
    between: int = 0  # the last operation had returned (the kill hit the loop around it)
    outcomes: Counter[str] = field(default_factory=Counter)
    phases: list[float] = field(default_factory=list)  # kill delay / operation time
    restarts: list[float] = field(default_factory=list)
    op_seconds: list[float] = field(default_factory=list)
    leftovers: int = 0  # files besides manifest + index in the index dirs after a restart
    acknowledged: int = 0  # reports whose call returned (all checked after every kill)
    span: float = 1.0  # kills land within this many operations' time

    @property
    def kills(self) -> int:
        return self.mid + self.between

    def summary(self) -> str:
        parts = [
            f"crash[{self.name}]: {self.kills} kills, {self.mid} mid-operation, "
            f"{self.between} between operations",
            f"outcomes {dict(sorted(self.outcomes.items()))}",
        ]
        if self.op_seconds:
            parts.append(f"operation median {statistics.median(self.op_seconds) * 1000:.1f} ms")
        if self.phases:
            bins = Counter(min(int(p / self.span * 5), 4) for p in self.phases)
            unit = "operation" if self.span == 1 else f"{self.span:g} operations' time"
            spread = " ".join(f"{i * 20}-{i * 20 + 20}%:{bins[i]}" for i in range(5))
            parts.append(f"kill point within the {unit} ({spread})")
        if self.restarts:
            parts.append(
                f"restart median {statistics.median(self.restarts) * 1000:.0f} ms,"
                f" max {max(self.restarts) * 1000:.0f} ms"
            )
        parts.append(f"leftover temp files {self.leftovers}")
        if self.acknowledged:
            parts.append(f"acknowledged reports {self.acknowledged}")
        return "; ".join(parts)


def crash_loop(
    mode: str,
    data_dir: Path,
    seed: int,
    span: float,
    extra: list[str],
    after_kill: Callable[[int, Child], str | None],
    tally: Tally,
) -> None:
    """Start, kill at a random point, hand over to `after_kill` (which checks the restart
    and says what became of the interrupted operation); KILLS[mode] times (more, up to 3x,
    while no kill has landed mid-operation: a short run must test that case too)."""
    rng = random.Random(seed)
    tally.span = span
    run = 0
    kills = KILLS[mode]
    while tally.kills < kills or (tally.mid == 0 and run < 3 * kills):
        child = Child([mode, str(data_dir), str(seed), str(run), *extra], data_dir / "child.err")
        try:
            child.wait_for("ready")
            target = 0
            if not tally.op_seconds:  # calibrate: time two operations, kill in the third
                child.wait_for("end 1")
                target = 2
                done = child.steps()
                tally.op_seconds += [float(done[k]["end"][0]) for k in (0, 1)]
            began = child.wait_for(f"begin {target}")
            estimate = statistics.median(tally.op_seconds)
            delay = rng.uniform(0, span * estimate)
            time.sleep(max(0.0, began + delay - time.monotonic()))
        finally:
            child.kill()
        assert child.proc.returncode == -signal.SIGKILL, child.stderr.read_text()
        tally.phases.append(delay / estimate)
        steps = child.steps()
        tally.op_seconds += [
            float(f["end"][0]) for k, f in steps.items() if k >= target and "end" in f
        ]
        last = max(steps)
        if "end" in steps[last]:
            tally.between += 1
        else:
            tally.mid += 1
        outcome = after_kill(run, child)
        if outcome:
            tally.outcomes[outcome] += 1
        run += 1
    print(tally.summary())


# -- the checks after a restart ---------------------------------------------------------


def setup_data_dir(data_dir: Path, base_n: int) -> None:
    """A list with a base batch and a saved index: what a running service has."""
    with Store.open(data_dir / crash_child.DB_NAME) as store:
        store.create_list(crash_child.LIST, "block")
        crash_child.make_batch(0, -1, 0, base_n, tag="base").import_into(store, "base")
        IndexSet.open(store, data_dir).save()


def sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def check_database(db: Path) -> None:
    assert sql(db, "PRAGMA integrity_check") == [("ok",)]
    assert sql(db, "PRAGMA foreign_key_check") == []


def check_imports(db: Path, sizes: dict[str, int], returned: set[str]) -> None:
    """All-or-nothing per batch, counted by the label each entry carries (its external id
    prefix), so a batch row that lied would not hide a half-applied import; a video's
    frames count with it. `sizes`: label -> n of every batch that may exist."""

    def per_label(query: str) -> dict[str, int]:
        label = "substr(e.external_id, 1, instr(e.external_id, '-') - 1)"
        return dict(
            sql(db, query.format(label=label) + " AND e.external_id NOT LIKE 'base-%' GROUP BY 1")
        )

    entries = per_label("SELECT {label}, count(*) FROM entries e WHERE 1")
    frames = per_label(
        "SELECT {label}, count(*) FROM video_frames f JOIN entries e ON e.id = f.entry_id WHERE 1"
    )
    for name, count in entries.items():
        n = sizes[name]
        want = 2 * n + crash_child.videos(n)
        assert count == want, f"import {name}: {count} of {want} entries"
        assert frames.get(name) == crash_child.videos(n) * crash_child.FRAMES, name
    assert set(frames) <= set(entries)
    assert returned <= set(entries), f"returned imports missing: {sorted(returned - set(entries))}"
    batches = {
        r[0]: r[1:]
        for r in sql(
            db,
            "SELECT source_name, added, skipped_duplicates,"
            " (SELECT count(*) FROM entries e WHERE e.batch_id = b.id)"
            " FROM import_batches b WHERE source_name != 'base'",
        )
    }
    assert set(batches) == set(entries)
    for name, (added, skipped, present) in batches.items():
        assert (added, skipped, present) == (entries[name], 0, entries[name]), name
    # one 'add' change per imported entry: the change log commits with its import
    ((unlogged,),) = sql(
        db,
        "SELECT count(*) FROM entries e LEFT JOIN (SELECT entry_id, count(*) AS n FROM changes"
        " WHERE op = 'add' GROUP BY entry_id) c ON c.entry_id = e.id"
        " WHERE e.external_id NOT LIKE 'base-%' AND coalesce(c.n, 0) != 1",
    )
    assert unlogged == 0


def check_reports(
    store: Store, seed: int, calls: dict[str, tuple[int, int]], acked: dict[str, list[int]]
) -> None:
    """Every acknowledged report is there as written; the reports of one call are all
    there or none; each has its audit row."""
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT r.id, r.request_id, coalesce(a.n, 0) FROM reports r LEFT JOIN"
            " (SELECT report_id, count(*) AS n FROM audit GROUP BY report_id) a"
            " ON a.report_id = r.id ORDER BY r.id"
        ).fetchall()
    by_call: dict[str, list[int]] = {}
    for report_id, request_id, audits in rows:
        assert audits == 1, f"report {report_id} has {audits} audit rows"
        by_call.setdefault(request_id, []).append(report_id)
    for request_id, ids in by_call.items():
        run, step = calls[request_id]
        expected = crash_child.report_contents(seed, run, step)
        assert len(ids) == len(expected), f"call {request_id}: {len(ids)} of {len(expected)}"
        got = reports.list_page(store, ids=ids, limit=len(ids))[0][::-1]
        for rep, (verdict, hashes, matches) in zip(got, expected, strict=True):
            assert (rep.request_id, rep.verdict.value, rep.hashes) == (request_id, verdict, hashes)
            assert [m.to_json() | {"action": m.action.value} for m in rep.matches] == matches
    for request_id, ids in acked.items():
        assert by_call.get(request_id) == ids, f"acknowledged {request_id} {ids} lost"


def live_pairs(ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(entry id, code) rows as sorted opaque records: equal arrays = equal sets."""
    rows = np.concatenate([ids.astype(">i8").view(np.uint8).reshape(-1, 8), codes], axis=1)
    return np.sort(np.ascontiguousarray(rows).view(f"V{rows.shape[1]}").ravel())


def saved_versions(data_dir: Path) -> dict[SignalType, int]:
    return {
        s: int(read_manifest(data_dir / "search" / s.value)["store_version"]) for s in PERCEPTUAL
    }


def restart_and_check_index(data_dir: Path, tally: Tally) -> dict[SignalType, int]:
    """Load what is on disk as it is (a torn file fails here, before IndexSet.open could
    quietly rebuild), then restart as `hashsvc serve` does and compare with the store.
    Returns the versions found on disk."""
    search = data_dir / "search"
    on_disk = {}
    for s in PERCEPTUAL:
        loaded = BinaryIndex.load(search / s.value, s.bits)  # raises on any torn state
        on_disk[s] = int(loaded.manifest["store_version"])  # type: ignore[index]
    started = time.perf_counter()
    with Store.open(data_dir / crash_child.DB_NAME) as store:
        indexes = IndexSet.open(store, data_dir)
        if set(saved_versions(data_dir).values()) != {indexes.version}:
            indexes.save()
        tally.restarts.append(time.perf_counter() - started)
        for s in PERCEPTUAL:
            keys, codes = indexes.indexes[s].live_arrays()
            want = live_pairs(*store.live_codes(s))
            got = live_pairs(entry_ids(keys, slots_for(s)), codes)
            assert np.array_equal(got, want), f"{s} index differs from a rebuild"
    tally.leftovers = 0
    for s in PERCEPTUAL:
        named = read_manifest(search / s.value)["index_file"]
        tally.leftovers += sum(
            1 for p in (search / s.value).iterdir() if p.name not in (MANIFEST, named)
        )
    return on_disk


# -- the scenarios ----------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
def test_sigkill_during_list_imports(tmp_path: Path) -> None:
    seed = _seed()
    db = tmp_path / crash_child.DB_NAME
    setup_data_dir(tmp_path, BASE_N)
    tally = Tally("import")
    sizes: dict[str, int] = {}
    returned: set[str] = set()

    def after_kill(run: int, child: Child) -> str | None:
        steps = child.steps()
        for step, fields in steps.items():
            sizes[crash_child.label(run, step)] = IMPORT_N
            if "end" in fields:
                returned.add(crash_child.label(run, step))
        check_database(db)
        check_imports(db, sizes, returned)
        restart_and_check_index(tmp_path, tally)
        last = crash_child.label(run, max(steps))
        if last in returned:
            return None
        ((n,),) = sql(db, f"SELECT count(*) FROM entries WHERE external_id LIKE '{last}-%'")
        return "committed, not returned" if n else "rolled back"

    crash_loop("import", tmp_path, seed, 1.0, [str(IMPORT_N)], after_kill, tally)
    assert tally.mid >= 1


@pytest.mark.timeout(TIMEOUT)
def test_sigkill_during_index_save_and_compaction(tmp_path: Path) -> None:
    seed = _seed()
    db = tmp_path / crash_child.DB_NAME
    setup_data_dir(tmp_path, SAVE_BASE_N)
    tally = Tally("index save")
    sizes: dict[str, int] = {}
    before = saved_versions(tmp_path)
    steps_per_save: list[int] = []
    active = tally  # where restart figures go: the random kills' tally, then the named ones'

    def after_kill(run: int, child: Child) -> str | None:
        """Checks, then which indexes hold the interrupted save: old, new, or a mix (the
        signals are saved one after another; a mix is rebuilt on open)."""
        nonlocal before
        steps = child.steps()
        begun = {k: int(f["begin"][0]) for k, f in steps.items() if "begin" in f}
        for step in [*begun, max(begun) + 1]:  # the next churn import may have run too
            sizes[crash_child.label(run, step)] = CHURN_N
        if "end" in steps[0]:
            steps_per_save.append(int(steps[0]["end"][2]))
        check_database(db)
        check_imports(db, sizes, {crash_child.label(run, k) for k in begun})
        on_disk = restart_and_check_index(tmp_path, active)
        last = max(begun)
        done = [k for k in begun if "end" in steps[k]]
        for s in PERCEPTUAL:
            previous = begun[max(done)] if done else before[s]
            allowed = {begun[last]} if "end" in steps[last] else {previous, begun[last]}
            assert on_disk[s] in allowed, f"{s}: saved version {on_disk[s]}, not {allowed}"
        before = saved_versions(tmp_path)
        if "end" in steps[last]:
            return None
        new = [s.value for s in PERCEPTUAL if on_disk[s] == begun[last]]
        return "all new" if len(new) == len(PERCEPTUAL) else f"new: {','.join(new) or 'none'}"

    crash_loop("save", tmp_path, seed, 1.0, [], after_kill, tally)
    assert tally.mid >= 1

    # Named steps: a kill right before a chosen file-system step of the save (creating,
    # writing, fsyncing, hashing, renaming, unlinking: see crash_child._stop_at), each
    # step in the long run; in the short one the temp file's write and one at random.
    # Point 1 is the first index file's write: its empty temp file is on disk for sure.
    (points,) = set(steps_per_save)
    rng = random.Random(seed)
    chosen = range(points) if LONG else [1, rng.randrange(2, points)]
    named = active = Tally("index save, named steps")
    for i, point in enumerate(chosen):
        run = 1000 + i
        args = ["save", str(tmp_path), str(seed), str(run), str(point)]
        child = Child(args, tmp_path / "child.err")
        try:
            child.wait_for(f"at {point}")
        finally:
            child.kill()
        name = child.lines[-1][1].split()[2]
        named.mid += 1
        named.outcomes[f"{point:02d} {name}: {after_kill(run, child)}"] += 1
        if point == 1:
            assert name == "write_faiss_file" and temp_files(tmp_path), "no temp file left"
    print(named.summary())

    # Regression: a save killed mid-write leaves its temp file (as big as the index); a
    # later save removes it once it is stale, and leaves a concurrent save's fresh one.
    fresh = tmp_path / "search" / "pdq" / ".manifest.json.concurrent.tmp"
    fresh.touch()
    an_hour_ago = time.time() - persist.STALE_TMP_SECONDS - 60
    for path in temp_files(tmp_path) - {fresh}:
        os.utime(path, (an_hour_ago, an_hour_ago))
    with Store.open(db) as store:
        IndexSet.open(store, tmp_path).save()
    assert temp_files(tmp_path) == {fresh}


def temp_files(data_dir: Path) -> set[Path]:
    return {p for s in PERCEPTUAL for p in (data_dir / "search" / s.value).glob(".*.tmp")}


@pytest.mark.timeout(TIMEOUT)
def test_sigkill_during_report_writing(tmp_path: Path) -> None:
    seed = _seed()
    db = tmp_path / crash_child.DB_NAME
    setup_data_dir(tmp_path, BASE_N)
    tally = Tally("reports")
    calls: dict[str, tuple[int, int]] = {}
    acked: dict[str, list[int]] = {}

    def after_kill(run: int, child: Child) -> str | None:
        steps = child.steps()
        for step, fields in steps.items():
            request_id = crash_child.report_request_id(run, step)
            calls[request_id] = (run, step)
            if "end" in fields:
                acked[request_id] = [int(i) for i in fields["end"][1].split(",")]
        check_database(db)
        with Store.open(db) as store:
            check_reports(store, seed, calls, acked)
        restart_and_check_index(tmp_path, tally)
        tally.acknowledged = sum(len(v) for v in acked.values())
        last = crash_child.report_request_id(run, max(steps))
        if last in acked:
            return None
        ((n,),) = sql(db, f"SELECT count(*) FROM reports WHERE request_id = '{last}'")
        return "committed, not acknowledged" if n else "rolled back"

    crash_loop("report", tmp_path, seed, REPORT_SPAN, [], after_kill, tally)
    assert tally.mid >= 1 and len(acked) >= 1
