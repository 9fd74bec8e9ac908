"""The numba edge-line test of `robust.content_box`, in its own module so that importing
`hashsvc.robust` does not import numba (`hashsvc match` on a few files hashes with Meta's
C++ PDQ and never loads it).

`pure_line` is `robust._bar_run`'s first test: most uploads have no bar on any side, and
one call per side answers that in ~3 us, where the numpy version (a median, a difference,
a mean) cost ~40 us per side.
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
    colour = (lo + hi) / 2.0
    near = 0
    for v in range(256):
        if abs(v - colour) <= tolerance:
            near += hist[v]
    return near / n >= pure_share
