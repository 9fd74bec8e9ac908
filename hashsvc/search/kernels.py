# mypy: disable-error-code="call-arg,attr-defined,var-annotated,assignment,unused-ignore"
# (numba intrinsics and njit signatures are typed for numba, not for mypy)
"""Numba kernels: popcount, brute-force range scans, multi-index-hashing probes, table build.

Why numba and not FAISS for the hot loops: FAISS's multi-index range search keeps its
buckets in ``unordered_map``s (slow, ~6 GB at 10M with 11 tables), has no remove, and its
flat scan is no faster than a tight popcount loop. Every kernel is
``nogil`` so the batch path can run chunks on plain Python threads (see ``index.py`` for why
we avoid numba's own threading layer), and ``cache=True`` so a process compiles each kernel
once per machine, not once per start.

Conventions shared by all kernels:

* codes are C-contiguous ``uint64`` arrays of shape ``(n, W)`` passed *flattened* (``c``),
  W = bits // 64. The 64-bit words are the little-endian view of the packbits bytes; the
  bit order inside a word is irrelevant for Hamming distance as long as queries and
  entries use the same view, which they do.
* ``dead`` is a ``bool`` tombstone mask by row; checked only for rows within the radius, so
  it costs nothing on the (vast majority of) non-matching rows.
* results are appended to growable ``(out_ids int64, out_d int32, cnt)`` buffers; kernels
  return the (possibly reallocated) buffers and the new count.
* all arithmetic on codes is kept in ``uint64`` with explicit casts: numba promotes mixed
  ``uint64``/``int64`` expressions to float64, which would be both wrong and slow.

Importing this module imports numba (≈0.3 s) and loads or compiles the kernels lazily on
first call; ``hashsvc.search`` only imports it on first use.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_U1 = np.uint64(1)


@intrinsic
def _ctpop(typingctx, x):  # type: ignore[no-untyped-def]
    """``llvm.ctpop.i64`` as an int64: compiles to ``popcnt`` (vectorised where LLVM can).

    numba has no ``np.bitwise_count`` in nopython mode, hence the intrinsic.
    """
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None
    sig = types.int64(x)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        (val,) = args
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, [val])

    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """``llvm.prefetch`` of ``arr[idx]`` (read, keep in all cache levels).

    MIH is a few thousand independent DRAM misses per query; a tight prefetch loop ahead of
    the (many-uop) verify loop lets more of them be in flight at once than the reorder
    buffer allows when the loads sit inside the heavy loop body.
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def popcount64(x: np.uint64) -> int:
    """Population count of one 64-bit word (exposed for tests)."""
    return _ctpop(x)


# --------------------------------------------------------------------------- helpers


