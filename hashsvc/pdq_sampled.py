"""PDQ for matching, computed only where PDQ samples: a fraction of the filtering work.

Why this exists: PDQ blurs the whole image with four box-filter passes (rows, columns,
rows, columns; Jarosz's tent approximation) and then keeps 64x64 pixels of the result.
`pdq_fast` runs those passes over every pixel because it must reproduce the reference's
float32 running sums bit for bit (hashes that leave the service). Matching does not need
that: the passes are linear, so each kept sample is a fixed weighted sum of a
(2w-1) x (2w-1) block of pixels (w the window), and the 64x64 buffer is

    buffer = V . image . H^T

with V (64 x rows) and H (64 x cols) the doubled box filter's rows at the 64 decimation
positions. The vertical stage reads each pixel about once (64 x cols x (2w-1)
multiply-adds, vectorised along the row); the horizontal one is 64 x 64 x (2w-1).

Mirror images come almost free: the buffer of the image flipped left-right is the same
vertical stage read backwards along the columns, so the matcher's second dihedral pass
(`hashing.pdq_dihedral`) costs one horizontal stage instead of a whole PDQ.

The buffer equals the reference's up to float32 rounding (the reference's running sums
carry the rounding of every pixel before; here each sample is one weighted sum), so a
DCT coefficient within ~1e-4 of the median can land on the other side: the hash drifts
by 0-2 bits from `pdq_fast` on the same pixels (tests/test_pdq_sampled.py bounds it;
bench/hashing.py measures it against Meta's reference). Never use it for hashes that
leave the service.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from hashsvc import pdq_fast

#: Smaller images go to `pdq_fast` (they cost little there, and the reference skips the
#: blur at exactly 64x64 in the plain hash).
MIN_SIDE = 128


@functools.lru_cache(maxsize=256)
def _sample_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first pixel int64 (64,), weights float32 (64, taps)) of the doubled box filter
    at PDQ's 64 decimation positions along a dimension of n pixels.

    box1DFloat's output i averages input [i + half - w, i + half - 1] clipped to the
    image, half = (w + 2) // 2. Sample p of two passes averages the first pass's outputs
    j in p's window, each an average over j's window: one step of weight
    1 / (|window p| |window j|) per j, summed as a difference array. Vectorised: the
    border check's crops give every upload a new size.
    """
    w = (n + 127) // 128
    half = (w + 2) // 2
    taps = 2 * w - 1
    idx = np.arange(n)
    lo = np.maximum(idx + half - w, 0)
    hi = np.minimum(idx + half - 1, n - 1)
    p = pdq_fast._decimation_indices(n)
    starts = np.minimum(lo[lo[p]], n - taps)  # the <= 2w - 1 nonzero taps fit after it
    j = lo[p][:, None] + np.arange(w)[None, :]  # (64, w) first-pass outputs, some unused
    used = j <= hi[p][:, None]
    j = np.minimum(j, n - 1)
    step = np.where(used, 1.0 / ((hi[j] - lo[j] + 1) * (hi[p] - lo[p] + 1)[:, None]), 0.0)
    diff = np.zeros((64, taps + 1), dtype=np.float64)
    rows = np.broadcast_to(np.arange(64)[:, None], j.shape)
    np.add.at(diff, (rows, np.where(used, lo[j] - starts[:, None], 0)), step)
    np.add.at(diff, (rows, np.where(used, hi[j] + 1 - starts[:, None], 0)), -step)
    return starts.astype(np.int64), np.cumsum(diff, axis=1)[:, :taps].astype(np.float32)


@njit(cache=True, nogil=True, error_model="numpy")
def _vertical(
    img: np.ndarray, starts: np.ndarray, weights: np.ndarray, reverse: bool, out: np.ndarray
) -> None:
    """out[o, :] = sum_k weights[o, k] * row (starts[o] + k) of img (of img flipped
    top-bottom when reverse): a contiguous multiply-add along each row (SIMD)."""
    nr = img.shape[0]
    nc = img.shape[1]
    for o in range(64):
        acc = out[o]
        for j in range(nc):
            acc[j] = 0.0
        for k in range(weights.shape[1]):
            wk = weights[o, k]
            if wk == 0.0:
                continue
            r = starts[o] + k
            src = img[nr - 1 - r] if reverse else img[r]
            for j in range(nc):
                acc[j] += wk * np.float32(src[j])


