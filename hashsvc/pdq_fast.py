"""Exact, fast PDQ hashing: a numba port of Meta's reference C++ PDQ.

Why this exists: hashes that leave the service must agree bit for bit with Meta's
reference PDQ (as exposed by the ``pdqhash`` PyPI binding), because partners match
them against their own lists with tight Hamming thresholds. ``pdqhash.compute`` is
slow (~25-40 ms for 1024x768) mostly because the binding computes luma in float64 numpy
and then runs the C++ Jarosz box filters over the full-resolution image four times.
This module performs the *same float32 operations in the same order* per pixel, so
the output is identical, but avoids the waste:

* luma is computed row by row inside the kernel, never as a full-size float64 array
  (with a float32 formula proven equal to the binding's float64 expression, see
  ``_luma_row_rgb``);
* the four box-filter passes are streamed: only ``window + 4`` full-width rows are
  alive at a time, so nothing large is allocated (no page-fault or cache-miss storm);
* along-row running sums of several rows (4 in pass 1, 6 in pass 3) are advanced
  together as independent dependency chains, hiding FP-add latency, and the divisions
  are done afterwards with SIMD; along-column passes keep one running sum per column and
  advance a whole row at a time (SIMD across columns). Each chain still performs exactly
  ``box1DFloat``'s sequence ``sum += in[ri]; sum -= in[li]; out = sum / window_count``;
* the last row pass is divided only at the 64 columns ``decimateFloat`` samples and the
  last column pass runs only on those 64 columns; running sums still cover every pixel
  because float rounding depends on the whole history.

C++ semantics reproduced on purpose (all verified against the binding by
``tests/test_pdq_fast.py``):

* every accumulator is ``float`` (float32); no FMA contraction (the binding is built
  for baseline x86-64 without FMA and numba does not contract without fastmath);
* ``sum / current_window_size`` is a float32 division by the (exact) float count;
* the DCT matrix entries are ``float(float32(sqrt(2/64)) * cos(...))``: the scale
  factor is first rounded to float32 and then multiplied in double (this matters:
  using the double scale factor changes 112 of 1024 entries by one ulp);
* the quality metric truncates ``((u - v) * 100) / 255`` computed in float32;
* inputs with fewer than 5 rows or columns hash to all zeros with quality 0;
* an exactly 64x64 input skips the blur in the plain hash (``pdqFloat256FromFloatLuma``)
  but NOT in the dihedral hash (``pdqDihedralHash256esFromFloatLuma`` always blurs),
  so for 64x64 images the "original" dihedral hash can differ from the plain hash,
  exactly as in the reference;
* the median is Torben's algorithm in float32 (ties resolved as in C), and a bit is set
  when the coefficient is strictly greater than the median.

Bit order: the returned 256-vector is in ``pdqhash.compute``'s order (the binding's
``hash_to_vector``: coefficient ``k = 16*i + j`` of the 16x16 DCT lands at index
``255 - k``), so ``np.packbits(bits).tobytes().hex()`` yields the industry hex string.

All kernels are ``@njit(cache=True, nogil=True, error_model="numpy")``, single-threaded
(callers can hash several images in parallel threads since the GIL is released);
nothing is compiled at import time (numba compiles on first call and caches to disk).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

__all__ = [
    "luma_from_rgb",
    "pdq_from_luma",
    "pdq_dihedral_from_luma",
    "pdq_from_rgb",
    "pdq_dihedral_from_rgb",
    "pdq_from_gray_u8",
]

# Minimum hashable dimension in the reference (MIN_HASHABLE_DIM).
_MIN_DIM = 5


def _build_dct_matrix() -> np.ndarray:
    """16x64 float32 DCT matrix, built exactly like the C++ ``dct_matrix_64`` lambda.

    C++: ``const float matrix_scale_factor = std::sqrt(2.0 / 64.0);`` (rounded to float)
    then ``float = matrix_scale_factor * std::cos((pi / 2.0 / 64.0) * (i + 1) * (2j + 1))``
    evaluated in double. ``math.cos`` is the same libm cos the C++ uses.
    """
    scale = float(np.float32(math.sqrt(2.0 / 64.0)))
    pi = 3.14159265358979323846
    d = np.empty((16, 64), dtype=np.float32)
    for i in range(16):
        for j in range(64):
            d[i, j] = np.float32(
                scale * math.cos((pi / 2.0 / 64.0) * float(i + 1) * float(2 * j + 1))
            )
    return d


_DCT = _build_dct_matrix()
_EMPTY_U8 = np.zeros(1, dtype=np.uint8)
_EMPTY_F32 = np.zeros(1, dtype=np.float32)


# ----------------------------------------------------------------------------
# Downsampling: jaroszFilterFloat (box1DFloat x 4) + decimateFloat.
#
# Performance notes (each verified by timing):
# * error_model="numpy": numba's default Python error model adds a division-by-zero
#   check to every float division, which blocks SIMD vectorisation. No division here
#   can have a zero divisor, so results are unchanged.
# * Hot loops index with the bare loop variable over pre-sliced views. An index such as
#   ``a[t - w]`` makes numba emit negative-index wraparound code, which also blocks
#   vectorisation (measured ~6x slower for the division loop).
# ----------------------------------------------------------------------------

_G = 4  # rows advanced together by the first along-row pass (independent chains)


# Geometry (window sizes, divisors, sample positions) is computed in plain Python/numpy
# and passed in: every separately jitted function costs ~0.5 s of cold compile.


@functools.lru_cache(maxsize=512)
def _geometry(nr: int, nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row divisors, column divisors, decimation rows, decimation columns); not mutated."""
    return (
        _counts(nc, _window(nc)),
        _counts(nr, _window(nr)),
        _decimation_indices(nr),
        _decimation_indices(nc),
    )