@njit(cache=True, nogil=True)
def _grow(out_ids: np.ndarray, out_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Double the result buffers (amortised O(1) append)."""
    cap = max(16, out_ids.shape[0] * 2)
    ni = np.empty(cap, np.int64)
    nd = np.empty(cap, np.int32)
    ni[: out_ids.shape[0]] = out_ids
    nd[: out_d.shape[0]] = out_d
    return ni, nd


@njit(cache=True, nogil=True)
def _extract(c: np.ndarray, base: int, start: int, length: int) -> np.uint64:
    """Bits ``[start, start+length)`` of the code whose first word is ``c[base]``.

    A substring may straddle two words (e.g. bits 46..68 for 11 substrings of 256 bits).
    ``length`` must be in 1..63.
    """
    w = start >> 6
    off = np.uint64(start & 63)
    v = c[base + w] >> off
    if (start & 63) + length > 64:
        v |= c[base + w + 1] << (np.uint64(64) - off)
    return v & ((_U1 << np.uint64(length)) - _U1)


# --------------------------------------------------------------------------- flat scan

_BLOCK = 256  # rows per block of the scan: its distances and hits stay in L1


@njit(cache=True, nogil=True)
def _append_block(
    out_ids: np.ndarray, out_d: np.ndarray, cnt: int, bi: np.ndarray, bd: np.ndarray, nb: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Append ``nb`` buffered hits, growing the output once if needed."""
    while cnt + nb > out_ids.shape[0]:
        out_ids, out_d = _grow(out_ids, out_d)
    out_ids[cnt : cnt + nb] = bi[:nb]
    out_d[cnt : cnt + nb] = bd[:nb]
    return out_ids, out_d, cnt + nb


@njit(cache=True, nogil=True)
def flat_scan(
    c: np.ndarray,
    W: int,
    n: int,
    ids: np.ndarray,
    dead: np.ndarray,
    q: np.ndarray,
    radius: int,
    out_ids: np.ndarray,
    out_d: np.ndarray,
    cnt: int,
    bi: np.ndarray,
    bd: np.ndarray,
    dist: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Append every live row of ``c[:n]`` within ``radius`` of ``q`` (brute force).

    Two passes per block of rows: a branch-free pass counting the rows within ``radius``
    (LLVM vectorises it), then only for a block that has one, a pass collecting the hits
    into a block-sized buffer. For 256-bit codes the first pass also stores each
    distance for the second to read; for 64-bit codes that store cost more than the
    popcount it saves (8-14% of a 1M pHash scan, the corroboration search of every
    upload), so the second pass computes the distances again: hits are rare there (~40
    per query at 1M rows and 16 bits), while a 256-bit scan may be a dense cluster's
    fallback with a hit in every block. Hits never touch the growable output inside the
    row loops: an array that may be reallocated inside a loop costs numba
    reference-count traffic on every iteration (measured 4x slower with ~500 hits per
    query). ``bi``/``bd``/``dist`` are caller-owned scratch of ``_BLOCK`` entries.
    """
    q0 = q[0]
    for s in range(0, n, _BLOCK):
        e = min(s + _BLOCK, n)
        # the block as a slice indexed from 0: with ``range(s, e)`` numba cannot prove the
        # index non-negative, keeps its negative-index wraparound on every load and the
        # loop ran 3-6x slower (1M pHash: 2.3 vs 0.35-0.7 ms, Xeon Ice Lake)
        cb = c[s * W : e * W]
        db = dist[: e - s]
        hit = 0
        if W == 1:
            for k in range(cb.shape[0]):
                hit += np.int64(_ctpop(cb[k] ^ q0) <= radius)
        else:  # W == 4 (the index only supports 64- and 256-bit codes)
            q1, q2, q3 = q[1], q[2], q[3]
            for k in range(db.shape[0]):
                b = 4 * k
                d = (
                    _ctpop(cb[b] ^ q0)
                    + _ctpop(cb[b + 1] ^ q1)
                    + _ctpop(cb[b + 2] ^ q2)
                    + _ctpop(cb[b + 3] ^ q3)
                )
                db[k] = d
                hit += np.int64(d <= radius)
        if hit == 0:
            continue
        nb = 0
        for k in range(db.shape[0]):
            d = _ctpop(cb[k] ^ q0) if W == 1 else db[k]
            if d <= radius and not dead[s + k]:
                bi[nb] = ids[s + k]
                bd[nb] = d
                nb += 1
        if nb:
            out_ids, out_d, cnt = _append_block(out_ids, out_d, cnt, bi, bd, nb)
    return out_ids, out_d, cnt


@njit(cache=True, nogil=True)
def flat_batch(
    c: np.ndarray,
    W: int,
    n: int,
    ids: np.ndarray,
    dead: np.ndarray,
    Q: np.ndarray,
    radius: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute-force range search of many queries; returns CSR ``(lims, ids, dists)``.

    Rows are the outer loop (in L2-sized blocks) and queries the inner one, so each block
    of the code array is read from DRAM once per batch instead of once per query: the batch
    becomes compute-bound rather than bandwidth-bound. Also the single-query entry point
    (a batch of one), so ``flat_scan`` is compiled into one caller only.
    """
    nq = Q.shape[0]
    qflat = Q.reshape(-1)
    cap = 64
    tq = np.empty(cap, np.int64)
    ti = np.empty(cap, np.int64)
    td = np.empty(cap, np.int32)
    cnt = 0
    bi = np.empty(_BLOCK, np.int64)
    bd = np.empty(_BLOCK, np.int32)
    dist = np.empty(_BLOCK, np.int32)
    blk = 4096 if nq > 1 else max(n, 1)  # a single query needs no row blocking
    for s in range(0, n, blk):
        e = min(s + blk, n)
        for j in range(nq):
            qv = qflat[j * W : (j + 1) * W]
            m0 = cnt
            # reuse the single-query kernel on the block (ids/dead sliced to the block)
            ti2, td2, cnt2 = flat_scan(
                c[s * W : e * W],
                W,
                e - s,
                ids[s:e],
                dead[s:e],
                qv,
                radius,
                ti,
                td,
                cnt,
                bi,
                bd,
                dist,
            )
            ti, td, cnt = ti2, td2, cnt2
            if cnt > tq.shape[0]:
                nt = np.empty(ti.shape[0], np.int64)
                nt[: tq.shape[0]] = tq
                tq = nt
            tq[m0:cnt] = j
    return _triplets_to_csr(nq, tq, ti, td, cnt)


@njit(cache=True, nogil=True)
def _triplets_to_csr(
    nq: int, tq: np.ndarray, ti: np.ndarray, td: np.ndarray, cnt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable counting sort of ``(query, id, dist)`` triplets by query into CSR form."""
    lims = np.zeros(nq + 1, np.int64)
    for k in range(cnt):
        lims[tq[k] + 1] += 1
    for j in range(nq):
        lims[j + 1] += lims[j]
    pos = lims[:-1].copy()
    oi = np.empty(cnt, np.int64)
    od = np.empty(cnt, np.int32)
    for k in range(cnt):
        p = pos[tq[k]]
        oi[p] = ti[k]
        od[p] = td[k]
        pos[tq[k]] = p + 1
    return lims, oi, od


@njit(cache=True, nogil=True)
def merge_csr(
    l1: np.ndarray,
    i1: np.ndarray,
    d1: np.ndarray,
    l2: np.ndarray,
    i2: np.ndarray,
    d2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate two CSR results over the same queries, query by query."""
    nq = l1.shape[0] - 1
    lims = np.empty(nq + 1, np.int64)
    lims[0] = 0
    tot = (l1[nq] - l1[0]) + (l2[nq] - l2[0])
    oi = np.empty(tot, np.int64)
    od = np.empty(tot, np.int32)
    p = 0
    for j in range(nq):
        for k in range(l1[j], l1[j + 1]):
            oi[p] = i1[k]
            od[p] = d1[k]
            p += 1
        for k in range(l2[j], l2[j + 1]):
            oi[p] = i2[k]
            od[p] = d2[k]
            p += 1
        lims[j + 1] = p
    return lims, oi, od


# --------------------------------------------------------------------------- MIH build


@njit(cache=True, nogil=True)
def build_direct_table(
    c: np.ndarray,
    W: int,
    n: int,
    start: int,
    length: int,
    offsets: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    lo_tmp: np.ndarray,
) -> None:
    """Counting sort of rows by the substring ``[start, start+length)``.

    Fills ``offsets`` (``2**length + 1`` uint32: bucket k holds ``rows[offsets[k]:
    offsets[k+1]]``) and ``rows`` (n uint32, ascending within a bucket). ``keys`` (n
    uint32) and ``lo_tmp`` (n uint16) are caller-owned scratch, reused across tables:
    numpy's big allocations get transparent huge pages, fresh in-kernel ones would page-fault
    4 KiB at a time on every table.

    A one-pass counting sort into 2**24 buckets is latency-bound (every increment and every
    scatter is a DRAM miss: ~1 s per table at 10M here). So it is a two-level MSD radix
    sort instead: pass 1 scatters rows (and their low digit) by the high digit into at most
    ~1,000 sequential write streams; pass 2 counting-sorts each high bucket in place by
    its low 14 bits, with its slices of ``offsets`` and ``rows`` resident in L2.
    """
    lo_bits = min(length, 14)
    hi_bits = length - lo_bits
    nhi = 1 << hi_bits
    nlo = 1 << lo_bits
    lo_mask = np.uint32(nlo - 1)
    hist = np.zeros(nhi + 1, np.int64)
    for i in range(n):
        k = np.uint32(_extract(c, i * W, start, length))
        keys[i] = k
        hist[np.int64(k >> lo_bits) + 1] += 1
    for b in range(nhi):
        hist[b + 1] += hist[b]
    # pass 1: stable scatter of rows (and low digits) by high digit
    cur = hist[:-1].copy()
    for i in range(n):
        k = keys[i]
        h = np.int64(k >> lo_bits)
        p = cur[h]
        rows[p] = i
        lo_tmp[p] = k & lo_mask
        cur[h] = p + 1
    # pass 2: per high bucket, stable counting sort by low digit, in place via a copy
    biggest = 0
    for b in range(nhi):
        biggest = max(biggest, hist[b + 1] - hist[b])
    buf = np.empty(biggest, np.uint32)
    cnt = np.empty(nlo + 1, np.int64)
    for b in range(nhi):
        s = hist[b]
        e = hist[b + 1]
        cnt[:] = 0
        for p in range(s, e):
            cnt[np.int64(lo_tmp[p]) + 1] += 1
            buf[p - s] = rows[p]
        base = b << lo_bits
        acc = s
        for j in range(nlo):
            acc += cnt[j]
            cnt[j] = acc
            offsets[base + j] = acc
        for p in range(s, e):
            lo = np.int64(lo_tmp[p])
            q = cnt[lo]
            rows[q] = buf[p - s]
            cnt[lo] = q + 1
    offsets[nhi << lo_bits] = n


@njit(cache=True, nogil=True)
def gather_prefixes(c: np.ndarray, W: int, rows: np.ndarray, IW: int, out: np.ndarray) -> None:
    """``out[p * IW + w] = c[rows[p] * W + w]`` for ``w < IW``: one inline table's code
    prefixes in its bucket order (rows ascend within a bucket, so reads are mostly forward)."""
    for p in range(rows.shape[0]):
        b = np.int64(rows[p]) * W
        for w in range(IW):
            out[p * IW + w] = c[b + w]


@njit(cache=True, nogil=True)
def substring_keys(c: np.ndarray, W: int, n: int, start: int, length: int) -> np.ndarray:
    """Substring keys of every row, for the sorted-keys table layout (wide substrings)."""
    keys = np.empty(n, np.uint64)
    for i in range(n):
        keys[i] = _extract(c, i * W, start, length)
    return keys


@njit(cache=True, nogil=True)
def flip_masks(length: int, r: int, total: int) -> np.ndarray:
    """All ``length``-bit masks with at most ``r`` bits set, by popcount (Gosper's hack).

    ``total`` is the count (sum of binomials), computed exactly by the caller.
    """
    out = np.empty(total, np.uint64)
    k = 0
    limit = np.uint64(1) << np.uint64(length)
    for bits_set in range(0, min(r, length) + 1):
        if bits_set == 0:
            out[k] = 0
            k += 1
            continue
        v = (np.uint64(1) << np.uint64(bits_set)) - np.uint64(1)
        while v < limit:
            out[k] = v
            k += 1
            c = v & (~v + np.uint64(1))
            rr = v + c
            v = (((rr ^ v) >> np.uint64(2)) // c) | rr
    return out


# --------------------------------------------------------------------------- MIH query

_PF = 64  # prefetch distance (items) in the MIH query phases
_PF_ALL = 512  # up to this many probes, phase A prefetches all offsets at once
#: Inline bucket rows prefetched at most (1 MB of 128-bit prefixes; a uniform 1M PDQ query
#: reads ~4,200, a 10M pHash one ~51,000). Past it a query is inside a dense cluster: its
#: rows stream in anyway, and prefetching them all would evict the lines the query before
#: it is about to read.
_PF_MAX_ROWS = 65536

# Columns of the per-table ``meta`` int64 array.
M_START = 0  # first bit of the substring
M_LEN = 1  # substring length in bits (1..32)
M_DIRECT = 2  # 1: offsets indexed by key; 0: sorted unique keys + binary search
M_OFF = 3  # base of this table's offsets in ``offsets``
M_KEY = 4  # base of this table's keys in ``keys`` (sorted layout)
M_NKEY = 5  # number of unique keys (sorted layout)
M_ROWS = 6  # base of this table's rows in ``rows``
M_NCOLS = 7


@njit(cache=True, nogil=True)
def _bounds(
    q: np.ndarray,
    meta: np.ndarray,
    rad: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    masks: np.ndarray,
    mask_off: np.ndarray,
    plo: np.ndarray,
    phi: np.ndarray,
) -> int:
    """Phase A of ``_mih_one``: the bucket bounds ``plo[mi]:phi[mi]`` of every probe;
    returns the rows they hold in all.

    With few probes in all (the inline layout's 272 at 1M PDQ) every offset is prefetched
    up front, so the tables' misses overlap rather than one table's 17 at a time.
    """
    m = meta.shape[0]
    if mask_off[-1] <= _PF_ALL:
        for t in range(m):
            if rad[t] >= 0 and meta[t, M_DIRECT] == 1:
                qk = _extract(q, 0, meta[t, M_START], meta[t, M_LEN])
                obase = meta[t, M_OFF]
                for mi in range(mask_off[t], mask_off[t + 1]):
                    _prefetch(offsets, obase + np.int64(qk ^ masks[mi]))
    for t in range(m):
        if rad[t] < 0:
            continue
        qk = _extract(q, 0, meta[t, M_START], meta[t, M_LEN])
        obase = meta[t, M_OFF]
        if meta[t, M_DIRECT] == 1:
            for s0 in range(mask_off[t], mask_off[t + 1], _PF):
                e0 = min(s0 + _PF, mask_off[t + 1])
                for mi in range(s0, e0):
                    _prefetch(offsets, obase + np.int64(qk ^ masks[mi]))
                for mi in range(s0, e0):
                    kk = obase + np.int64(qk ^ masks[mi])
                    plo[mi] = offsets[kk]
                    phi[mi] = offsets[kk + 1]
        else:
            kbase = meta[t, M_KEY]
            nkey = meta[t, M_NKEY]
            for mi in range(mask_off[t], mask_off[t + 1]):
                key = qk ^ masks[mi]
                a = kbase
                b = kbase + nkey
                while a < b:
                    mid = (a + b) >> 1
                    if keys[mid] < key:
                        a = mid + 1
                    else:
                        b = mid
                if a < kbase + nkey and keys[a] == key:
                    j = obase + a - kbase
                    plo[mi] = offsets[j]
                    phi[mi] = offsets[j + 1]
                else:
                    plo[mi] = 0
                    phi[mi] = 0
    total = 0
    for t in range(m):
        if rad[t] >= 0:
            for mi in range(mask_off[t], mask_off[t + 1]):
                total += np.int64(phi[mi]) - np.int64(plo[mi])
    return total


@njit(cache=True, nogil=True)
def _prefetch_lines(
    meta: np.ndarray,
    rad: np.ndarray,
    inline: np.ndarray,
    IW: int,
    mask_off: np.ndarray,
    plo: np.ndarray,
    phi: np.ndarray,
) -> None:
    """Prefetch every probed bucket's inline prefixes (one short sequential run each, so
    their misses overlap)."""
    for t in range(meta.shape[0]):
        if rad[t] < 0:
            continue
        rbase = meta[t, M_ROWS]
        for mi in range(mask_off[t], mask_off[t + 1]):
            _prefetch_bucket(inline, IW, rbase + np.int64(plo[mi]), rbase + np.int64(phi[mi]))


@njit(cache=True, nogil=True)
def _prefetch_bucket(inline: np.ndarray, IW: int, lo: int, hi: int) -> None:
    """Prefetch the inline prefixes of bucket rows ``lo:hi`` (absolute rows)."""
    for a in range(lo * IW, hi * IW, 8):  # 8 words = one cache line
        _prefetch(inline, a)
    if hi > lo:  # buckets rarely start on a line: the last one may be one more
        _prefetch(inline, hi * IW - 1)


@njit(cache=True, nogil=True)
def _worth_prefetching(total: int, max_rows: int) -> bool:
    """Whether a query's ``total`` bucket rows are prefetched: not when it will fall back
    to a scan (over ``max_rows``) or sits in a dense cluster (over ``_PF_MAX_ROWS``)."""
    return total <= min(max_rows, _PF_MAX_ROWS)


@njit(cache=True, nogil=True)
def _stage(
    q: np.ndarray,
    meta: np.ndarray,
    rad: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    inline: np.ndarray,
    IW: int,
    masks: np.ndarray,
    mask_off: np.ndarray,
    plo: np.ndarray,
    phi: np.ndarray,
    max_rows: int,
) -> int:
    """Phase A of ``_mih_one`` (``_bounds``); for the inline layout also the prefetch of
    the probed buckets when ``_worth_prefetching``. Returns the buckets' rows in all."""
    total = _bounds(q, meta, rad, offsets, keys, masks, mask_off, plo, phi)
    if IW > 0 and _worth_prefetching(total, max_rows):
        _prefetch_lines(meta, rad, inline, IW, mask_off, plo, phi)
    return total


#: What a batch's query prefetches for the queries after it while it is gathered
#: (``_gather_inline``): the next query's bucket bounds ``plo``/``phi`` and whether to
#: prefetch its buckets; the query after it, whether to prefetch the bucket offsets it
#: will read, and the tables' ``offsets`` and ``masks`` to find them.
Ahead = tuple[np.ndarray, np.ndarray, bool, np.ndarray, bool, np.ndarray, np.ndarray]


@njit(cache=True, nogil=True)
def _mih_one(
    c: np.ndarray,
    W: int,
    ids: np.ndarray,
    dead: np.ndarray,
    q: np.ndarray,
    radius: int,
    meta: np.ndarray,
    rad: np.ndarray,
    rows: np.ndarray,
    inline: np.ndarray,
    IW: int,
    mask_off: np.ndarray,
    x: np.ndarray,
    plo: np.ndarray,
    phi: np.ndarray,
    total: int,
    max_cand: int,
    max_rows: int,
    out_ids: np.ndarray,
    out_d: np.ndarray,
    cnt: int,
    ahead: Ahead,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact range search of one query through the multi-index tables.

    Table t is probed at every key within ``rad[t]`` bits of the query's substring t
    (``rad[t] == -1``: table skipped). The radii satisfy ``sum(rad + 1) >= radius + 1`` so,
    by pigeonhole, every row within ``radius`` has some substring t within ``rad[t]`` and
    is found. Candidates are verified with the full distance. A hit is reported only by the
    first table that can find it (its substring distance in every earlier probed table
    exceeds that table's radius), which dedupes exactly without a visited set.
    ``mask_off[t]:mask_off[t+1]`` are table t's probes.

    The work is split in three branch-light phases (bucket bounds, candidate rows,
    verification) instead of one nested loop: in the nested loop the bucket-size branch
    depends on a DRAM miss and mispredicts, serialising the ~3,000 misses of a query
    (~1 ms at 10M). Phased, each phase's misses are independent and overlap (~0.1 ms).
    Phase A (the bucket bounds ``plo``/``phi`` and the ``total`` rows they hold, and for
    the inline layout the prefetch of those buckets) has already run in ``mih_batch``.
    ``ahead``: what phase B prefetches for the queries after this one as it goes (see
    ``Ahead`` and ``_gather_inline``).

    If the query would fetch more than ``max_cand`` codes (a query inside a dense cluster
    of near-identical codes, e.g. the all-zero PDQ hashes of blank images), verifying them
    would cost more than a scan, so it returns ``-1 - cnt`` and the caller answers this
    query with a scan instead: the MIH path is never much slower than brute force, whatever
    the data. The rows layout fetches every row of its buckets; the inline layout fetches
    only the rows its prefix filter lets through, and reads at most ``max_rows`` bucket
    rows (for the rows layout the two bounds are equal). (Signalled rather than scanned
    here so ``flat_scan`` is not compiled into a second entry point: each copy costs
    seconds of cold JIT.)
    """
    m = meta.shape[0]
    # phase B: gather candidate rows (and the table that found each)
    if total > max_rows:
        return out_ids, out_d, -1 - cnt  # caller scans this query instead
    if IW > 0:  # inline layout: only the rows whose prefix is within the radius go on
        cand = np.empty(min(total, max_cand) + 1, np.uint32)  # one more: "too many"
        ctab = np.empty(cand.shape[0], np.int32)
        total = _gather_inline(
            q, radius, meta, rad, rows, inline, IW, mask_off, plo, phi, cand, ctab, ahead
        )  # fmt: skip
    else:
        cand = np.empty(total, np.uint32)
        ctab = np.empty(total, np.int32)
    if total > max_cand:
        return out_ids, out_d, -1 - cnt  # caller scans this query instead
    if IW == 0:
        k = 0
        for t in range(m):
            if rad[t] < 0:
                continue
            rbase = meta[t, M_ROWS]
            for s0 in range(mask_off[t], mask_off[t + 1], _PF):
                e0 = min(s0 + _PF, mask_off[t + 1])
                for mi in range(s0, e0):
                    _prefetch(rows, rbase + np.int64(plo[mi]))
                for mi in range(s0, e0):
                    for p in range(np.int64(plo[mi]), np.int64(phi[mi])):
                        cand[k] = rows[rbase + p]
                        ctab[k] = t
                        k += 1
    # phase C: verify; report a hit only from the first table able to find it. Hits are
    # compacted in place into cand/ctab (slot h <= k is already consumed), so the growable
    # output is touched once per query, not inside the candidate loop (see flat_scan).
    h = 0
    for k in range(total):
        if k % _PF == 0:
            for k2 in range(k, min(k + _PF, total)):
                _prefetch(c, np.int64(cand[k2]) * W)
        row = np.int64(cand[k])
        b0 = row * W
        d = 0
        for w in range(W):
            d += _ctpop(c[b0 + w] ^ q[w])
        if d > radius or dead[row]:
            continue
        t = ctab[k]
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
        cand[h] = np.uint32(row)
        ctab[h] = d
        h += 1
    while cnt + h > out_ids.shape[0]:
        out_ids, out_d = _grow(out_ids, out_d)
    for j in range(h):
        out_ids[cnt + j] = ids[np.int64(cand[j])]
        out_d[cnt + j] = ctab[j]
    cnt += h
    return out_ids, out_d, cnt


@njit(cache=True, nogil=True)
def _gather_inline(
    q: np.ndarray,
    radius: int,
    meta: np.ndarray,
    rad: np.ndarray,
    rows: np.ndarray,
    inline: np.ndarray,
    IW: int,
    mask_off: np.ndarray,
    plo: np.ndarray,
    phi: np.ndarray,
    cand: np.ndarray,
    ctab: np.ndarray,
    ahead: Ahead,
) -> int:
    """Phase B of ``_mih_one`` for the inline layout (mih.py): the candidates worth a full
    check, into ``cand``/``ctab``; returns how many (all of ``cand`` if it filled up).

    The buckets' inline prefixes were prefetched (``_stage``, or while the previous query
    was gathered) and are read in order. The distance over the ``IW``-word prefix is a
    lower bound of the full distance, so a row whose prefix is already beyond ``radius``
    is dropped without its code ever being fetched: for codes far from the query (nearly
    all of them) that is every row. Phase C then checks the rest exactly as for the rows
    layout (full distance with prefetch, tombstone, first-table dedupe), so the two
    layouts cannot differ in what they return.

    With ``pfn`` (from ``ahead``) the next query's bucket at the same probe is prefetched
    before each bucket is read: its ~5 lines then stream in while this query computes, a
    few at a time. Prefetching all ~1,400 lines of the next query in one burst
    (``_stage``) hid less (measured at 1M PDQ, 3,000 random queries: 61-64 us per query
    that way, 46-49 spread out), likely because a burst overflows the core's miss buffers.
    The prefix distance is written out for 1 and 2 words (pHash, PDQ) so the compiler keeps
    the query in registers (8-12% of the batch time). With ``pf2`` the bucket offsets of
    the query after the next (``q2``, direct tables) are prefetched alongside, so reading
    its bounds before the next gather finds them cached (5-13% more, measured the same
    way).
    """
    plo_n, phi_n, pfn, q2, pf2, offsets, masks = ahead
    m = meta.shape[0]
    k = 0
    q0 = q[0]
    q1 = q[1] if IW > 1 else np.uint64(0)
    for t in range(m):
        if rad[t] < 0:
            continue
        rbase = meta[t, M_ROWS]
        d2 = pf2 and meta[t, M_DIRECT] == 1
        qk2 = _extract(q2, 0, meta[t, M_START], meta[t, M_LEN]) if d2 else np.uint64(0)
        obase = meta[t, M_OFF]
        for mi in range(mask_off[t], mask_off[t + 1]):
            if d2:  # the offsets query j+2 will read (``_bounds``)
                _prefetch(offsets, obase + np.int64(qk2 ^ masks[mi]))
            if pfn:  # the next query's bucket at this probe, spread over this one's work
                _prefetch_bucket(
                    inline, IW, rbase + np.int64(plo_n[mi]), rbase + np.int64(phi_n[mi])
                )
            for p in range(rbase + np.int64(plo[mi]), rbase + np.int64(phi[mi])):
                if IW == 2:
                    d = _ctpop(inline[2 * p] ^ q0) + _ctpop(inline[2 * p + 1] ^ q1)
                elif IW == 1:
                    d = _ctpop(inline[p] ^ q0)
                else:
                    d = 0
                    for w in range(IW):
                        d += _ctpop(inline[p * IW + w] ^ q[w])
                if d <= radius:
                    if k == cand.shape[0]:
                        return k  # more than the caller will fetch: it scans instead
                    cand[k] = rows[p]
                    ctab[k] = t
                    k += 1
    return k


@njit(cache=True, nogil=True)
def mih_batch(
    c: np.ndarray,
    W: int,
    ids: np.ndarray,
    dead: np.ndarray,
    Q: np.ndarray,
    radius: int,
    meta: np.ndarray,
    rad: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    rows: np.ndarray,
    inline: np.ndarray,
    IW: int,
    masks: np.ndarray,
    mask_off: np.ndarray,
    max_cand: int,
    max_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Many queries through the MIH tables, sequentially; returns CSR plus a mask of the
    queries that must be answered by a scan instead (``max_cand``, ``max_rows``: see
    ``_mih_one``).

    Also the single-query entry point (a batch of one): every extra njit entry point that
    inlines ``_mih_one`` costs seconds of cold compile in a fresh checkout (CI).
    """
    nq = Q.shape[0]
    lims = np.zeros(nq + 1, np.int64)
    out_ids = np.empty(64, np.int64)
    out_d = np.empty(64, np.int32)
    x = np.empty(W, np.uint64)
    nprobe = mask_off[-1]
    plo = np.empty((2, nprobe), np.uint32)
    phi = np.empty((2, nprobe), np.uint32)
    scan = np.zeros(nq, np.bool_)
    # inline layout, more than one query: a pipeline. Query j+1's bucket bounds are read
    # before query j is gathered, and j's gather prefetches, as it goes, j+1's buckets and
    # the offsets j+2 will read (``_gather_inline``), so those misses are in flight while
    # j computes. The first query, and with the rows layout every query (its candidate
    # fetches depend on its row reads and gain nothing from this), is staged whole
    # (``_stage``) before its turn
    piped = IW > 0 and nq > 1
    total = 0
    if nq:
        total = _stage(
            Q[0], meta, rad, offsets, keys, inline, IW, masks, mask_off, plo[0], phi[0],
            max_rows,
        )  # fmt: skip
    total_next = 0
    cnt = 0
    for j in range(nq):
        s = j & 1
        pfn = False
        if piped and j + 1 < nq:
            total_next = _bounds(
                Q[j + 1], meta, rad, offsets, keys, masks, mask_off, plo[1 - s], phi[1 - s]
            )
            pfn = _worth_prefetching(total_next, max_rows)
        out_ids, out_d, c2 = _mih_one(
            c, W, ids, dead, Q[j], radius, meta, rad, rows, inline, IW, mask_off, x,
            plo[s], phi[s], total, max_cand, max_rows, out_ids, out_d, cnt,
            (plo[1 - s], phi[1 - s], pfn, Q[min(j + 2, nq - 1)], piped and j + 2 < nq,
             offsets, masks),
        )  # fmt: skip
        if not piped and j + 1 < nq:
            total_next = _stage(
                Q[j + 1], meta, rad, offsets, keys, inline, IW, masks, mask_off, plo[1 - s],
                phi[1 - s], max_rows,
            )  # fmt: skip
        total = total_next
        if c2 < 0:
            scan[j] = True
        else:
            cnt = c2
        lims[j + 1] = cnt
    return lims, out_ids[:cnt].copy(), out_d[:cnt].copy(), scan
