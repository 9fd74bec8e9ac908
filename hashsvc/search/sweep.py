# mypy: disable-error-code="call-arg,attr-defined,var-annotated,assignment,unused-ignore"
# (numba intrinsics and njit signatures are typed for numba, not for mypy)
"""Table-major MIH for large batches on the inline layout: each table's probes of every
query in the batch, sorted by bucket, read in one ascending sweep.

Why: ``kernels.mih_batch`` answers queries one after another, so each query's 272 buckets
(1M PDQ) are 272 random places in 256 MB of inline prefixes, and the query waits on DRAM
however far ahead it prefetches (this machine reads ~11 ns per random 64-byte line and
~8 ns per line streaming). A batch of 1,000 queries probes 17,000 of a table's 65,536
buckets; sorted by key, those buckets are read in address order, a bucket probed by two
queries is read once, and the bucket offsets are read sequentially instead of at random.
Measured at 1M PDQ r=31 (interleaved, same tables, results equal): 1,000-query batches
28-29 vs 36-41 us per query, 2,000-query batches 29 vs 43; at 500 queries it is even and
at 200 it loses (47 vs 39: the per-table sort no longer pays for itself), hence
``mih.SWEEP_MIN_QUERIES``. pHash (one inline word) gains nothing: 6.0 vs 5.2 us at r=6.
On the search bench's 1,000 query sets (bench/_data, same process, results equal):
uniform 1M 31-33 vs 41 us per query; clustered 1M (near-duplicate clusters, ~10,000
candidates per query) 418-442 vs 418-475 us, after two fixes that the clustered set
needed: candidates are verified a buffer at a time instead of held to the end, and a row
an earlier table also finds is dropped on its prefix before its code is fetched (674 and
then 584 us before them).

What is returned is exactly ``mih_batch``'s: the same prefix filter, the same full check,
tombstones and first-table dedupe, and the same ``scan`` mask for queries a scan answers
more cheaply (``max_rows`` bucket rows, ``max_cand`` candidates).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import mih
from .kernels import (
    _PF,
    M_DIRECT,
    M_LEN,
    M_OFF,
    M_ROWS,
    M_START,
    _ctpop,
    _extract,
    _prefetch,
    _prefetch_bucket,
)

#: Sorted probes prefetched ahead of the one being read.
_SWEEP_AHEAD = 8
#: Candidates buffered before they are verified (kept small: the buffer stays in cache,
#: and a clustered batch's millions of candidates are never held at once).
_CAND_BUF = 16384


def eligible(meta: np.ndarray, rad: np.ndarray, iw: int, nq: int) -> bool:
    """Whether a batch of ``nq`` queries should sweep: inline tables of at least two words
    (PDQ), every probed table direct-indexed, and enough queries to share the sort."""
    if iw < 2 or nq < mih.SWEEP_MIN_QUERIES:
        return False
    used = rad >= 0
    return bool(used.any() and (meta[used, M_DIRECT] == 1).all())


#: A batch whose sampled queries read more than this many times the bucket rows uniform
#: codes would is searched query by query instead (``looks_dense``).
DENSE_ROWS_FACTOR = 1.5
#: Queries sampled for it.
_DENSE_SAMPLE = 32


def looks_dense(
    Q: np.ndarray,
    n: int,
    meta: np.ndarray,
    rad: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    masks: np.ndarray,
    mask_off: np.ndarray,
) -> bool:
    """Whether the batch's queries sit in near-duplicate clusters of the ``n`` indexed
    codes: a sample of them reads over ``DENSE_ROWS_FACTOR`` times the bucket rows that
    uniform codes would (``kernels._bounds``; ~0.3 us per query of the batch).

    Why: there nearly every bucket row is a candidate (~10,000 per query at 1M in the
    search bench's clustered set, 2.4x the rows of uniform codes), and verifying them
    wants a query's candidates together, as ``mih_batch`` has them; the sweep visits them
    table by table and was 1.6-1.9x slower on that set (415-466 vs 217-284 us per query),
    while 1.25x faster on uniform codes (25-32 vs 31-43 us).
    """
    from .kernels import _bounds

    used = rad >= 0
    expected = sum(
        float(mask_off[t + 1] - mask_off[t]) * n / 2.0 ** int(meta[t, M_LEN])
        for t in np.flatnonzero(used)
    )
    plo = np.empty(int(mask_off[-1]), np.uint32)
    phi = np.empty_like(plo)
    step = max(1, len(Q) // _DENSE_SAMPLE)
    sample = range(0, len(Q), step)
    rows = sum(
        int(_bounds(Q[j], meta, rad, offsets, keys, masks, mask_off, plo, phi)) for j in sample
    )
    return rows > DENSE_ROWS_FACTOR * expected * len(sample)


@njit(cache=True, nogil=True)
def _sort_by_key(keys: np.ndarray, qs: np.ndarray, L: int, tk: np.ndarray, tq: np.ndarray) -> None:
    """Sort the pairs ``(keys, qs)`` by key in place: an LSD radix sort of two digits of
    about ``L / 2`` bits (stable, so each key's queries stay in query order)."""
    n = keys.shape[0]
    low = L // 2
    for shift, width in ((0, low), (low, L - low)):
        nb = 1 << width
        mask = np.uint32(nb - 1)
        count = np.zeros(nb + 1, np.int64)
        for i in range(n):
            count[((keys[i] >> np.uint32(shift)) & mask) + 1] += 1
        for b in range(nb):
            count[b + 1] += count[b]
        for i in range(n):
            b = (keys[i] >> np.uint32(shift)) & mask
            p = count[b]
            tk[p] = keys[i]
            tq[p] = qs[i]
            count[b] = p + 1
        keys[:] = tk[:n]
        qs[:] = tq[:n]


@njit(cache=True, nogil=True)
def _sweep_table(
    Q: np.ndarray,
    radius: int,
    t: int,
    meta: np.ndarray,
    offsets: np.ndarray,
    rows: np.ndarray,
    inline: np.ndarray,
    IW: int,
    pk: np.ndarray,
    pq: np.ndarray,
    start: int,
    stop: int,
    skip: np.ndarray,
    rows_of: np.ndarray,
    max_rows: int,
    ncand: np.ndarray,
    max_cand: int,
    cq: np.ndarray,
    cr: np.ndarray,
    ct: np.ndarray,
    rad: np.ndarray,
    xs: np.ndarray,
) -> tuple[int, int]:
    """Read table ``t``'s buckets at the sorted probes ``start:stop``; put the rows whose
    prefix is within ``radius`` as (query, row, table) in ``cq/cr/ct``, counting each
    query's rows and candidates against ``max_rows``/``max_cand``. Returns how many it
    put there and where it stopped: before ``stop`` only when the buffers are full (the caller
    verifies them and resumes; growing here would cost reference counting on every row).

    A row that an earlier table also finds is dropped here when the prefix decides it
    (``_earlier_in_prefix``), before its code is fetched: in a cluster of near-duplicates
    a row is a candidate in most tables, and table-major order fetched its code once per
    table, long evicted in between (a clustered 1M batch: 584 -> 418-442 us per query).
    It still counts against ``max_cand``, as in ``mih_batch``."""
    obase = meta[t, M_OFF]
    rbase = meta[t, M_ROWS]
    cap = cq.shape[0]
    nc = 0
    for i in range(start, stop):
        ia = i + _SWEEP_AHEAD
        if ia < stop:
            ka = obase + np.int64(pk[ia])
            _prefetch_bucket(
                inline, IW, rbase + np.int64(offsets[ka]), rbase + np.int64(offsets[ka + 1])
            )
        j = pq[i]
        if skip[j]:
            continue
        k = obase + np.int64(pk[i])
        lo = rbase + np.int64(offsets[k])
        hi = rbase + np.int64(offsets[k + 1])
        if nc + (hi - lo) > cap:
            return nc, i
        rows_of[j] += hi - lo
        if rows_of[j] > max_rows:
            skip[j] = True  # a scan answers it (``_mih_one``'s rule)
            continue
        q = Q[j]
        q0 = q[0]
        q1 = q[1]
        for p in range(lo, hi):
            if IW == 2:  # written out, as in ``kernels._gather_inline``: q0, q1 in registers
                d = _ctpop(inline[2 * p] ^ q0) + _ctpop(inline[2 * p + 1] ^ q1)
            else:
                d = 0
                for w in range(IW):
                    d += _ctpop(inline[p * IW + w] ^ q[w])
            if d <= radius:
                ncand[j] += 1
                if ncand[j] > max_cand:
                    skip[j] = True  # a scan answers it (``_mih_one``'s rule)
                    break
                if t > 0 and _earlier_in_prefix(inline, IW, p, q, t, meta, rad, xs):
                    continue  # an earlier table reports it: no need to fetch its code
                cq[nc] = j
                cr[nc] = rows[p]
                ct[nc] = t
                nc += 1
    return nc, stop


@njit(cache=True, nogil=True)
def mih_sweep(
    c: np.ndarray,
    W: int,
    ids: np.ndarray,
    dead: np.ndarray,
    Q: np.ndarray,
    radius: int,
    meta: np.ndarray,
    rad: np.ndarray,
    offsets: np.ndarray,
    rows: np.ndarray,
    inline: np.ndarray,
    IW: int,
    masks: np.ndarray,
    mask_off: np.ndarray,
    max_cand: int,
    max_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``kernels.mih_batch`` for a large batch on direct inline tables with ``IW >= 2``:
    CSR ``(lims, ids, distances)`` plus the mask of queries the caller must scan.

    1. Per table, every query's probe keys, radix-sorted by key.
    2. Per table, one ascending sweep (``_sweep_table``): candidates (query, row, table).
       A query is left to a scan once the bucket rows it has read pass ``max_rows`` or
       its candidates pass ``max_cand``: the same queries ``mih_batch`` leaves (it adds
       up the rows first), after at most that much work on each.
    3. The candidates, a buffer (``_CAND_BUF``) at a time, through ``_mih_one``'s phase C
       (``_verify``): full distance, tombstone, and a hit reported only by the first table
       able to find it. Only hits are kept, then grouped by query. (Holding every
       candidate until the end cost a clustered batch 36% more time than ``mih_batch``:
       674 vs 495 us per query at 1M.)
    """
    nq = Q.shape[0]
    m = meta.shape[0]
    tstart = np.zeros(m + 1, np.int64)
    widest = 0
    for t in range(m):
        n_t = (mask_off[t + 1] - mask_off[t]) * nq if rad[t] >= 0 else 0
        tstart[t + 1] = tstart[t] + n_t
        widest = max(widest, n_t)
    pk = np.empty(tstart[m], np.uint32)
    pq = np.empty(tstart[m], np.int32)
    tk = np.empty(widest, np.uint32)
    tq = np.empty(widest, np.int32)
    rows_of = np.zeros(nq, np.int64)
    for t in range(m):
        if rad[t] < 0:
            continue
        s0 = tstart[t]
        p = s0
        for j in range(nq):
            qk = _extract(Q[j], 0, meta[t, M_START], meta[t, M_LEN])
            for mi in range(mask_off[t], mask_off[t + 1]):
                pk[p] = np.uint32(qk ^ masks[mi])
                pq[p] = j
                p += 1
        _sort_by_key(pk[s0:p], pq[s0:p], meta[t, M_LEN], tk, tq)
    skip = np.zeros(nq, np.bool_)
    ncand = np.zeros(nq, np.int64)
    cq, cr, ct = _buffers(_CAND_BUF)
    hq, hr, hd = _buffers(max(64, nq // 4))
    nh = 0
    x = np.empty(W, np.uint64)
    xs = np.empty(IW, np.uint64)
    for t in range(m):
        if rad[t] < 0:
            continue
        i = tstart[t]
        while i < tstart[t + 1]:
            nc, i = _sweep_table(
                Q, radius, t, meta, offsets, rows, inline, IW, pk, pq, i, tstart[t + 1],
                skip, rows_of, max_rows, ncand, max_cand, cq, cr, ct, rad, xs,
            )  # fmt: skip
            if nc == 0 and i < tstart[t + 1]:  # one bucket larger than the buffer
                k = meta[t, M_OFF] + np.int64(pk[i])
                size = 2 * (int(offsets[k + 1]) - int(offsets[k]))
                cq, cr, ct = _buffers(size)
                continue
            while nh + nc > hq.shape[0]:  # room for every candidate to be a hit
                hq, hr, hd = _grown(hq, hr, hd, nh)
            nh = _verify(c, W, dead, Q, radius, meta, rad, x, cq, cr, ct, nc, hq, hr, hd, nh)
    # group the hits by query (stable counting sort); a query left to a scan drops its own
    lims = np.zeros(nq + 1, np.int64)
    for i in range(nh):
        if not skip[hq[i]]:
            lims[hq[i] + 1] += 1
    for j in range(nq):
        lims[j + 1] += lims[j]
    fill = lims[:-1].copy()
    out_ids = np.empty(lims[nq], np.int64)
    out_d = np.empty(lims[nq], np.int32)
    for i in range(nh):
        j = hq[i]
        if not skip[j]:
            out_ids[fill[j]] = ids[np.int64(hr[i])]
            out_d[fill[j]] = hd[i]
            fill[j] += 1
    return lims, out_ids, out_d, skip


@njit(cache=True, nogil=True, inline="always")
def _earlier_in_prefix(
    inline: np.ndarray,
    IW: int,
    p: int,
    q: np.ndarray,
    t: int,
    meta: np.ndarray,
    rad: np.ndarray,
    xs: np.ndarray,
) -> bool:
    """Whether a probed table before ``t`` whose substring lies inside the inline prefix
    finds row ``p`` too (substring within its radius): then ``_verify`` would
    drop the row as that table's, so it can be dropped on the prefix alone. ``xs``: IW
    words of scratch."""
    for w in range(IW):
        xs[w] = inline[p * IW + w] ^ q[w]
    for t2 in range(t):
        start, length = meta[t2, M_START], meta[t2, M_LEN]
        if (
            rad[t2] >= 0
            and start + length <= 64 * IW
            and _ctpop(_extract(xs, 0, start, length)) <= rad[t2]
        ):
            return True
    return False


@njit(cache=True, nogil=True)
def _verify(
    c: np.ndarray,
    W: int,
    dead: np.ndarray,
    Q: np.ndarray,
    radius: int,
    meta: np.ndarray,
    rad: np.ndarray,
    x: np.ndarray,
    cq: np.ndarray,
    cr: np.ndarray,
    ct: np.ndarray,
    nc: int,
    hq: np.ndarray,
    hr: np.ndarray,
    hd: np.ndarray,
    nh: int,
) -> int:
    """``kernels._mih_one``'s phase C on the buffered candidates ``cq/cr/ct[:nc]`` (their
    codes prefetched ``_PF`` ahead): the full distance, the tombstone, and a hit reported
    only by the first table able to find it; each hit appended as (query, row, distance)
    to ``hq/hr/hd`` (room for all ``nc`` is the caller's). Returns the new count.

    The same lines as ``_mih_one``'s, on purpose not a helper both call: through a shared
    njit function (inlined or not) phase C ran 2-4x slower (10M pHash rows layout, r=10,
    interleaved: 1,284 vs 687 us per batched query), and here a clustered 1M batch 2.3x
    slower (612 vs 262 us per query).
    """
    for i in range(nc):
        if i % _PF == 0:
            for i2 in range(i, min(i + _PF, nc)):
                _prefetch(c, np.int64(cr[i2]) * W)
        j = cq[i]
        q = Q[j]
        row = np.int64(cr[i])
        b0 = row * W
        d = 0
        for w in range(W):
            d += _ctpop(c[b0 + w] ^ q[w])
        if d > radius or dead[row]:
            continue
        t = ct[i]
        dup = False
        if t > 0:
            for w in range(W):
                x[w] = c[b0 + w] ^ q[w]
            for t2 in range(t):
                if rad[t2] >= 0:
                    s2 = _extract(x, 0, meta[t2, M_START], meta[t2, M_LEN])
                    if _ctpop(s2) <= rad[t2]:
                        dup = True
                        break
        if dup:
            continue
        hq[nh] = j
        hr[nh] = cr[i]
        hd[nh] = d
        nh += 1
    return nh


@njit(cache=True, nogil=True)
def _buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query int32, row uint32, table or distance int32) buffers of ``size`` entries."""
    return np.empty(size, np.int32), np.empty(size, np.uint32), np.empty(size, np.int32)


@njit(cache=True, nogil=True)
def _grown(
    hq: np.ndarray, hr: np.ndarray, hd: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hit buffers at twice the size, their first ``n`` entries kept."""
    q2, r2, d2 = _buffers(2 * hq.shape[0])
    q2[:n] = hq[:n]
    r2[:n] = hr[:n]
    d2[:n] = hd[:n]
    return q2, r2, d2