def _window(old_dim: int) -> int:
    """computeJaroszFilterWindowSize(old_dim, 64)."""
    return (old_dim + 2 * 64 - 1) // (2 * 64)


def _decimation_indices(n: int) -> np.ndarray:
    """decimateFloat's sample positions: (int)(((out + 0.5) * n) / 64) in double."""
    return np.array([int(((o + 0.5) * n) / 64) for o in range(64)], dtype=np.int64)


def _counts(n: int, w: int) -> np.ndarray:
    """box1DFloat's divisor (current window size) per output position, as float32.

    Output ``oi`` is written at step ``t = oi + half - 1``; the window then holds
    ``t + 1`` elements while growing, ``w`` when full and fewer while shrinking.
    """
    t = np.arange(n, dtype=np.int64) + (w + 2) // 2 - 1
    cnt = np.where(t < w, t + 1, np.where(t < n, w, w - (t - n + 1)))
    return cnt.astype(np.float32)


@njit(cache=True, nogil=True, error_model="numpy")
def _row_chains(src: np.ndarray, w: int, sums: np.ndarray) -> None:
    """box1DFloat's running sum along each of the ``_G`` rows of ``src`` (G, n).

    ``sums[g, t]`` is the float32 accumulator after step ``t``; output ``oi`` of the
    reference is ``sums[g, oi + half - 1] / count``. Each row is one strict dependency
    chain (``sum += in[ri]; sum -= in[li]``), so four rows are interleaved to hide
    FP-add latency; the divisions are done by the caller, vectorised.
    """
    n = src.shape[1]
    h1 = (w + 2) // 2 - 1
    m = n - w
    ng = src.shape[0]  # == _G; a runtime bound keeps LLVM from unrolling (compile time)
    # Phases 1 and 2 (t < w): add only.
    for g in range(ng):
        s = np.float32(0.0)
        row = src[g]
        out = sums[g]
        for t in range(w):
            s += row[t]
            out[t] = s
    # Phase 3 (w <= t < n): add the entering element, then subtract the leaving one.
    s0 = sums[0, w - 1]
    s1 = sums[1, w - 1]
    s2 = sums[2, w - 1]
    s3 = sums[3, w - 1]
    a0 = src[0, w:n]
    a1 = src[1, w:n]
    a2 = src[2, w:n]
    a3 = src[3, w:n]
    b0 = src[0, 0:m]
    b1 = src[1, 0:m]
    b2 = src[2, 0:m]
    b3 = src[3, 0:m]
    o0 = sums[0, w:n]
    o1 = sums[1, w:n]
    o2 = sums[2, w:n]
    o3 = sums[3, w:n]
    for i in range(m):
        s0 = (s0 + a0[i]) - b0[i]
        o0[i] = s0
        s1 = (s1 + a1[i]) - b1[i]
        o1[i] = s1
        s2 = (s2 + a2[i]) - b2[i]
        o2[i] = s2
        s3 = (s3 + a3[i]) - b3[i]
        o3[i] = s3
    # Phase 4 (n <= t < n + half - 1): subtract only.
    for g in range(ng):
        s = sums[g, n - 1]
        row = src[g, m:n]
        out = sums[g, n : n + h1]
        for i in range(h1):
            s -= row[i]
            out[i] = s


