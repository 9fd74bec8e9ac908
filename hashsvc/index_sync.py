"""Keeps the in-memory search indexes in step with the store.

The store is the source of truth; the index files under `<data_dir>/search/<signal>/`
are a cache of it, stamped with the store's change-log sequence number they reflect.
On open, a cache that is behind is caught up from the change log (or rebuilt when far
behind or unreadable), so a list edit made by any process is visible to the next query
of every other process after one `refresh()`: the CLI refreshes on open, the API on a
short timer. New entries go to the index's delta segment and removals to tombstones, so
a refresh never rebuilds the main segment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashsvc.errors import SearchError
from hashsvc.search import BinaryIndex
from hashsvc.search import errors as search_errors
from hashsvc.search.index import INLINE_MAX_BYTES
from hashsvc.signals import Hash, SignalType
from hashsvc.store import MAX_VARIANTS, Store
from hashsvc.vpdq import MAX_FRAMES as MAX_VIDEO_FRAMES

log = logging.getLogger(__name__)

#: Signals with a Hamming index. vPDQ's holds the distinct frame PDQs of list videos.
PERCEPTUAL: tuple[SignalType, ...] = (SignalType.PDQ, SignalType.PHASH, SignalType.VPDQ)

#: Beyond this many pending changes a rebuild from the store is cheaper than replaying.
REBUILD_AFTER_CHANGES = 200_000

#: An entry can own several codes of one signal (its hash plus crop variants, or a
#: video's frames), while index ids are unique, so index key = entry_id * slots + slot
#: (slot 0 = the entry's own hash or first frame). `entry_ids()` maps results back.
KEY_SLOTS = MAX_VARIANTS + 1  # 64: the store refuses more variants than the slots hold
VIDEO_KEY_SLOTS = MAX_VIDEO_FRAMES


def slots_for(signal: SignalType) -> int:
    return VIDEO_KEY_SLOTS if signal is SignalType.VPDQ else KEY_SLOTS


def to_keys(entry_ids: np.ndarray, slots: int = KEY_SLOTS) -> np.ndarray:
    """Index keys for store rows (entry ids may repeat: each repeat gets the next slot)."""
    ids = np.asarray(entry_ids, dtype=np.int64)
    if len(ids) == 0:
        return ids
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    slot_ids = np.empty_like(ids)
    slot_ids[order] = np.arange(len(ids)) - run_start
    if slot_ids.max() >= slots:
        raise SearchError(f"an entry has more than {slots} codes of one signal type")
    return ids * slots + slot_ids


def entry_ids(keys: np.ndarray, slots: int = KEY_SLOTS) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) // slots


def _found(
    keys: np.ndarray, dists: np.ndarray, slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index hits as (entry ids, distances, slots)."""
    if not len(keys):  # most lookups: no arithmetic on empty arrays
        return keys, dists, keys
    return entry_ids(keys, slots), dists, keys % slots


