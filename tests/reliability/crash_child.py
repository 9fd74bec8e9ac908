"""The process that test_crash.py SIGKILLs: one operation in a loop, with its progress on stdout.

Run as ``python -m tests.reliability.crash_child MODE DATA_DIR SEED RUN``. MODE is

* ``import``: one list import (`Store.import_entries`: image hashes, and videos with their
  frames) per step, each a distinguishable batch;
* ``save``: change the store a little, `IndexSet.refresh`, then `IndexSet.save` (which
  compacts every index and writes it) per step; with a 5th argument P, the P-th
  file-system step of the saves (see `_stop_at`) halts so the parent kills it right there;
* ``report``: one `reports.create_reports` call (1-3 reports in one transaction) per step.

Protocol, one line per event, flushed: ``ready`` once set up, ``begin K <info>`` right before
step K's operation, ``end K <seconds> <info>`` only after it returned. So "begin" without
"end" means the kill landed inside the operation (or between its return and the print),
and an "end" line is an acknowledgement: for reports, exactly what an API response is.

The data each step writes is a pure function of (SEED, RUN, K), so the parent can check it
without trusting anything the child said beyond "this step returned".
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashsvc.errors import NotFound
from hashsvc.hashlist import ListEntry
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Action, ImportResult, Store
from hashsvc.vpdq import Frame

LIST = "crash"
CHURN_N = 300  # per signal, what the save child imports before each save
DB_NAME = "hashsvc.db"  # Settings.db_path's file name, so a restart finds the same files


def label(run: int, step: int) -> str:
    """An import batch's label: its source_name and the prefix of its entries' external ids."""
    return f"r{run}s{step}"


FRAMES = 8  # per video entry


def videos(n: int) -> int:
    """How many vPDQ (video) entries a batch of size n carries besides its 2n hashes."""
    return max(1, n // 1000)


@dataclass(frozen=True)
class Batch:
    """One import: n PDQ + n pHash entries and `videos(n)` video entries with their
    frames (which must commit with them), all random, so new."""

    entries: list[ListEntry]
    frames: dict[Hash, list[Frame]]

    def import_into(self, store: Store, source_name: str) -> ImportResult:
        return store.import_entries(
            LIST, self.entries, source_name=source_name, file_sha256="", frames=self.frames
        )


def make_batch(seed: int, run: int, step: int, n: int, tag: str | None = None) -> Batch:
    """Batch number (run, step); every entry's external id starts with its label (or
    `tag`), so the parent counts a batch without trusting its batch row."""
    rng = np.random.default_rng([seed, abs(run), step])
    pdq = rng.bytes(32 * n)
    phash = rng.bytes(8 * n)
    tag = tag or label(run, step)
    entries = [
        ListEntry(Hash(SignalType.PDQ, pdq[i * 32 : (i + 1) * 32]), external_id=f"{tag}-{i}")
        for i in range(n)
    ] + [
        ListEntry(Hash(SignalType.PHASH, phash[i * 8 : (i + 1) * 8]), external_id=f"{tag}-p{i}")
        for i in range(n)
    ]
    frames = {}
    for v in range(videos(n)):
        video = Hash(SignalType.VPDQ, rng.bytes(32))  # stands for the frame lines' digest
        frames[video] = [
            Frame(k, int(rng.integers(50, 101)), Hash(SignalType.PDQ, rng.bytes(32)), k / 2)
            for k in range(FRAMES)
        ]
        entries.append(ListEntry(video, external_id=f"{tag}-v{v}"))
    return Batch(entries, frames)


def report_request_id(run: int, step: int) -> str:
    return f"crash-{run}-{step}"


def report_contents(seed: int, run: int, step: int) -> list[tuple[str, dict[str, Any], list]]:
    """What step K's reports hold: (verdict, hashes JSON, matches JSON) per report, as
    `reports.get_report` gives them back. 1-3 reports per step, written in one call."""
    rng = np.random.default_rng([seed, run, step, 1])
    out = []
    for j in range(int(rng.integers(1, 4))):
        verdict = "block" if rng.integers(2) else "report"
        hashes = {
            "pdq": rng.bytes(32).hex(),
            "pdq_quality": int(rng.integers(50, 101)),
            "phash": rng.bytes(8).hex(),
            "md5": rng.bytes(16).hex(),
            "decode_path": "reference",
        }
        matches = [
            {
                "list": LIST,
                "entry_id": int(rng.integers(1, 10**6)),
                "signal_type": "pdq",
                "distance": int(rng.integers(0, 32)),
                "action": verdict,
                "category": f"c{j}",
                "external_id": f"{run}-{step}-{j}",
            }
        ]
        out.append((verdict, hashes, matches))
    return out


def _import_loop(store: Store, seed: int, run: int, n: int) -> None:
    step = 0
    while True:
        batch = make_batch(seed, run, step, n)
        print(f"begin {step} {label(run, step)}", flush=True)
        t = time.perf_counter()
        result = batch.import_into(store, label(run, step))
        print(f"end {step} {time.perf_counter() - t:.6f} {result.batch_id}", flush=True)
        step += 1


def _churn(store: Store, rng: np.random.Generator, seed: int, run: int, step: int) -> None:
    """A little of everything the index must follow: adds, disables, re-enables, removes,
    and crop variants (an entry with several codes of one signal). Only the base entries
    are disabled, removed or given variants, so every import batch stays countable."""
    make_batch(seed, run, step, CHURN_N).import_into(store, label(run, step))
    with store.reading() as conn:
        base = "SELECT id FROM entries WHERE external_id LIKE 'base-%' AND "
        live = [r[0] for r in conn.execute(base + "enabled = 1")]
        off = [r[0] for r in conn.execute(base + "enabled = 0")]
        pdq = [r[0] for r in conn.execute(base + "signal_type = 'pdq'")]
    picks = rng.choice(len(live), size=min(len(live), 50), replace=False)
    for i in picks[:20]:
        store.set_enabled(live[i], False)
    for i in picks[20:40]:
        store.remove_entry(live[i])
    for i in rng.choice(len(off), size=min(len(off), 10), replace=False):
        store.set_enabled(off[i], True)
    for i in rng.choice(len(pdq), size=min(len(pdq), 5), replace=False):
        with contextlib.suppress(NotFound):  # removed just above: nothing to attach to
            store.add_variants(pdq[i], [(Hash(SignalType.PDQ, rng.bytes(32)), "crop")])


#: The file-system steps of `persist.save_arrays` that ``stop_at`` can halt before.
FS_STEPS = ("_create_private", "write_faiss_file", "_sha256_file")


def _stop_at(point: int) -> list[int]:
    """Count the file-system steps of every index save (creating, writing, fsyncing,
    hashing, renaming, unlinking files); at step number `point` print ``at N name`` and
    wait to be killed, so the kill lands exactly between two steps. Test-side patching:
    the production code has no hook. Returns the live counter."""
    import os  # noqa: PLC0415
    import pathlib  # noqa: PLC0415

    from hashsvc.search import persist  # noqa: PLC0415

    count = [0]

    def wrap(name: str, fn: Any) -> Any:
        def halting(*args: Any, **kwargs: Any) -> Any:
            if count[0] == point:
                print(f"at {point} {name}", flush=True)
                time.sleep(3600)
            count[0] += 1
            return fn(*args, **kwargs)

        return halting

    for name in FS_STEPS:
        setattr(persist, name, wrap(name, getattr(persist, name)))
    os.fsync = wrap("os.fsync", os.fsync)  # type: ignore[assignment]
    os.replace = wrap("os.replace", os.replace)  # type: ignore[assignment]
    pathlib.Path.unlink = wrap("unlink", pathlib.Path.unlink)  # type: ignore[method-assign]
    return count


def _save_loop(store: Store, data_dir: Path, seed: int, run: int, point: int) -> None:
    from hashsvc.index_sync import IndexSet  # noqa: PLC0415  (only this mode needs it)
    from hashsvc.search import persist  # noqa: PLC0415

    persist.faiss_module()  # the first save would import FAISS inside step 0 otherwise
    indexes = IndexSet.open(store, data_dir)
    rng = np.random.default_rng([seed, run, 2])
    count = _stop_at(point)  # point -1: count only, so the parent learns how many there are
    print("ready", flush=True)
    step = 0
    while True:
        _churn(store, rng, seed, run, step)
        indexes.refresh()
        print(f"begin {step} {indexes.version}", flush=True)
        t = time.perf_counter()
        indexes.save()
        took = time.perf_counter() - t
        print(f"end {step} {took:.6f} {indexes.version} {count[0]}", flush=True)
        step += 1


def _report_loop(store: Store, seed: int, run: int) -> None:
    from hashsvc import reports  # noqa: PLC0415
    from hashsvc.hashing import MediaHashes  # noqa: PLC0415
    from hashsvc.matcher import Match, MatchResult  # noqa: PLC0415
    from hashsvc.policy import Verdict  # noqa: PLC0415

    print("ready", flush=True)
    step = 0
    while True:
        items = []
        for verdict, hashes, matches in report_contents(seed, run, step):
            found = tuple(
                Match(
                    list_name=m["list"],
                    entry_id=m["entry_id"],
                    signal=SignalType(m["signal_type"]),
                    distance=m["distance"],
                    action=Action(m["action"]),
                    category=m["category"],
                    external_id=m["external_id"],
                )  # fmt: skip
                for m in matches
            )
            result = MatchResult(Verdict(verdict), found, MediaHashes())
            items.append(reports.NewReport(result, hashes, "hashes"))
        print(f"begin {step}", flush=True)
        t = time.perf_counter()
        ids = reports.create_reports(
            store, items, key_id=None, request_id=report_request_id(run, step), action="match"
        )
        took = time.perf_counter() - t
        print(f"end {step} {took:.6f} {','.join(map(str, ids))}", flush=True)
        step += 1


def main(argv: list[str]) -> None:
    mode, data_dir, seed, run = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    with Store.open(data_dir / DB_NAME) as store:
        if mode == "import":
            print("ready", flush=True)
            _import_loop(store, seed, run, int(argv[4]))
        elif mode == "save":
            _save_loop(store, data_dir, seed, run, int(argv[4]) if len(argv) > 4 else -1)
        elif mode == "report":
            _report_loop(store, seed, run)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
