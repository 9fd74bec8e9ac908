"""``BinaryIndex``: exact Hamming range search over PDQ-256 / pHash-64 codes.

Structure (all numpy, no FAISS at query time):

* **main segment**: immutable codes (``uint64``, rows sorted by id), ids, a tombstone mask,
  and, when worth it, multi-index-hashing tables (``mih.py``). Sorted ids make the id->row
  map a ``searchsorted`` (no 10M-entry dict, no extra memory).
* **delta**: entries added after the main segment was built; scanned brute force, so an
  ``add`` is searchable immediately without any rebuild. Capped at ``max_delta`` entries;
  past that ``add`` compacts.
* **tombstones**: ``remove`` flips a bit per row (main or delta); every search path checks it
  for rows within the radius, so removed ids are never returned. ``compact`` drops them.

Path choice (see ``_use_mih`` and bench/RESULTS-search.md): MIH tables are built for a
main segment of at least ``MIH_MIN_ROWS`` rows (8,192 PDQ / 65,536 pHash); a query uses
them when the cost model (``mih.estimate_mih_ns`` vs ``flat.estimate_scan_ns``) says probes
+ candidate checks are cheaper than a scan of the segment. Measured here: PDQ r=31, MIH
wins from ~8,000 rows (22 vs 28 us) to 10M (~0.4 ms vs ~40 ms); at larger radii the
probe count explodes and the scan wins again (r >= 56 at 1M, r >= 48 at 128k), which the
model gets right. pHash r=10: we expected the sequential scan to win (it runs at memory
bandwidth and FAISS's multi-hash index loses to it), but our MIH (3 tables of 21-22 bits)
measured 0.19 vs 0.76 ms at 1M and 0.38 vs 4.2 ms at 4M, so ``auto`` uses MIH for pHash
too, for ~2x the codes' memory in tables; ``strategy="flat"`` keeps the pure scan.

Table layout (mih.py): from ``INLINE_MIN_ROWS`` rows (750k PDQ codes; pHash as soon as it
has tables) and within ``INLINE_MAX_BYTES``, the tables keep code prefixes inline in their
buckets: ~2x faster at 1M than the rows layout for ~3x its table memory. Above the bound
(10M PDQ) they keep rows.

Threading: searches are lock-free reads of an immutable state snapshot (main segment +
delta view), so any number of threads may search concurrently with each other and with
mutations; mutations are serialised by a lock. ``search_batch(threads=k)`` runs query
chunks on k Python threads: the numba kernels release the GIL. We do not use numba's
``prange``: its threading layer (OpenMP or workqueue; no TBB installed) fights FAISS's
OpenMP in the same process (measured 0.84 -> 140 ms, see shared/notes), a ``prange``
single query took ~24 ms whenever the other core was busy, and the workqueue layer is not
safe to enter from several threads at once, which a web service does.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import flat, mih
from .errors import DuplicateIdError, InvalidInputError

Strategy = Literal["auto", "flat", "mih"]
Layout = Literal["auto", "inline", "rows"]

#: Below this many rows a segment gets no MIH tables: measured at r=31, a scan of 2,000 PDQ
#: codes beats MIH (14 vs 17 us) and MIH wins from ~8,000 (22 vs 28 us); pHash r=10: MIH
#: 0.064 vs scan 0.095 ms at 100k (tables cost more memory than codes there: keep a margin).
MIH_MIN_ROWS = {256: 8192, 64: 65536}
#: Queries (up to 64 at once) over at most this many rows, with no MIH tables, are
#: answered with numpy (`np.bitwise_count`, ~0.1 ms per 8k PDQ rows): a CLI call on a
#: small list then never loads the compiled kernels, which costs ~0.5 s per process.
NUMPY_MAX_ROWS = 8192
#: Default delta cap. Every query scans the delta: 32,768 PDQ codes (1 MB) cost ~0.1 ms
#: here, a quarter of a 10M MIH query; a smaller cap would rebuild 10M-entry tables (~5 s)
#: more often.
DEFAULT_MAX_DELTA = 32768
#: ``layout="auto"`` builds inline MIH tables (mih.py) when their row numbers and inline
#: codes fit in this many bytes: PDQ up to ~1.8M codes (320 MB at 1M, against ~100 MB for
#: the rows layout), pHash up to ~14M. Larger segments keep the rows layout, which is what
#: keeps 10M PDQ within 1.5 GB. The bound is per index; a compaction briefly holds the old
#: and the new tables.
INLINE_MAX_BYTES = 512 << 20
#: ... and from this many rows. PDQ, batch of 200 queries at r=31, rows vs inline us/query
#: (uniform; clustered): 250k 84-93 vs 59-63; 87-124 vs 127-190. 500k 98 vs 57; 151-211 vs
#: 233-279. 1M 145-149 vs 72; 339-448 vs 292-407. Up to ~500k the rows layout's random
#: fetches still hit cache often enough that near-duplicate clusters make inline slower;
#: by 1M inline wins on both, and 750k sits between the two measured points.
#: pHash (all 64 bits inline: the prefix filter is the exact distance) was faster inline at
#: every size measured.
INLINE_MIN_ROWS = {256: 750_000, 64: 0}


def _default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(eq=False)
class _Main:
    """Immutable (except tombstones) main segment."""

    ids: np.ndarray  # int64, strictly increasing
    codes: np.ndarray  # uint64 (n, W)
    dead: np.ndarray  # bool (n,)
    tables: mih.MihTables | None
    n_dead: int = 0

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class _DeltaView:
    """A published prefix of the delta arrays (appends only write past ``n``)."""

    codes: np.ndarray  # uint64 (cap, W)
    ids: np.ndarray  # int64 (cap,)
    dead: np.ndarray  # bool (cap,)
    n: int


@dataclass(frozen=True, eq=False)
class _State:
    main: _Main
    delta: _DeltaView


class BinaryIndex:
    """Exact range search (Hamming distance ``<= radius``) over binary codes with ids.

    Codes are ``uint8`` rows of ``bits // 8`` bytes in ``np.packbits`` byte order (the same
    layout as FAISS binary codes). Ids are ``int64``, unique among live entries.
    """

    def __init__(
        self,
        bits: int,
        *,
        strategy: Strategy = "auto",
        num_tables: int | None = None,
        max_delta: int = DEFAULT_MAX_DELTA,
        build_threads: int | None = None,
        layout: Layout = "auto",
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> None:
        """
        Args:
            bits: 64 (pHash) or 256 (PDQ).
            strategy: ``"auto"`` picks MIH or scan per segment and query (see module doc);
                ``"flat"`` never builds tables; ``"mih"`` always builds them for a
                non-empty main segment and probes them whenever the probe enumeration is
                bounded (``mih.MAX_PROBES``; e.g. not at radius = bits) (tests, benchmarks).
            num_tables: force the number of MIH substrings (default ~bits/log2(n)).
            max_delta: ``add`` compacts once the delta would exceed this many entries.
            build_threads: threads for building MIH tables (default: up to 2).
            layout: MIH bucket layout (mih.py): ``"auto"`` takes ``"inline"`` when it
                fits in ``inline_max_bytes``, else ``"rows"``; the others force one.
            inline_max_bytes: the memory bound of ``layout="auto"``.
        """
        if bits not in (64, 256):
            raise InvalidInputError(f"bits must be 64 or 256, got {bits!r}")
        if strategy not in ("auto", "flat", "mih"):
            raise InvalidInputError(f"unknown strategy {strategy!r}")
        if layout not in ("auto", "inline", "rows"):
            raise InvalidInputError(f"unknown layout {layout!r}")
        if isinstance(inline_max_bytes, bool) or not isinstance(
            inline_max_bytes, (int, np.integer)
        ):
            raise InvalidInputError("inline_max_bytes must be an int")
        if inline_max_bytes < 0:
            raise InvalidInputError("inline_max_bytes must be >= 0")
        if num_tables is not None:
            mih.split_bits(bits, num_tables)  # validates
        if max_delta < 0:
            raise InvalidInputError("max_delta must be >= 0")
        self.bits = bits
        self.code_size = bits // 8
        self.words = bits // 64
        self.strategy: Strategy = strategy
        self.num_tables = num_tables
        self.max_delta = max_delta
        self.layout: Layout = layout
        self.inline_max_bytes = inline_max_bytes
        self.build_threads = build_threads or _default_threads()
        self._lock = threading.RLock()
        self._dpos: dict[int, int] = {}  # delta id -> delta row (live only)
        self.manifest: dict | None = None  # set by load()
        self._state = _State(
            self._make_main(np.empty(0, np.int64), self._empty_codes(0)), self._empty_delta(0)
        )

    # ------------------------------------------------------------------ helpers

    def _empty_codes(self, n: int) -> np.ndarray:
        return np.zeros((n, self.words), dtype=np.uint64)

    def _empty_delta(self, cap: int) -> _DeltaView:
        return _DeltaView(self._empty_codes(cap), np.zeros(cap, np.int64), np.zeros(cap, bool), 0)

    def _wants_tables(self, n: int) -> bool:
        if n == 0 or self.strategy == "flat":
            return False
        return self.strategy == "mih" or n >= MIH_MIN_ROWS[self.bits]

    def _wants_inline(self, n: int) -> bool:
        if self.layout != "auto":
            return self.layout == "inline"
        if n < INLINE_MIN_ROWS[self.bits]:
            return False
        m = self.num_tables or mih.choose_num_tables(n, self.bits, inline=True)
        return mih.inline_nbytes(n, self.bits, m) <= self.inline_max_bytes

    def _make_main(self, ids: np.ndarray, codes: np.ndarray) -> _Main:
        """Main segment over id-sorted ``ids``/``codes`` (takes ownership)."""
        tables = None
        n = len(ids)
        if self._wants_tables(n):
            inline = self._wants_inline(n)
            m = self.num_tables or mih.choose_num_tables(n, self.bits, inline)
            tables = mih.build_tables(
                codes, self.bits, m, threads=self.build_threads, inline=inline
            )
        return _Main(ids=ids, codes=codes, dead=np.zeros(n, bool), tables=tables)

    def _check_codes(self, codes: np.ndarray, what: str = "codes") -> np.ndarray:
        """Validate ``(n, bits//8)`` uint8 codes; return an owned, aligned uint64 copy."""
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise InvalidInputError(
                f"{what} must be uint8 of shape (n, {self.code_size}), "
                f"got {codes.dtype} {codes.shape}"
            )
        out = np.empty((codes.shape[0], self.words), dtype=np.uint64)
        out.view(np.uint8).reshape(codes.shape)[...] = codes
        return out

    def _check_query(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query)
        if q.dtype != np.uint8 or q.shape not in ((self.code_size,), (1, self.code_size)):
            raise InvalidInputError(
                f"query must be uint8 of shape ({self.code_size},), got {q.dtype} {q.shape}"
            )
        return np.frombuffer(q.tobytes(), dtype=np.uint64).copy()

    def _check_radius(self, radius: int) -> int:
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise InvalidInputError(f"radius must be an int, got {type(radius).__name__}")
        if radius < 0:
            raise InvalidInputError(f"radius must be >= 0, got {radius}")
        return int(min(radius, self.bits))

    @staticmethod
    def _check_ids(ids: np.ndarray) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise InvalidInputError(f"ids must be a 1-D integer array, got {a.dtype} {a.shape}")
        if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
            raise InvalidInputError("ids must fit in int64")
        return a.astype(np.int64, copy=False)

    def _use_mih(self, main: _Main, radius: int) -> bool:
        t = main.tables
        if t is None:
            return False
        if not t.feasible(radius):
            return False
        if self.strategy == "mih":
            return True
        return t.estimate_ns(radius) < flat.estimate_scan_ns(main.n, self.words)

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        s = self._state
        return s.main.n - s.main.n_dead + len(self._dpos)

    @property
    def delta_size(self) -> int:
        """Entries (live or removed) in the delta segment, i.e. not yet compacted."""
        return self._state.delta.n

    @property
    def uses_mih(self) -> bool:
        """Whether the main segment currently has MIH tables."""
        return self._state.main.tables is not None

    def path_for(self, radius: int) -> str:
        """``"mih"`` or ``"flat"``: the path a query at ``radius`` takes on the main segment."""
        return "mih" if self._use_mih(self._state.main, self._check_radius(radius)) else "flat"

    def memory_bytes(self) -> int:
        """Bytes held by codes, ids, tombstones, delta and tables."""
        s = self._state
        m = s.main
        b = m.codes.nbytes + m.ids.nbytes + m.dead.nbytes
        b += s.delta.codes.nbytes + s.delta.ids.nbytes + s.delta.dead.nbytes
        if m.tables is not None:
            b += m.tables.nbytes
        return int(b)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add entries; searchable as soon as this returns.

        The first add into an empty index builds the main segment directly (bulk load);
        later adds go to the delta, which is compacted into the main segment once it would
        exceed ``max_delta``. Raises ``DuplicateIdError`` if an id is already live or
        repeated in ``ids``; nothing is added then. An id removed earlier may be added again
        (it is a new entry).
        """
        ids = self._check_ids(ids)
        c64 = self._check_codes(codes)
        if len(ids) != len(c64):
            raise InvalidInputError(f"{len(ids)} ids for {len(c64)} codes")
        if len(ids) == 0:
            return
        order = np.argsort(ids, kind="stable")
        sids = ids[order]
        if np.any(sids[1:] == sids[:-1]):
            dup = sids[1:][sids[1:] == sids[:-1]][0]
            raise DuplicateIdError(f"id {int(dup)} appears more than once in this add")
        with self._lock:
            s = self._state
            live = self._live_main_rows(s.main, sids)
            if live.size:
                raise DuplicateIdError(f"id {int(s.main.ids[live[0]])} is already in the index")
            if self._dpos:
                d = s.delta
                dlive = d.ids[: d.n][~d.dead[: d.n]]
                clash = sids[np.isin(sids, dlive)]
                if clash.size:
                    raise DuplicateIdError(f"id {int(clash[0])} is already in the index")
            if s.main.n == 0 and s.delta.n == 0:
                if not np.array_equal(order, np.arange(len(order))):
                    c64 = c64[order]
                self._state = _State(self._make_main(sids.copy(), c64), self._empty_delta(0))
                return
            if s.delta.n + len(ids) > self.max_delta:
                self._compact_locked(extra=(sids, c64[order]))
                return
            self._append_delta(ids, c64)

    def _append_delta(self, ids: np.ndarray, c64: np.ndarray) -> None:
        d = self._state.delta
        n0, k = d.n, len(ids)
        if n0 + k > len(d.ids):
            cap = max(64, 2 * (n0 + k))
            nd = self._empty_delta(cap)
            nd.codes[:n0] = d.codes[:n0]
            nd.ids[:n0] = d.ids[:n0]
            nd.dead[:n0] = d.dead[:n0]
            d = nd
        d.codes[n0 : n0 + k] = c64
        d.ids[n0 : n0 + k] = ids
        d.dead[n0 : n0 + k] = False
        for j, i in enumerate(ids.tolist()):
            self._dpos[i] = n0 + j
        # publish: searches see either the old prefix or the new one, never a torn row
        self._state = _State(self._state.main, _DeltaView(d.codes, d.ids, d.dead, n0 + k))

    @staticmethod
    def _live_main_rows(main: _Main, sorted_ids: np.ndarray) -> np.ndarray:
        """Rows of the main segment holding live entries with these (sorted) ids."""
        if main.n == 0 or len(sorted_ids) == 0:
            return np.empty(0, np.int64)
        pos = np.searchsorted(main.ids, sorted_ids)
        pos = np.minimum(pos, main.n - 1)
        hit = (main.ids[pos] == sorted_ids) & ~main.dead[pos]
        return pos[hit]

    def remove(self, ids: np.ndarray) -> None:
        """Tombstone these ids; unknown or already removed ids are ignored (idempotent)."""
        ids = self._check_ids(ids)
        if len(ids) == 0:
            return
        with self._lock:
            s = self._state
            rows = self._live_main_rows(s.main, np.sort(ids))
            if rows.size:
                s.main.dead[rows] = True
                s.main.n_dead += int(rows.size)
            if self._dpos:
                for i in ids.tolist():
                    r = self._dpos.pop(i, None)
                    if r is not None:
                        s.delta.dead[r] = True

    def ids_in_ranges(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Live ids in any of the half-open ranges ``[lo[i], hi[i])`` (ranges must not
        overlap): lets a caller that packs several codes under one owner in an id range
        remove them all without knowing how many there are."""
        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        with self._lock:
            s = self._state
            m, d = s.main, s.delta
            parts = []
            if m.n and len(lo):
                starts = np.searchsorted(m.ids, lo, side="left")
                ends = np.searchsorted(m.ids, hi, side="left")
                lens = ends - starts
                total = int(lens.sum())
                if total:  # every row of every range, without a Python loop
                    offsets = starts - np.cumsum(np.r_[0, lens[:-1]])
                    rows = np.repeat(offsets, lens) + np.arange(total)
                    parts.append(m.ids[rows[~m.dead[rows]]])
            if d.n and len(lo):
                dids = d.ids[: d.n][~d.dead[: d.n]]
                pos = np.searchsorted(lo, dids, side="right") - 1
                ok = pos >= 0
                ok[ok] &= dids[ok] < hi[pos[ok]]
                parts.append(dids[ok])
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def compact(self) -> None:
        """Merge the delta and drop tombstones: rebuild the main segment (and its tables)."""
        with self._lock:
            self._compact_locked()

    def _compact_locked(self, extra: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        s = self._state
        m, d = s.main, s.delta
        if d.n == 0 and m.n_dead == 0 and extra is None:
            return
        keep = ~m.dead
        mids = m.ids[keep] if m.n_dead else m.ids
        mcodes = m.codes[keep] if m.n_dead else m.codes
        dl = ~d.dead[: d.n]
        dids = d.ids[: d.n][dl]
        dcodes = d.codes[: d.n][dl]
        if extra is not None:
            dids = np.concatenate([dids, extra[0]])
            dcodes = np.concatenate([dcodes, extra[1]])
        if len(dids):
            o = np.argsort(dids, kind="stable")
            dids, dcodes = dids[o], dcodes[o]
            # merge two sorted runs without a full sort: final slots of the delta rows
            pos = np.searchsorted(mids, dids) + np.arange(len(dids))
            total = len(mids) + len(dids)
            is_main = np.ones(total, bool)
            is_main[pos] = False
            nids = np.empty(total, np.int64)
            ncodes = np.empty((total, self.words), np.uint64)
            nids[is_main] = mids
            nids[pos] = dids
            ncodes[is_main] = mcodes
            ncodes[pos] = dcodes
        else:
            nids = mids.copy() if mids is m.ids else mids
            ncodes = mcodes
        self._dpos = {}
        self._state = _State(self._make_main(nids, ncodes), self._empty_delta(0))

    # ------------------------------------------------------------------ search

    def search(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every live entry within ``radius`` (inclusive) of ``query``.

        Returns ``(ids int64, distances int32)`` in no particular order. Runs on the
        calling thread only.
        """
        q = self._check_query(query)
        radius = self._check_radius(radius)
        s = self._state
        if _numpy_suits(s):
            return _numpy_search(s, q, radius)
        use_mih = s.main.n > 0 and self._use_mih(s.main, radius)
        _, ids, dists = self._batch_chunk(s, q.reshape(1, self.words), radius, use_mih)
        return ids, dists

    def search_batch(
        self, queries: np.ndarray, radius: int, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range search for many queries; CSR result like FAISS ``range_search``.

        Returns ``(lims, ids, distances)``: query j's hits are ``ids[lims[j]:lims[j+1]]``.
        ``threads > 1`` splits the queries into chunks run concurrently (GIL released).
        """
        Q = self._check_codes(queries, "queries")
        radius = self._check_radius(radius)
        if threads < 1:
            raise InvalidInputError("threads must be >= 1")
        s = self._state
        nq = len(Q)
        if nq == 0:
            return np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
        if _numpy_suits(s) and nq <= 64:
            found = [_numpy_search(s, q, radius) for q in Q]
            lims = np.zeros(nq + 1, np.int64)
            lims[1:] = np.cumsum([len(i) for i, _ in found])
            return (lims, np.concatenate([i for i, _ in found]),
                    np.concatenate([d for _, d in found]))  # fmt: skip
        use_mih = s.main.n > 0 and self._use_mih(s.main, radius)
        nchunks = 1 if threads == 1 else min(nq, threads * 4)
        if nchunks > threads and nq // nchunks < mih.SWEEP_MIN_QUERIES <= nq // threads:
            nchunks = threads  # chunks large enough for the table-major sweep (sweep.py)
        bounds = np.linspace(0, nq, nchunks + 1).astype(np.int64)
        chunks = [Q[bounds[i] : bounds[i + 1]] for i in range(nchunks)]
        if nchunks == 1:
            parts = [self._batch_chunk(s, chunks[0], radius, use_mih)]
        else:
            with ThreadPoolExecutor(max_workers=threads) as ex:
                parts = list(ex.map(lambda c: self._batch_chunk(s, c, radius, use_mih), chunks))
        if len(parts) == 1:
            return parts[0]
        lims = np.zeros(nq + 1, np.int64)
        pos, acc = 0, 0
        for lm, _, _ in parts:
            k = len(lm) - 1
            lims[pos + 1 : pos + k + 1] = lm[1:] + acc
            pos += k
            acc += int(lm[-1])
        return (lims, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    def _batch_chunk(
        self, s: _State, Q: np.ndarray, radius: int, use_mih: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from . import kernels as K
        from . import sweep

        m, d = s.main, s.delta
        if m.n and use_mih:
            t = m.tables
            assert t is not None
            p = t.plan(radius)
            # codes worth fetching, and bucket rows worth reading, before a scan of the
            # segment is cheaper (the same bound for the rows layout, which fetches each)
            scan_ns = flat.estimate_scan_ns(m.n, self.words)
            max_cand = int(scan_ns / mih.COST_CANDIDATE_NS)
            max_rows = int(scan_ns / t.candidate_ns)
            if self.strategy == "mih":
                max_cand = max_rows = np.iinfo(np.int64).max  # forced: always verify (tests)
            c = m.codes.reshape(-1)
            if sweep.eligible(t.meta, p.rad, t.iw, len(Q)) and not sweep.looks_dense(
                Q, m.n, t.meta, p.rad, t.offsets, t.keys, p.masks, p.mask_off
            ):
                lims, rids, rd, scan = sweep.mih_sweep(
                    c, self.words, m.ids, m.dead, Q, radius, t.meta, p.rad, t.offsets,
                    t.rows, t.inline, t.iw, p.masks, p.mask_off, max_cand, max_rows,
                )  # fmt: skip
            else:
                lims, rids, rd, scan = K.mih_batch(
                    c, self.words, m.ids, m.dead, Q, radius, t.meta, p.rad, t.offsets,
                    t.keys, t.rows, t.inline, t.iw, p.masks, p.mask_off, max_cand, max_rows,
                )  # fmt: skip
            res = (lims, rids, rd)
            if scan.any():  # queries inside dense clusters: a scan is cheaper (exact either way)
                sl, si, sd = flat.scan_batch(m.codes, m.ids, m.dead, m.n, Q[scan], radius)
                full = np.zeros(len(Q) + 1, np.int64)
                full[1:][scan] = np.diff(sl)
                res = K.merge_csr(*res, np.cumsum(full), si, sd)
        else:
            res = flat.scan_batch(m.codes, m.ids, m.dead, m.n, Q, radius)
        if d.n:
            res2 = flat.scan_batch(d.codes, d.ids, d.dead, d.n, Q, radius)
            res = K.merge_csr(*res, *res2)
        return res

    # ------------------------------------------------------------------ persistence

    def live_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All live ``(ids int64, codes uint8 (n, bits//8))`` sorted by id (a copy)."""
        with self._lock:
            s = self._state
            m, d = s.main, s.delta
            keep = ~m.dead
            dl = ~d.dead[: d.n]
            ids = np.concatenate([m.ids[keep], d.ids[: d.n][dl]])
            codes = np.concatenate([m.codes[keep], d.codes[: d.n][dl]])
        o = np.argsort(ids, kind="stable")
        if not np.array_equal(o, np.arange(len(o))):
            ids, codes = ids[o], codes[o]
        return ids, codes.view(np.uint8).reshape(len(ids), self.code_size)

    def save(self, directory: Path, store_version: str | int | None = None) -> dict:
        """Atomically write the live entries to ``directory`` (see ``persist.py``).

        ``store_version`` is recorded in the manifest so the caller can tell which state of
        its hash-list store the index reflects. Returns the manifest written.
        """
        from . import persist

        with self._lock:
            s = self._state
            m, d = s.main, s.delta
            if d.n == 0 and m.n_dead == 0:
                ids, codes = m.ids, m.codes  # already id-sorted: no copy
            else:
                ids, c8 = self.live_arrays()
                codes = c8.view(np.uint64).reshape(len(ids), self.words)
            return persist.save_arrays(Path(directory), ids, codes, self.bits, store_version)

    @classmethod
    def load(
        cls,
        directory: Path,
        bits: int,
        *,
        strategy: Strategy = "auto",
        num_tables: int | None = None,
        max_delta: int = DEFAULT_MAX_DELTA,
        build_threads: int | None = None,
        layout: Layout = "auto",
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> BinaryIndex:
        """Load a saved index: verify the checksum, rebuild the tables.

        Raises ``ChecksumMismatchError`` / ``IndexCorruptError`` / ``ManifestError``.
        """
        from . import persist

        self = cls(  # first: a bad argument is refused before the file is read
            bits,
            strategy=strategy,
            num_tables=num_tables,
            max_delta=max_delta,
            build_threads=build_threads,
            layout=layout,
            inline_max_bytes=inline_max_bytes,
        )
        loaded = persist.load_arrays(Path(directory), bits)
        ids, codes = loaded.ids, loaded.codes
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            o = np.argsort(ids, kind="stable")
            ids, codes = ids[o], codes[o]
            if np.any(ids[1:] == ids[:-1]):
                from .errors import IndexCorruptError

                raise IndexCorruptError(f"{directory}: duplicate ids in the saved index")
        self.manifest = loaded.manifest
        self._state = _State(self._make_main(ids, codes), self._empty_delta(0))
        return self


def _numpy_suits(s: _State) -> bool:
    """Whether a search of this state is answered with numpy (`NUMPY_MAX_ROWS`)."""
    return s.main.n + s.delta.n <= NUMPY_MAX_ROWS and s.main.tables is None


def _numpy_search(s: _State, q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact range search of `BinaryIndex.search` in plain numpy, for small segments."""
    ids, dists = [], []
    for codes, seg_ids, dead, n in (
        (s.main.codes, s.main.ids, s.main.dead, s.main.n),
        (s.delta.codes, s.delta.ids, s.delta.dead, s.delta.n),
    ):
        if n == 0:
            continue
        d = np.bitwise_count(codes[:n] ^ q).sum(axis=1, dtype=np.int32)
        hit = (d <= radius) & ~dead[:n]
        ids.append(seg_ids[:n][hit])
        dists.append(d[hit])
    if not ids:
        return np.empty(0, np.int64), np.empty(0, np.int32)
    return np.concatenate(ids).astype(np.int64), np.concatenate(dists).astype(np.int32)
