"""Helpers for the search-core tests: data generators and the brute-force oracle.

A plain module (not conftest) so tests can import it; named uniquely because pytest puts
this directory on sys.path (rootdir-style test layout without __init__.py).
"""

from __future__ import annotations

import numpy as np


def oracle(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, radius: int) -> set[tuple[int, int]]:
    """Obviously-correct range search: unpack every bit, XOR, sum. Returns {(id, dist)}."""
    if len(codes) == 0:
        return set()
    d = np.unpackbits(np.bitwise_xor(codes, q[None, :]), axis=1).sum(axis=1)
    hit = np.flatnonzero(d <= radius)
    return {(int(ids[i]), int(d[i])) for i in hit}


def as_set(ids: np.ndarray, dists: np.ndarray) -> set[tuple[int, int]]:
    pairs = list(zip(ids.tolist(), dists.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)), "an entry was returned twice"
    return set(pairs)


def flip(code: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``code`` with exactly ``k`` distinct bits flipped."""
    bits = np.unpackbits(code)
    pos = rng.choice(bits.size, size=k, replace=False)
    bits[pos] ^= 1
    return np.packbits(bits)


def uniform_codes(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def clustered_codes(
    n: int, bits: int, rng: np.random.Generator, centres: int = 50, lo: int = 10, hi: int = 40
) -> np.ndarray:
    """Codes around a few centres with ``lo..hi`` flipped bits, like real hash lists
    (many near-duplicate variants of the same media)."""
    c = uniform_codes(centres, bits, rng)
    which = rng.integers(0, centres, size=n)
    out = np.empty((n, bits // 8), np.uint8)
    hi = min(hi, bits)
    lo = min(lo, hi)
    for i in range(n):
        out[i] = flip(c[which[i]], int(rng.integers(lo, hi + 1)), rng)
    return out


def planted_queries(
    codes: np.ndarray, radius: int, nq: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Queries plus extra codes planted at distances r-1, r, r+1 from each query.

    Returns (queries, planted codes). Boundary distances are where off-by-one errors
    (FAISS's strict ``<``, MIH radius splits) would show.
    """
    bits = codes.shape[1] * 8
    qs = []
    planted = []
    for j in range(nq):
        base = (
            codes[rng.integers(len(codes))]
            if (j % 2 and len(codes))
            else uniform_codes(1, bits, rng)[0]
        )
        q = flip(base, int(rng.integers(0, 4)), rng)
        qs.append(q)
        for k in (radius - 1, radius, radius + 1):
            if 0 <= k <= bits:
                planted.append(flip(q, k, rng))
    return np.array(qs, np.uint8), np.array(planted, np.uint8).reshape(-1, codes.shape[1])