_G3 = 6  # rows advanced together by the last along-row pass (no stores -> 6 fit in registers)


@njit(cache=True, nogil=True, error_model="numpy")
def _row_samples(
    src: np.ndarray, w: int, steps: np.ndarray, cnt_at: np.ndarray, out: np.ndarray
) -> None:
    """box1DFloat along each row of ``src`` (G3, n), evaluated only at sorted ``steps``.

    ``steps[o]`` is the step at which the wanted output is written (``oi + half - 1``)
    and ``cnt_at[o]`` its divisor; ``out[g, o]`` receives ``sum / count``. The running
    sums still visit every element in the reference's order, but nothing is stored
    between samples, so six independent chains fit in registers. Indices are unsigned
    so numba emits no negative-index wraparound code in the hot loop.
    """
    n = src.shape[1]
    ng = src.shape[0]  # == _G3
    m = n - w
    h1 = (w + 2) // 2 - 1
    nt = steps.size
    state = np.empty(ng, dtype=np.float32)
    # Phases 1 and 2 (t < w): add only; per row, recording samples that fall here.
    o12 = 0
    while o12 < nt and steps[o12] < w:
        o12 += 1
    for g in range(ng):
        row = src[g]
        acc = np.float32(0.0)
        o = 0
        for t in range(w):
            acc += row[t]
            while o < o12 and steps[o] == t:
                out[g, o] = acc / cnt_at[o]
                o += 1
        state[g] = acc
    # Phase 3 (w <= t < n): add then subtract, six rows at once, segment by segment.
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    s4 = state[4]
    s5 = state[5]
    a0 = src[0, w:n]
    a1 = src[1, w:n]
    a2 = src[2, w:n]
    a3 = src[3, w:n]
    a4 = src[4, w:n]
    a5 = src[5, w:n]
    b0 = src[0, 0:m]
    b1 = src[1, 0:m]
    b2 = src[2, 0:m]
    b3 = src[3, 0:m]
    b4 = src[4, 0:m]
    b5 = src[5, 0:m]
    one = np.uint64(1)
    i = np.uint64(0)
    o = o12
    while o < nt and steps[o] < n:
        end = np.uint64(steps[o] - w + 1)
        k = i
        while k < end:
            s0 = (s0 + a0[k]) - b0[k]
            s1 = (s1 + a1[k]) - b1[k]
            s2 = (s2 + a2[k]) - b2[k]
            s3 = (s3 + a3[k]) - b3[k]
            s4 = (s4 + a4[k]) - b4[k]
            s5 = (s5 + a5[k]) - b5[k]
            k += one
        if end > i:
            i = end
        c = cnt_at[o]
        out[0, o] = s0 / c
        out[1, o] = s1 / c
        out[2, o] = s2 / c
        out[3, o] = s3 / c
        out[4, o] = s4 / c
        out[5, o] = s5 / c
        o += 1
    if o == nt:
        return
    # Phase 4 (t >= n): subtract only. Never reached by PDQ's decimation grid (checked
    # for every size below 200000) but kept exact for completeness.
    k = i
    while k < np.uint64(m):
        s0 = (s0 + a0[k]) - b0[k]
        s1 = (s1 + a1[k]) - b1[k]
        s2 = (s2 + a2[k]) - b2[k]
        s3 = (s3 + a3[k]) - b3[k]
        s4 = (s4 + a4[k]) - b4[k]
        s5 = (s5 + a5[k]) - b5[k]
        k += one
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    state[4] = s4
    state[5] = s5
    o4 = o
    for g in range(ng):
        row = src[g, m:n]
        acc = state[g]
        o = o4
        for t in range(h1):
            acc -= row[t]
            while o < nt and steps[o] == n + t:
                out[g, o] = acc / cnt_at[o]
                o += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _luma_row_rgb(rgb_row: np.ndarray, dst: np.ndarray) -> None:
    """One row of luma, bit-identical to the binding's float64 numpy expression.

    The binding computes ``float32(R*0.299 + G*0.587 + B*0.114)`` in double. That always
    equals ``float32(299R + 587G + 114B) / 1000f`` (exact integer in float32, then one
    correctly rounded division): the double expression is within ~1e-16 relative of the
    rational v/1000, while v/1000 (denominator 1000, never a float32 midpoint) stays
    ~1e-11 relative or more away from every float32 rounding boundary, so both round
    alike. ``tests/test_pdq_fast.py`` checks all 2**24 RGB triples.
    The float32 form vectorises (~3x faster than the double form).
    """
    kr = np.float32(299.0)
    kg = np.float32(587.0)
    kb = np.float32(114.0)
    k = np.float32(1000.0)
    for j in range(dst.size):
        dst[j] = (
            np.float32(rgb_row[3 * j]) * kr
            + np.float32(rgb_row[3 * j + 1]) * kg
            + np.float32(rgb_row[3 * j + 2]) * kb
        ) / k


