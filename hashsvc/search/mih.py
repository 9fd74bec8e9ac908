"""Multi-index hashing (Norouzi, Punjani & Fleet, 2012) on flat numpy arrays.

The code is cut into ``m`` contiguous substrings. Table t maps substring t of every row
to its row numbers in a CSR layout: ``rows[offsets[k]:offsets[k+1]]`` are the rows whose
substring equals k. If two codes are within ``r`` bits, then for any radii ``r_t`` with
``sum(r_t + 1) >= r + 1`` some substring t is within ``r_t`` bits (pigeonhole), so probing
every key within ``r_t`` of the query's substring in every table finds all of them; the
candidates are then verified with the full distance.

Why our own tables and not ``faiss.IndexBinaryMultiHash``: FAISS keeps buckets in
``std::unordered_map`` of vectors (~6 GB at 10M x 11 tables), probes with a fixed
``nflip`` per table (not exact unless nflip >= r // m), and has no ``remove_ids``. A
direct-indexed ``uint32`` offset array plus ``uint32`` row array is ~90 MB per table at
10M, builds with a counting sort in ~0.1-0.3 s, and probes with two cache misses.

Two layouts of a table's buckets:

* **rows** (Norouzi et al.): a bucket lists row numbers; each candidate is then a random
  fetch of its code. Substrings of ~log2(n) bits keep buckets at ~1 row, so a PDQ query
  at r=31 probes ~1,400 buckets and fetches ~1,400 codes: ~2,800 dependent DRAM misses.
* **inline**: each bucket also holds the first ``inline_words(bits)`` words of its rows' codes,
  contiguous, so the candidates of a bucket are read as one short sequential run and a
  partial distance (a lower bound of the full one) rejects the codes far from the query
  (for a typical query, all but its true hits) before any code is fetched; inside a
  cluster of near-duplicates more get through and are fetched as in the rows layout.
  A candidate then costs a few ns instead of a DRAM miss, so shorter
  substrings with ~16 rows per bucket win: at 1M PDQ, 16 tables of 16 bits, 272 probes
  (bench/RESULTS-search.md). It costs ``m * n * (4 + 8 * inline_words(bits))`` bytes
  (320 MB at 1M PDQ against ~100 MB for rows), so ``index.py`` uses it only within a
  memory bound, and for PDQ only from ``index.INLINE_MIN_ROWS`` rows.

Wide substrings (more than ``DIRECT_MAX_BITS`` bits, or 2**bits far above the row count; only
when the caller forces the number of tables) would need a huge, mostly empty direct offset
array; those tables store sorted unique keys instead and probe by binary search.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import InvalidInputError

#: Largest substring that gets a direct-indexed offset array (2**26 uint32 = 256 MB).
DIRECT_MAX_BITS = 26
#: Substrings are at most 32 bits (keys are uint32 in the counting sort).
MAX_SUB_BITS = 32

# Cost model, in nanoseconds, fitted to single-query timings on the project's 2-core EPYC
# VM (m = 11..13 at 10M, n = 2k..1M at r = 0..64; see bench/RESULTS-search.md). Used to
# split the radius budget between tables and, in index.py, to choose MIH or a scan per
# query. Only ratios matter for those decisions; absolute values drift with machine load.
COST_PROBE_NS = 45.0  # one bucket lookup: offsets miss + rows miss
COST_CANDIDATE_NS = 95.0  # one candidate: random code fetch + popcount + bookkeeping
COST_QUERY_NS = 8000.0  # fixed per-query overhead (Python, dispatch, allocation)
# Inline layout (fitted the same way at 1M PDQ, see bench/RESULTS-search.md): a probe is an
# offsets miss plus the bucket's first line; a candidate is a partial distance on data that
# is already streaming in.
COST_INLINE_PROBE_NS = 240.0
COST_INLINE_CANDIDATE_NS = 3.0
#: Words of each code kept inline: 128 of PDQ's 256 bits, all of pHash's 64. A random code
#: is within 31 of a query on 128 bits with probability ~1e-9, so a far code is never
#: fetched. Near-duplicate clusters let more through (at 1M clustered PDQ ~half the
#: candidates), and those go through the rows layout's own prefetched verify phase. Measured
#: at 1M (bench/RESULTS-search.md): 192 or 256 inline bits cost 120-240 MB more and slowed
#: uniform queries by the extra bytes streamed, for no gain once that phase was shared.
INLINE_WORDS_MAX = 2
#: Batches of at least this many queries on inline PDQ tables are searched table by table
#: in one sorted sweep (sweep.py, where the measurements are); smaller ones query by query.
SWEEP_MIN_QUERIES = 768
#: Rows per bucket the inline layout aims for (2**4: substrings of log2(n) - 4 bits).
INLINE_BUCKET_LOG2 = 4


def inline_words(bits: int) -> int:
    """Words of each code an inline table keeps (the partial-distance prefix)."""
    return min(bits // 64, INLINE_WORDS_MAX)


def inline_nbytes(n: int, bits: int, m: int) -> int:
    """Bytes of an inline layout's row numbers and inline codes (offsets excluded)."""
    return m * n * (4 + 8 * inline_words(bits))


