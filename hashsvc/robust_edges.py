"""The numba kernels of `robust.content_box`, in their own module so that importing
`hashsvc.robust` does not import numba (`hashsvc match` on a few files hashes with Meta's
C++ PDQ and never loads it).

`pure_line` is `robust._bar_run`'s first test: most uploads have no bar on any side, and
one call per side answers that in ~3 us, where the numpy version (a median, a difference,
a mean) cost ~40 us per side. `bar_run` is all of `_bar_run`, for a side whose edge line
is pure: it measures lines from the edge inwards only until the bar's run ends, where the
numpy version measured every line of the side. Photos whose edge is sky, a wall or a
studio backdrop have pure edge lines without any bar (70 of 300 files of bench/scan.py's
corpus): on that corpus `content_box` cost 0.66-0.87 ms per file with every pure side
measured in numpy, 0.18-0.24 ms with this kernel (right after each file's decode).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def pure_line(line: np.ndarray, tolerance: int, pure_share: float) -> bool:
    """`_bar_run`'s first test on one uint8 line: >= `pure_share` of its pixels within
    `tolerance` of its median (np.median's value: the mean of the two middle ones).

    The thresholds are arguments, not robust's constants read here: numba bakes global
    values into its on-disk cache, which is keyed on this file only, so a retuned
    constant in robust.py would have kept its old value in the kernel."""
    return _share(line, _median(line), tolerance) >= pure_share


#: Lines measured at a time by `bar_run`: enough that reading a side's lines across its
#: columns (the left and right sides of an image) touches each cache line once, not once
#: per line.
_CHUNK = 16


@njit(cache=True, nogil=True)
def bar_run(
    lines: np.ndarray,
    tolerance: int,
    bar_share: float,
    pure_share: float,
    text_share: float,
    text_band: float,
) -> int:
    """`robust._bar_run(lines)` for uint8 `lines` (rows: the edge line first), the same
    answer (tests/test_robust.py holds them equal), measuring lines only as far as the
    answer needs, `_CHUNK` at a time. The thresholds are arguments for the reason
    `pure_line` gives."""
    n = lines.shape[0]
    colour = _median(lines[0])
    shares = np.empty(n, np.float64)
    filled = _fill(lines, shares, 0, 1, colour, tolerance)
    if shares[0] < pure_share:
        return 0
    end, filled = _pure_end(lines, shares, filled, 0, colour, tolerance, bar_share, pure_share)
    longest = max(1, int(text_band * n))
    band = end
    while band < n and band - end < longest:
        filled = _fill(lines, shares, filled, band + 1, colour, tolerance)
        if not text_share <= shares[band] < pure_share:
            break
        band += 1
    if band > end and band < n:
        filled = _fill(lines, shares, filled, band + 1, colour, tolerance)
        if shares[band] >= pure_share:
            end, filled = _pure_end(
                lines, shares, filled, band, colour, tolerance, bar_share, pure_share
            )
    return end


@njit(cache=True, nogil=True)
def _pure_end(
    lines: np.ndarray,
    shares: np.ndarray,
    filled: int,
    start: int,
    colour: float,
    tolerance: int,
    bar_share: float,
    pure_share: float,
) -> tuple[int, int]:
    """`robust._pure_end` of the shares of lines[start:], plus start: 1 + the last pure
    line of the run from `start` (pure) of lines with share >= bar_share; and how many
    shares are measured now."""
    last = start
    for i in range(start, lines.shape[0]):
        filled = _fill(lines, shares, filled, i + 1, colour, tolerance)
        if shares[i] < bar_share:
            break
        if shares[i] >= pure_share:
            last = i
    return last + 1, filled


@njit(cache=True, nogil=True)
def _fill(
    lines: np.ndarray, shares: np.ndarray, filled: int, need: int, colour: float, tolerance: int
) -> int:
    """Measure `shares` up to at least line `need` (a chunk at a time); returns how many
    are measured. Reads along whichever axis is contiguous in memory."""
    if need <= filled:
        return filled
    n, w = lines.shape
    stop = min(n, max(need, filled + _CHUNK))
    if abs(lines.strides[0]) < abs(lines.strides[1]):  # lines are columns of an image
        lo, hi = _near_range(colour, tolerance)
        near = np.zeros(stop - filled, np.int64)
        for j in range(w):
            for i in range(filled, stop):
                v = np.int64(lines[i, j])
                near[i - filled] += np.int64(lo <= v and v <= hi)
        for i in range(filled, stop):
            shares[i] = near[i - filled] / w
    else:
        for i in range(filled, stop):
            shares[i] = _share(lines[i], colour, tolerance)
    return stop


@njit(cache=True, nogil=True)
def _median(line: np.ndarray) -> float:
    """np.median of a uint8 line (the mean of the two middle values), by histogram."""
    n = line.shape[0]
    hist = np.zeros(256, np.int64)
    for i in range(n):
        hist[line[i]] += 1
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    lo = hi = -1
    seen = 0
    for v in range(256):
        seen += hist[v]
        if lo < 0 and seen > lo_rank:
            lo = v
        if seen > hi_rank:
            hi = v
            break
    return (lo + hi) / 2.0


@njit(cache=True, nogil=True)
def _share(line: np.ndarray, colour: float, tolerance: int) -> float:
    """The share of a line's pixels within `tolerance` of `colour` (np.mean's value)."""
    lo, hi = _near_range(colour, tolerance)
    near = np.int64(0)
    for i in range(line.shape[0]):
        v = np.int64(line[i])
        near += np.int64(lo <= v and v <= hi)
    return near / line.shape[0]


@njit(cache=True, nogil=True)
def _near_range(colour: float, tolerance: int) -> tuple[int, int]:
    """The integer values v with |v - colour| <= tolerance: [lo, hi] (colour is a whole
    or a half number, so the bounds are exact). Integer compares vectorise; a float
    difference per pixel did not."""
    return int(np.ceil(colour - tolerance)), int(np.floor(colour + tolerance))
