"""Brute-force range scan of a contiguous code segment.

Why a scan is a first-class path, not just a fallback:

* small segments (the delta, small hash lists) are cheaper to scan than to probe;
* large radii make MIH enumerate more keys than there are rows;
* it needs no tables: ``strategy="flat"`` gives the smallest memory footprint and the
  fastest load (pHash-64 at 10M is one sequential 80 MB pass, at memory bandwidth).

The kernels live in ``kernels.py``; this module only adapts segments to them and holds the
scan cost used by the MIH-vs-scan rule in ``index.py``.
"""

from __future__ import annotations

import numpy as np

#: Scan cost per 64-bit word of codes, ns (fitted on the project box, see RESULTS-search).
COST_SCAN_NS_PER_WORD = 1.2
#: Fixed per-query overhead of a scan (Python, dispatch, allocation), ns.
COST_SCAN_QUERY_NS = 8000.0


def estimate_scan_ns(n: int, words: int) -> float:
    """Estimated single-query scan time of ``n`` codes of ``words`` 64-bit words."""
    return COST_SCAN_QUERY_NS + n * words * COST_SCAN_NS_PER_WORD


def scan_batch(
    codes: np.ndarray, ids: np.ndarray, dead: np.ndarray, n: int, Q: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR range search of every query in ``Q`` (uint64, (q, W)) over ``codes[:n]``."""
    from . import kernels as K

    if n == 0:
        return np.zeros(len(Q) + 1, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
    W = codes.shape[1]
    return K.flat_batch(codes.reshape(-1), W, n, ids, dead, Q, radius)