@njit(cache=True, nogil=True, error_model="numpy")
def _fill_rows(
    kind: int, u8: np.ndarray, f32: np.ndarray, r0: int, nr: int, nc: int, dst: np.ndarray
) -> None:
    """Load the ``_G`` luma rows starting at ``r0`` into ``dst`` (rows past the end -> 0).

    kind 0: interleaved RGB uint8 (flat); kind 1: uint8 grey (flat); kind 2: float32 (flat).
    """
    for g in range(dst.shape[0]):
        r = r0 + g
        d = dst[g]
        if r >= nr:
            for j in range(nc):
                d[j] = np.float32(0.0)
        elif kind == 0:
            _luma_row_rgb(u8[3 * nc * r : 3 * nc * (r + 1)], d)
        elif kind == 1:
            src = u8[nc * r : nc * (r + 1)]
            for j in range(nc):
                d[j] = np.float32(src[j])
        else:
            srcf = f32[nc * r : nc * (r + 1)]
            for j in range(nc):
                d[j] = srcf[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _box_cols(src: np.ndarray, w: int, cnt: np.ndarray, out: np.ndarray, s: np.ndarray) -> None:
    """box1DFloat down every column of ``src`` (n, L) at once (one running sum per column).

    ``cnt`` is ``_counts(n, w)``.
    """
    n = src.shape[0]
    nl = src.shape[1]
    h1 = (w + 2) // 2 - 1
    for k in range(nl):
        s[k] = np.float32(0.0)
    for t in range(n + h1):
        if t < n:
            a = src[t]
            if t >= w:
                b = src[t - w]
                for k in range(nl):
                    s[k] = (s[k] + a[k]) - b[k]
            else:
                for k in range(nl):
                    s[k] += a[k]
        else:
            b = src[t - w]
            for k in range(nl):
                s[k] -= b[k]
        if t >= h1:
            c = cnt[t - h1]
            o = out[t - h1]
            for k in range(nl):
                o[k] = s[k] / c


@njit(cache=True, nogil=True, error_model="numpy")
def _downsample(
    kind: int,
    u8: np.ndarray,
    f32: np.ndarray,
    nr: int,
    nc: int,
    cnt_r: np.ndarray,
    cnt_c: np.ndarray,
    ii: np.ndarray,
    jj: np.ndarray,
    out64: np.ndarray,
) -> None:
    """jaroszFilterFloat (2 x rows-then-cols) + decimateFloat to 64x64, streamed by rows.

    Bit-identical to the reference but never materialises a full-size buffer: pass 1
    (rows, ``_G`` at a time) fills a ring of ``window + _G`` rows, pass 2 (columns)
    advances one running sum per column and emits one row per step, each group of
    ``_G3`` emitted rows goes straight through pass 3 (rows), evaluated only at the 64
    columns decimation samples, and pass 4 (columns) runs on those 64 columns only.

    ``cnt_r`` / ``cnt_c`` are ``_counts`` along rows / columns, ``ii`` / ``jj`` the
    decimation rows / columns.
    """
    wr = (nc + 127) // 128  # computeJaroszFilterWindowSize(nc, 64)
    wc = (nr + 127) // 128
    h1r = (wr + 2) // 2 - 1
    h1c = (wc + 2) // 2 - 1

    rows_in = np.zeros((_G, nc), dtype=np.float32)
    sums = np.zeros((_G, nc + h1r), dtype=np.float32)
    ring_n = wc + _G
    ring = np.zeros((ring_n, nc), dtype=np.float32)
    colsum = np.zeros(nc, dtype=np.float32)
    p2rows = np.zeros((_G3, nc), dtype=np.float32)
    p3 = np.empty((nr, 64), dtype=np.float32)
    p3g = np.empty((_G3, 64), dtype=np.float32)
    steps3 = np.empty(64, dtype=np.int64)
    cnt3 = np.empty(64, dtype=np.float32)
    for o in range(64):
        steps3[o] = jj[o] + h1r
        cnt3[o] = cnt_r[jj[o]]

    produced = 0  # pass-1 rows written to the ring so far
    for t in range(nr + h1c):
        # Pass 1 (along rows): ensure row t is in the ring.
        if t < nr and t >= produced:
            _fill_rows(kind, u8, f32, produced, nr, nc, rows_in)
            _row_chains(rows_in, wr, sums)
            for g in range(min(_G, nr - produced)):
                dst = ring[(produced + g) % ring_n]
                sv = sums[g, h1r : h1r + nc]
                for j in range(nc):
                    dst[j] = sv[j] / cnt_r[j]
            produced += _G
        # Pass 2 (along columns), step t: add row t, subtract row t - wc.
        if t < nr:
            a = ring[t % ring_n]
            if t >= wc:
                b = ring[(t - wc) % ring_n]
                for j in range(nc):
                    colsum[j] = (colsum[j] + a[j]) - b[j]
            else:
                for j in range(nc):
                    colsum[j] += a[j]
        else:
            b = ring[(t - wc) % ring_n]
            for j in range(nc):
                colsum[j] -= b[j]
        if t >= h1c:
            oi = t - h1c  # pass-2 output row
            c = cnt_c[oi]
            dst = p2rows[oi % _G3]
            for j in range(nc):
                dst[j] = colsum[j] / c
            # Pass 3 (along rows) on each completed group of pass-2 rows, evaluated at
            # the 64 sampled columns only.
            if oi % _G3 == _G3 - 1 or oi == nr - 1:
                g0 = oi - oi % _G3
                _row_samples(p2rows, wr, steps3, cnt3, p3g)
                for g in range(oi - g0 + 1):
                    for o in range(64):
                        p3[g0 + g, o] = p3g[g, o]

    # Pass 4 (along columns) on the 64 sampled columns, then sample 64 rows.
    p4 = np.empty((nr, 64), dtype=np.float32)
    s64 = np.empty(64, dtype=np.float32)
    _box_cols(p3, wc, cnt_c, p4, s64)
    for o in range(64):
        for q in range(64):
            out64[o, q] = p4[ii[o], q]


# ----------------------------------------------------------------------------
# 64x64 -> quality, DCT, median, bits.
# ----------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _quality(a: np.ndarray) -> int:
    """pdqImageDomainQualityMetric, with its float32 arithmetic and int truncation.

    (Loop bounds come from the array shape rather than literals throughout this section:
    literal trip counts make LLVM fully unroll the loops, which cost seconds of compile
    time for no run-time benefit on a 64x64 problem.)
    """
    n = a.shape[0]
    m = a.shape[1]
    g = 0
    hundred = np.float32(100.0)
    d255 = np.float32(255.0)
    for i in range(n - 1):
        for j in range(m):
            d = int(((a[i, j] - a[i + 1, j]) * hundred) / d255)
            g += abs(d)
    for i in range(n):
        for j in range(m - 1):
            d = int(((a[i, j] - a[i, j + 1]) * hundred) / d255)
            g += abs(d)
    q = g // 90
    return 100 if q > 100 else q


@njit(cache=True, nogil=True, error_model="numpy")
def _dct64to16(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """dct64To16: B = (D A) D^T with float32 sums accumulated in k order 0..63.

    Products are rounded to float32 before each add (no FMA), like the reference.
    """
    nk = d.shape[1]  # 64
    nb = d.shape[0]  # 16
    t = np.empty((nb, nk), dtype=np.float32)
    for i in range(nb):
        for j in range(nk):
            s = np.float32(0.0)
            for k in range(nk):
                s += d[i, k] * a[k, j]
            t[i, j] = s
    b = np.empty((nb, nb), dtype=np.float32)
    for i in range(nb):
        for j in range(nb):
            s = np.float32(0.0)
            for k in range(nk):
                s += t[i, k] * d[j, k]
            b[i, j] = s
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _torben(m: np.ndarray) -> np.float32:
    """Torben's median exactly as torben.cpp (float32 guess = (min + max) / 2)."""
    n = m.size
    mn = m[0]
    mx = m[0]
    for i in range(1, n):
        if m[i] < mn:
            mn = m[i]
        if m[i] > mx:
            mx = m[i]
    half = (n + 1) // 2
    two = np.float32(2.0)
    less = 0
    equal = 0
    guess = mn
    maxlt = mn
    mingt = mx
    while True:
        guess = (mn + mx) / two
        less = 0
        greater = 0
        equal = 0
        maxlt = mn
        mingt = mx
        for i in range(n):
            v = m[i]
            if v < guess:
                less += 1
                if v > maxlt:
                    maxlt = v
            elif v > guess:
                greater += 1
                if v < mingt:
                    mingt = v
            else:
                equal += 1
        if less <= half and greater <= half:
            break
        elif less > greater:
            mx = maxlt
        else:
            mn = mingt
    if less >= half:
        return maxlt
    elif less + equal >= half:
        return guess
    return mingt


@njit(cache=True, nogil=True, error_model="numpy")
def _bits_into(b: np.ndarray, out: np.ndarray) -> None:
    """pdqBuffer16x16ToBits, written in pdqhash's vector order (index 255 - k)."""
    flat = b.ravel()
    med = _torben(flat)
    n = flat.size
    for k in range(n):
        out[n - 1 - k] = 1 if flat[k] > med else 0


@njit(cache=True, nogil=True, error_model="numpy")
def _dihedral_aux(a: np.ndarray, which: int) -> np.ndarray:
    """The dct16OriginalTo* transforms (1=rot90 ... 7=flipMinus1)."""
    n = a.shape[0]
    b = np.empty((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            v = a[i, j]
            if which == 1:  # rotate 90
                b[j, i] = v if (j & 1) else -v
            elif which == 2:  # rotate 180
                b[i, j] = -v if ((i + j) & 1) else v
            elif which == 3:  # rotate 270
                b[j, i] = v if (i & 1) else -v
            elif which == 4:  # flip X
                b[i, j] = v if (i & 1) else -v
            elif which == 5:  # flip Y
                b[i, j] = v if (j & 1) else -v
            elif which == 6:  # flip plus 1
                b[j, i] = v
            else:  # flip minus 1
                b[j, i] = -v if ((i + j) & 1) else v
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _finish(a64: np.ndarray, d: np.ndarray, dihedral: bool, out: np.ndarray) -> int:
    q = _quality(a64)
    b = _dct64to16(a64, d)
    _bits_into(b, out[0])
    if dihedral:
        for w in range(1, 8):
            _bits_into(_dihedral_aux(b, w), out[w])
    return q


@njit(cache=True, nogil=True, error_model="numpy")
def _luma_kernel(rgb: np.ndarray, out: np.ndarray) -> None:
    nr, nc = out.shape
    flat = rgb.reshape(-1)
    for i in range(nr):
        _luma_row_rgb(flat[3 * nc * i : 3 * nc * (i + 1)], out[i])


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB array, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _check_luma(luma: np.ndarray) -> np.ndarray:
    luma = np.asarray(luma)
    if luma.dtype != np.float32 or luma.ndim != 2:
        raise ValueError(f"expected float32 (H, W) luma array, got {luma.dtype} {luma.shape}")
    return np.ascontiguousarray(luma)


def _hash(kind: int, arr: np.ndarray, dihedral: bool) -> tuple[np.ndarray, int]:
    """Shared driver. kind 0: RGB uint8 (H, W, 3); 1: grey uint8 (H, W); 2: float32 luma.

    Orchestration stays in Python on purpose: numba re-optimises the whole inlined call
    tree for every jitted caller, so a jitted wrapper around ``_downsample`` + ``_finish``
    roughly tripled the cold compile time, while two extra dispatches cost microseconds.
    """
    nr, nc = arr.shape[0], arr.shape[1]
    n_out = 8 if dihedral else 1
    out = np.zeros((n_out, 256), dtype=np.uint8)
    if nr < _MIN_DIM or nc < _MIN_DIM:
        # Reference: numRows < MIN_HASHABLE_DIM || numCols < MIN_HASHABLE_DIM -> zero hash.
        return (out if dihedral else out[0]), 0
    if nr == 64 and nc == 64 and not dihedral:
        # pdqFloat256FromFloatLuma's "already downsampled" shortcut: no blur at exactly
        # 64x64. The dihedral entry point has no such shortcut and always blurs.
        a64 = luma_from_rgb(arr) if kind == 0 else arr.astype(np.float32)  # exact copy
    else:
        a64 = np.empty((64, 64), dtype=np.float32)
        u8, f32 = (_EMPTY_U8, arr.reshape(-1)) if kind == 2 else (arr.reshape(-1), _EMPTY_F32)
        _downsample(kind, u8, f32, nr, nc, *_geometry(nr, nc), a64)
    if kind == 2 and not np.isfinite(a64).all():
        # NaN/inf poison the running sums; the reference then returns arbitrary bits
        # (NaN median). A hash of such a luma means nothing, so refuse it loudly.
        raise ValueError("luma contains NaN or infinity")
    q = _finish(a64, _DCT, dihedral, out)
    return (out if dihedral else out[0]), int(q)


def luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (H, W) luma, bit-identical to the pdqhash binding.

    The binding computes ``(R*0.299 + G*0.587 + B*0.114).astype('float32')`` in float64
    numpy, not the C++ float32 ``fillFloatLumaFromRGB``; the two differ in the last bit for
    31% of all RGB triples, which can flip hash bits, so we reproduce the binding.
    """
    rgb = _check_rgb(rgb)
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    _luma_kernel(rgb, out)
    return out


def pdq_from_luma(luma: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 (H, W) luma -> (uint8 (256,) hash bits, quality 0..100).

    The reference ``pdqHash256FromFloatLuma`` on the same luma, bit for bit. Bits are in
    ``pdqhash.compute``'s vector order, so ``np.packbits(bits).tobytes().hex()`` is the
    standard hex form. Raises ValueError when NaN/inf reach the 64x64 downsample (the
    reference would return meaningless bits).
    """
    return _hash(2, _check_luma(luma), False)


def pdq_dihedral_from_luma(luma: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 luma -> (uint8 (8, 256), quality): the 8 dihedral hashes from one DCT.

    Order as ``pdqhash.compute_dihedral``: original, rot90, rot180, rot270, flipX, flipY,
    flipPlus1, flipMinus1, so a rotated or mirrored upload can be matched without
    re-hashing. Note that for an exactly 64x64 input row 0 can differ from
    ``pdq_from_luma`` (the reference skips the blur only in the non-dihedral path).
    """
    return _hash(2, _check_luma(luma), True)


def pdq_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 (H, W, 3) RGB -> (bits (256,), quality), bit-identical to ``pdqhash.compute``.

    Luma is computed row by row inside the kernel and never materialised at full size.
    Any memory layout is accepted and hashes the image as shown. (The binding does not:
    for a Fortran-ordered or transposed array its luma keeps that memory order and the
    C++ reads it as row-major, hashing a scrambled image; we match the binding on
    C-contiguous input, which is what Pillow's ``np.asarray`` returns.)
    """
    return _hash(0, _check_rgb(rgb), False)


def pdq_dihedral_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 RGB -> (bits (8, 256), quality), bit-identical to ``pdqhash.compute_dihedral``."""
    return _hash(0, _check_rgb(rgb), True)


def pdq_from_gray_u8(gray: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 (H, W) luma plane (e.g. a JPEG decoded in Pillow mode "L") -> (bits, quality).

    Uses ``float32(gray)`` as the luma (the C++ ``fillFloatLumaFromGrey``), which skips RGB
    decoding work. It is NOT bit-identical to ``pdqhash.compute`` on the RGB decode of the
    same file: Pillow's "L" is an integer-rounded luma while the binding's is unrounded.
    Measured against ``pdqhash.compute(convert("RGB"))`` on the 49 readable images under
    shared/testdata/pdq: 43 identical, others 2-8 bits apart, and 36 bits on a
    quality-3 (nearly flat) photo; on 30 synthetic smooth images 0-22 bits. Use it only
    where reference parity is not required (e.g. a prefilter), never for exported hashes.
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected uint8 (H, W) array, got {gray.dtype} {gray.shape}")
    return _hash(1, np.ascontiguousarray(gray), False)


def pdq_dihedral_from_gray_u8(gray: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 (H, W) luma plane -> (bits (8, 256), quality): `pdq_from_gray_u8`'s 8
    dihedral variants. Equal to `pdq_dihedral_from_luma(float32(gray))` without
    materialising that float copy (4 bytes a pixel: ~0.5-1 ms of page faults and
    conversion per 1024x768 upload, paid twice when the matcher hashes a flipped copy)."""
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected uint8 (H, W) array, got {gray.dtype} {gray.shape}")
    return _hash(1, np.ascontiguousarray(gray), True)