@njit(cache=True, nogil=True, error_model="numpy")
def _horizontal(
    rows: np.ndarray, starts: np.ndarray, weights: np.ndarray, reverse: bool, out: np.ndarray
) -> None:
    """out[o, q] = sum_k weights[q, k] * rows[o, starts[q] + k] (columns read from the
    right when reverse: the buffer of the image flipped left-right)."""
    nc = rows.shape[1]
    for o in range(64):
        src = rows[o]
        for q in range(64):
            s = np.float32(0.0)
            for k in range(weights.shape[1]):
                c = starts[q] + k
                s += weights[q, k] * (src[nc - 1 - c] if reverse else src[c])
            out[o, q] = s


def buffers(gray: np.ndarray, flips: tuple[tuple[bool, bool], ...]) -> list[np.ndarray]:
    """PDQ's 64x64 float32 buffer of `gray` (uint8, H x W) flipped as asked: one
    (top-bottom, left-right) pair per buffer. Flips along the columns share the
    vertical stage."""
    nr, nc = gray.shape
    vs, vw = _sample_weights(nr)
    hs, hw = _sample_weights(nc)
    out: list[np.ndarray] = []
    stage: dict[bool, np.ndarray] = {}
    for rows_flipped, cols_flipped in flips:
        if rows_flipped not in stage:
            stage[rows_flipped] = np.empty((64, nc), dtype=np.float32)
            _vertical(gray, vs, vw, rows_flipped, stage[rows_flipped])
        a64 = np.empty((64, 64), dtype=np.float32)
        _horizontal(stage[rows_flipped], hs, hw, cols_flipped, a64)
        out.append(a64)
    return out


def pdq_dihedral_passes(
    gray: np.ndarray, flip_axis: int | None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(8 dihedral variants of gray, those of gray flipped along flip_axis or None,
    quality of gray), bits in `pdq_fast`'s order; uint8 (H, W) input. What
    `hashing.pdq_dihedral` needs, in one call so the two passes share work."""
    gray = _checked(gray)
    if min(gray.shape) < MIN_SIDE:
        first, quality = pdq_fast.pdq_dihedral_from_gray_u8(gray)
        if flip_axis is None:
            return first, None, quality
        flipped = np.ascontiguousarray(gray[:, ::-1] if flip_axis == 1 else gray[::-1])
        return first, pdq_fast.pdq_dihedral_from_gray_u8(flipped)[0], quality
    flips = ((False, False),) if flip_axis is None else ((False, False), _FLIP[flip_axis])
    (first, quality), *rest = (_finish(a64, True) for a64 in buffers(gray, flips))
    return first, (rest[0][0] if rest else None), quality


def pdq_from_gray_u8(gray: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 (H, W) -> (bits (256,), quality): `pdq_fast.pdq_from_gray_u8` within 0-2
    bits, from the sampled buffer."""
    gray = _checked(gray)
    if min(gray.shape) < MIN_SIDE:
        return pdq_fast.pdq_from_gray_u8(gray)
    (a64,) = buffers(gray, ((False, False),))
    bits, quality = _finish(a64, False)
    return bits[0], quality


def _finish(a64: np.ndarray, dihedral: bool) -> tuple[np.ndarray, int]:
    """The 64x64 buffer -> (bits (8 or 1, 256), quality): pdq_fast's exact DCT, median
    and bit order."""
    out = np.zeros((8 if dihedral else 1, 256), dtype=np.uint8)
    return out, int(pdq_fast._finish(a64, pdq_fast._DCT, dihedral, out))


#: flip_axis (1: left-right, 0: top-bottom) -> (rows flipped, columns flipped)
_FLIP = {1: (False, True), 0: (True, False)}


def _checked(gray: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only view (or copy): numba compiles one version of a kernel
    per array type, read-only and writable arrays apart, and Pillow's pixels are
    read-only while a crop's copy is not; one type means one version to load or warm."""
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected uint8 (H, W) array, got {gray.dtype} {gray.shape}")
    view = np.ascontiguousarray(gray).view()
    view.flags.writeable = False
    return view