def choose_num_tables(n: int, bits: int, inline: bool = False) -> int:
    """Number of substrings for ``n`` codes: about ``bits / log2(n)`` (Norouzi et al.).

    With substrings of ~log2(n) bits every bucket holds about one row, which balances the
    cost of probing buckets against the cost of verifying candidates. At 10M PDQ this gives
    11 tables of 23-24 bits. Inline candidates are ~30x cheaper, so inline tables take
    ``INLINE_BUCKET_LOG2`` fewer bits (at least 8): 16 tables of 16 bits at 1M PDQ.
    """
    if n < 2:
        return max(1, math.ceil(bits / MAX_SUB_BITS))
    L = math.log2(n) - (INLINE_BUCKET_LOG2 if inline else 0)
    m = round(bits / max(L, 8.0 if inline else 1.0))
    return int(min(max(m, math.ceil(bits / MAX_SUB_BITS), 1), bits))


def split_bits(bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of ``m`` contiguous substrings, lengths differing by at most one
    (the longer ones first)."""
    if not 1 <= m <= bits:
        raise InvalidInputError(f"number of tables must be in 1..{bits}, got {m}")
    base, extra = divmod(bits, m)
    lens = np.array([base + (1 if t < extra else 0) for t in range(m)], dtype=np.int64)
    if lens.max() > MAX_SUB_BITS:
        raise InvalidInputError(
            f"{m} tables give {int(lens.max())}-bit substrings; at most {MAX_SUB_BITS}"
        )
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    return starts, lens


#: Most probe keys a query may enumerate (masks are 8 bytes each); beyond it MIH is never
#: used, whatever the strategy: a scan is far cheaper long before this point.
MAX_PROBES = 1 << 22


@lru_cache(maxsize=64)
def flip_masks(length: int, r: int) -> np.ndarray:
    """Every ``length``-bit mask with at most ``r`` bits set, ordered by popcount.

    Ordered by popcount so the masks for radius k are a prefix of those for k+1. Cached:
    a service uses one or two radii, so each (length, r) is generated once.
    """
    from . import kernels as K

    arr = K.flip_masks(length, r, num_probes(length, r))
    arr.setflags(write=False)
    return arr


def num_probes(length: int, r: int) -> int:
    """Keys within ``r`` bits of a ``length``-bit key (``r < 0``: table skipped)."""
    if r < 0:
        return 0
    return sum(math.comb(length, k) for k in range(min(r, length) + 1))


def table_cost_ns(length: int, r: int, n: int, inline: bool = False) -> float:
    """Estimated cost of probing one table at radius ``r`` (uniform-codes assumption)."""
    p = num_probes(length, r)
    if inline:
        return p * (COST_INLINE_PROBE_NS + COST_INLINE_CANDIDATE_NS * n / 2.0**length)
    return p * (COST_PROBE_NS + COST_CANDIDATE_NS * n / 2.0**length)


def allocate_radii(lens: np.ndarray, radius: int, n: int, inline: bool = False) -> np.ndarray:
    """Per-table probe radii ``r_t`` with ``sum(r_t + 1) == radius + 1`` at least cost.

    Greedy on the marginal cost of one more bit of radius; optimal because each table's
    cost is convex in its radius. ``r_t == -1`` means the table is not probed at all (e.g.
    radius 0 needs a single exact-key probe in one table, not one in every table).
    """
    m = len(lens)
    rad = np.full(m, -1, dtype=np.int64)
    for _ in range(radius + 1):
        best_t, best_inc = -1, math.inf
        for t in range(m):
            L = int(lens[t])
            if rad[t] >= L:  # already probes every key of this table
                continue
            inc = table_cost_ns(L, int(rad[t]) + 1, n, inline) - table_cost_ns(
                L, int(rad[t]), n, inline
            )
            if inc < best_inc:
                best_t, best_inc = t, inc
        if best_t < 0:  # every table fully enumerated: radius >= bits, nothing left to add
            break
        rad[best_t] += 1
    return rad


def estimate_mih_ns(lens: np.ndarray, radius: int, n: int, inline: bool = False) -> float:
    """Estimated single-query MIH cost for ``radius`` (uniform codes)."""
    rad = allocate_radii(lens, radius, n, inline)
    return COST_QUERY_NS + sum(
        table_cost_ns(int(L), int(r), n, inline) for L, r in zip(lens, rad, strict=True)
    )


def total_probes(lens: np.ndarray, radius: int, n: int, inline: bool = False) -> int:
    """Keys a query at ``radius`` would probe, summed over tables."""
    rad = allocate_radii(lens, radius, n, inline)
    return sum(num_probes(int(L), int(r)) for L, r in zip(lens, rad, strict=True))


@dataclass
class ProbePlan:
    """What one radius needs at query time: per-table radii and flip masks."""

    rad: np.ndarray  # (m,) int64, -1 = skip table
    masks: np.ndarray  # uint64 flip masks, table t uses masks[mask_off[t]:mask_off[t+1]]
    mask_off: np.ndarray  # (m + 1,) int64
    estimate_ns: float


@dataclass
class MihTables:
    """The m lookup tables over one immutable segment of codes."""

    bits: int
    n: int
    starts: np.ndarray
    lens: np.ndarray
    meta: np.ndarray  # (m, kernels.M_NCOLS) int64
    offsets: np.ndarray  # uint32, all tables concatenated
    keys: np.ndarray  # uint64 sorted unique keys of the sorted-layout tables (else empty)
    rows: np.ndarray  # uint32, m * n
    #: inline layout: uint64 (m * n * iw,), row p of table t's order holds the first ``iw``
    #: words of code ``rows[t * n + p]``; empty with iw == 0 for the rows layout
    inline: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    iw: int = 0
    _plans: dict[int, ProbePlan] = field(default_factory=dict, repr=False)
    _assessed: dict[int, tuple[bool, float]] = field(default_factory=dict, repr=False)

    @property
    def num_tables(self) -> int:
        return len(self.lens)

    @property
    def nbytes(self) -> int:
        return int(
            self.offsets.nbytes
            + self.keys.nbytes
            + self.rows.nbytes
            + self.meta.nbytes
            + self.inline.nbytes
        )

    @property
    def candidate_ns(self) -> float:
        """Modelled cost of one candidate (bounds the candidates verified before a scan)."""
        return COST_INLINE_CANDIDATE_NS if self.iw else COST_CANDIDATE_NS

    @property
    def layout(self) -> str:
        """``"inline"`` or ``"rows"`` (module doc)."""
        return "inline" if self.iw else "rows"

    def _assess(self, radius: int) -> tuple[bool, float]:
        a = self._assessed.get(radius)
        if a is None:  # pure-Python greedy: cached, it would cost ~0.3 ms per query
            inline = self.iw > 0
            a = (
                total_probes(self.lens, radius, self.n, inline) <= MAX_PROBES,
                estimate_mih_ns(self.lens, radius, self.n, inline),
            )
            if len(self._assessed) > 64:
                self._assessed.clear()
            self._assessed[radius] = a
        return a

    def feasible(self, radius: int) -> bool:
        """Whether MIH can serve ``radius`` at all (probe enumeration within MAX_PROBES)."""
        return self._assess(radius)[0]

    def estimate_ns(self, radius: int) -> float:
        """Cost-model estimate of one query at ``radius`` (no masks generated)."""
        return self._assess(radius)[1]

    def plan(self, radius: int) -> ProbePlan:
        """Probe plan for ``radius`` (cached: a service uses one or two radii)."""
        p = self._plans.get(radius)
        if p is None:
            inline = self.iw > 0
            rad = allocate_radii(self.lens, radius, self.n, inline)
            parts = [
                flip_masks(int(L), int(r)) if r >= 0 else np.empty(0, np.uint64)
                for L, r in zip(self.lens, rad, strict=True)
            ]
            mask_off = np.zeros(len(parts) + 1, dtype=np.int64)
            mask_off[1:] = np.cumsum([len(x) for x in parts])
            masks = np.concatenate(parts) if parts else np.empty(0, np.uint64)
            est = COST_QUERY_NS + sum(
                table_cost_ns(int(L), int(r), self.n, inline)
                for L, r in zip(self.lens, rad, strict=True)
            )
            p = ProbePlan(rad=rad, masks=masks, mask_off=mask_off, estimate_ns=est)
            if len(self._plans) > 16:
                self._plans.clear()
            self._plans[radius] = p
        return p


def build_tables(
    codes: np.ndarray, bits: int, m: int, threads: int = 1, inline: bool = False
) -> MihTables:
    """Build the m tables over ``codes`` (uint64, shape (n, bits // 64)).

    Direct tables are a numba counting sort (no Python loop over rows); tables are built
    concurrently on ``threads`` Python threads since the kernels release the GIL.
    ``inline``: also copy each table's code prefixes into bucket order (module doc).
    """
    from . import kernels as K

    n, W = codes.shape
    if n >= 2**32 - 1:
        raise InvalidInputError("MIH tables hold at most 2**32 - 2 rows")
    starts, lens = split_bits(bits, m)
    c = codes.reshape(-1)
    meta = np.zeros((m, K.M_NCOLS), dtype=np.int64)
    meta[:, K.M_START] = starts
    meta[:, K.M_LEN] = lens
    # Direct offsets cost 4 bytes per possible key: fine when keys ~ rows (the chosen m makes
    # 2**L ~ n), wasteful when a forced m gives wide substrings over few rows.
    direct = (lens <= DIRECT_MAX_BITS) & (2.0**lens <= max(16.0 * n, 2.0**20))
    meta[:, K.M_DIRECT] = direct

    # Sorted-layout tables first (rare; numpy sorts), so offsets sizes are known.
    sorted_keys: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for t in np.flatnonzero(~direct).tolist():
        keys = K.substring_keys(c, W, n, int(starts[t]), int(lens[t]))
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        uk, first = np.unique(sk, return_index=True)
        offs = np.append(first, n).astype(np.uint32)
        sorted_keys[t] = (uk, offs, order.astype(np.uint32))

    off_sizes = [(2 ** int(lens[t]) + 1) if direct[t] else len(sorted_keys[t][1]) for t in range(m)]
    off_base = np.concatenate([[0], np.cumsum(off_sizes)[:-1]]).astype(np.int64)
    offsets = np.empty(int(sum(off_sizes)), dtype=np.uint32)
    rows = np.empty(m * n, dtype=np.uint32)
    meta[:, K.M_OFF] = off_base
    meta[:, K.M_ROWS] = np.arange(m, dtype=np.int64) * n

    key_parts = []
    kb = 0
    for t in range(m):
        if not direct[t]:
            uk, offs, order = sorted_keys[t]
            meta[t, K.M_KEY] = kb
            meta[t, K.M_NKEY] = len(uk)
            kb += len(uk)
            key_parts.append(uk)
            offsets[off_base[t] : off_base[t] + len(offs)] = offs
            rows[t * n : (t + 1) * n] = order
    keys_all = np.concatenate(key_parts) if key_parts else np.empty(0, np.uint64)

    todo = [t for t in range(m) if direct[t]]
    nthreads = max(1, min(threads, len(todo)))

    def _worker(k: int) -> None:
        # scratch per worker, reused for each of its tables (see build_direct_table)
        keys = np.empty(n, dtype=np.uint32)
        lo_tmp = np.empty(n, dtype=np.uint16)
        for t in todo[k::nthreads]:
            K.build_direct_table(
                c,
                W,
                n,
                int(starts[t]),
                int(lens[t]),
                offsets[off_base[t] : off_base[t] + off_sizes[t]],
                rows[t * n : (t + 1) * n],
                keys,
                lo_tmp,
            )

    if nthreads > 1:
        with ThreadPoolExecutor(max_workers=nthreads) as ex:
            list(ex.map(_worker, range(nthreads)))
    elif todo:
        _worker(0)
    iw = inline_words(bits) if inline else 0
    inline_codes = np.empty(m * n * iw, dtype=np.uint64)
    if iw:
        gthreads = max(1, min(threads, m))

        def _gather(k: int) -> None:
            for t in range(k, m, gthreads):
                K.gather_prefixes(
                    c, W, rows[t * n : (t + 1) * n], iw, inline_codes[t * n * iw : (t + 1) * n * iw]
                )

        if gthreads > 1:
            with ThreadPoolExecutor(max_workers=gthreads) as ex:
                list(ex.map(_gather, range(gthreads)))
        else:
            _gather(0)
    return MihTables(
        bits=bits,
        n=n,
        starts=starts,
        lens=lens,
        meta=meta,
        offsets=offsets,
        keys=keys_all,
        rows=rows,
        inline=inline_codes,
        iw=iw,
    )