@dataclass
class IndexSet:
    """One BinaryIndex per perceptual signal type, plus the store version it reflects."""

    store: Store
    directory: Path
    indexes: dict[SignalType, BinaryIndex] = field(default_factory=dict)
    version: int = 0
    refreshed_at: float = 0.0
    loaded: bool = False
    #: BinaryIndex's memory bound for inline MIH tables (Settings.index_inline_max_mb)
    inline_max_bytes: int = INLINE_MAX_BYTES

    @classmethod
    def open(
        cls, store: Store, data_dir: Path, inline_max_bytes: int = INLINE_MAX_BYTES
    ) -> IndexSet:
        """Load the saved indexes (or build them) and bring them up to date."""
        self = cls(
            store=store, directory=Path(data_dir) / "search", inline_max_bytes=inline_max_bytes
        )
        versions = []
        for signal in PERCEPTUAL:
            index, version = self._load_one(signal)
            self.indexes[signal] = index
            versions.append(version)
        if len(set(versions)) != 1:
            # saved at different moments: rebuild the laggards from the store
            target = store.version()
            for signal, version in zip(PERCEPTUAL, versions, strict=True):
                if version != target:
                    self.indexes[signal] = self._build(signal)
            self.version = target
        else:
            self.version = versions[0]
        self.refreshed_at = time.time()
        self.refresh()
        self.loaded = True
        return self

    def _load_one(self, signal: SignalType) -> tuple[BinaryIndex, int]:
        path = self.directory / signal.value
        if path.exists():
            try:
                index = BinaryIndex.load(path, signal.bits, inline_max_bytes=self.inline_max_bytes)
                version = int((index.manifest or {}).get("store_version") or 0)
                if self.store.version() - version <= REBUILD_AFTER_CHANGES:
                    return index, version
            except (search_errors.SearchError, OSError, ValueError) as e:
                log.warning("index %s unreadable (%s); rebuilding from the store", path, e)
        version = self.store.version()
        return self._build(signal), version

    def _build(self, signal: SignalType) -> BinaryIndex:
        ids, codes = self.store.live_codes(signal)
        index = BinaryIndex(signal.bits, inline_max_bytes=self.inline_max_bytes)
        index.add(to_keys(ids, slots_for(signal)), codes)
        index.compact()
        return index

    def search(self, query: Hash, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(entry ids, distances, slots) within `radius`; an entry may appear once per
        code it owns. Slot 0 is the entry's own hash, >0 an enrollment variant (crop)."""
        keys, dists = self.indexes[query.signal].search(query.codes(), radius)
        return _found(keys, dists, slots_for(query.signal))

    def rebuild(self) -> None:
        """Rebuild every index from the store (after a big import, or on demand)."""
        version = self.store.version()
        self.indexes = {s: self._build(s) for s in PERCEPTUAL}
        self.version = version
        self.refreshed_at = time.time()

    def search_batch(
        self, queries: list[Hash], radius: int, *, signal: SignalType | None = None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`search` for many queries of one signal type in one index pass. `signal`
        names the index when it is not the queries' own (video frames are PDQ hashes
        searched in the vPDQ index)."""
        if not queries:
            return []
        signal = signal or queries[0].signal
        index = self.indexes[signal]
        codes = np.stack([q.codes() for q in queries])
        lims, keys, dists = index.search_batch(codes, radius)
        ids, slots = _found(keys, dists, slots_for(signal))[::2]
        bounds = lims.tolist()
        return [
            (ids[a:b], dists[a:b], slots[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def any_within(self, signal: SignalType, codes: np.ndarray, radius: int) -> np.ndarray:
        """Per row of `codes` (uint8, one code per row), whether any code in `signal`'s
        index lies within `radius`: one batch pass, no per-query arrays."""
        lims, _, _ = self.indexes[signal].search_batch(codes, radius)
        return np.diff(lims) > 0

    def refresh(self) -> int:
        """Apply store changes since `version`; returns how many were applied."""
        now = time.time()
        target = self.store.version()
        pending = target - self.version
        if pending > REBUILD_AFTER_CHANGES:
            self.rebuild()
            return pending
        touched: set[int] = set()
        if pending > 0:
            for change in self.store.changes_since(self.version):
                if change.entry_id is not None:
                    touched.add(change.entry_id)
        # timed disables that lapsed since the last refresh write no change row
        touched.update(self.store.disables_expired(self.refreshed_at, now))
        if touched:
            ids = np.fromiter(sorted(touched), dtype=np.int64, count=len(touched))
            for signal, index in self.indexes.items():
                slots = slots_for(signal)
                index.remove(index.ids_in_ranges(ids * slots, (ids + 1) * slots))
                live_ids, codes = self.store.live_codes(signal, entry_ids=ids.tolist())
                if len(live_ids):
                    index.add(to_keys(live_ids, slots), codes)
        self.version = target
        self.refreshed_at = now
        return len(touched)

    def save(self) -> None:
        """Persist every index (atomic per file) stamped with the store version."""
        for signal, index in self.indexes.items():
            index.compact()
            index.save(self.directory / signal.value, store_version=self.version)

    def stale(self) -> bool:
        """True when the store has moved on since the last refresh."""
        try:
            return self.store.version() != self.version
        except Exception as e:  # a store that cannot answer makes us not ready
            raise SearchError(f"cannot read the store version: {e}") from e

    def sizes(self) -> dict[str, int]:
        return {s.value: len(ix) for s, ix in self.indexes.items()}
