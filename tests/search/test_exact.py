"""Exactness of every search path against the brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
from search_oracle import as_set, clustered_codes, flip, oracle, planted_queries, uniform_codes

from hashsvc.search import BinaryIndex

RADII = {256: 31, 64: 10}

CONFIGS = [
    # (bits, strategy, num_tables)
    (256, "mih", None),
    (256, "mih", 11),  # 23/24-bit substrings straddling 64-bit words, as at 10M
    (256, "mih", 8),  # 32-bit substrings: sorted-keys layout for PDQ too
    (256, "flat", None),
    (256, "auto", None),
    (64, "flat", None),
    (64, "auto", None),
    (64, "mih", None),
    (64, "mih", 2),  # 32-bit substrings: sorted-keys table layout (binary search)
]


def _ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Non-contiguous, shuffled ids (the index must not assume 0..n-1 or sorted input)."""
    ids = rng.choice(10 * n + 10, size=n, replace=False).astype(np.int64) * 7 - 1000
    return ids


@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize(("bits", "strategy", "m"), CONFIGS)
def test_planted_neighbours_match_oracle(
    bits: int, strategy: str, m: int | None, kind: str, rng: np.random.Generator
) -> None:
    r = RADII[bits]
    n = 3000
    base = uniform_codes(n, bits, rng) if kind == "uniform" else clustered_codes(n, bits, rng)
    qs, planted = planted_queries(base, r, 24, rng)
    codes = np.concatenate([base, planted])
    ids = _ids(len(codes), rng)
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m)
    idx.add(ids, codes)
    assert len(idx) == len(codes)
    if strategy == "mih":
        assert idx.path_for(r) == "mih"
    if strategy == "flat":
        assert idx.path_for(r) == "flat"
    for radius in (r, 0, 3, r + 5):
        for q in qs:
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes, ids, q, radius), (radius, bits, strategy, m)


@pytest.mark.parametrize(("bits", "strategy", "m"), CONFIGS)
def test_radius_extremes(bits: int, strategy: str, m: int | None, rng: np.random.Generator) -> None:
    codes = uniform_codes(500, bits, rng)
    codes[0] = 0
    codes[1] = 255
    ids = np.arange(500, dtype=np.int64)
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m)
    idx.add(ids, codes)
    zero = np.zeros(bits // 8, np.uint8)
    ones = np.full(bits // 8, 255, np.uint8)
    for q in (zero, ones, codes[7]):
        for radius in (0, 1, bits - 1, bits, bits + 100):
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes, ids, q, min(radius, bits))
    # radius = bits returns everything, including the all-ones code from the zero query
    got_ids, got_d = idx.search(zero, bits)
    assert len(got_ids) == 500
    assert got_d[got_ids == 1][0] == bits


@pytest.mark.parametrize(("bits", "strategy", "m"), CONFIGS[:6])
def test_duplicate_codes_all_returned(
    bits: int, strategy: str, m: int | None, rng: np.random.Generator
) -> None:
    base = uniform_codes(800, bits, rng)
    dup = np.repeat(base[:5], 6, axis=0)  # 5 codes x 6 copies, different ids
    codes = np.concatenate([base, dup, np.zeros((3, bits // 8), np.uint8)])
    ids = np.arange(len(codes), dtype=np.int64) + 10**12
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m)
    idx.add(ids, codes)
    for q in (base[0], base[3], np.zeros(bits // 8, np.uint8)):
        for radius in (0, 2, RADII[bits]):
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes, ids, q, radius)
    assert len(idx.search(base[0], 0)[0]) == 7


@pytest.mark.parametrize(
    ("bits", "strategy"), [(256, "mih"), (256, "flat"), (64, "flat"), (64, "mih")]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_single(
    bits: int, strategy: str, threads: int, rng: np.random.Generator
) -> None:
    r = RADII[bits]
    base = clustered_codes(2000, bits, rng, centres=20)
    qs, planted = planted_queries(base, r, 30, rng)
    codes = np.concatenate([base, planted])
    ids = np.arange(len(codes), dtype=np.int64)
    idx = BinaryIndex(bits, strategy=strategy)
    idx.add(ids[:-40], codes[:-40])
    idx.add(ids[-40:], codes[-40:])  # some in the delta
    idx.remove(ids[::9])
    lims, bid, bd = idx.search_batch(qs, r, threads=threads)
    assert lims.shape == (len(qs) + 1,) and lims[0] == 0 and lims[-1] == len(bid)
    assert bid.dtype == np.int64 and bd.dtype == np.int32
    for j, q in enumerate(qs):
        single = as_set(*idx.search(q, r))
        assert as_set(bid[lims[j] : lims[j + 1]], bd[lims[j] : lims[j + 1]]) == single
    empty = idx.search_batch(qs[:0], r, threads=threads)
    assert empty[0].tolist() == [0] and len(empty[1]) == 0


def test_result_dtypes_and_empty_index() -> None:
    idx = BinaryIndex(256)
    assert len(idx) == 0
    i, d = idx.search(np.zeros(32, np.uint8), 31)
    assert i.dtype == np.int64 and d.dtype == np.int32 and len(i) == 0
    lims, i, d = idx.search_batch(np.zeros((3, 32), np.uint8), 31)
    assert lims.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("strategy", ["auto", "mih"])
def test_dense_cluster_of_identical_codes(strategy: str, rng: np.random.Generator) -> None:
    """Thousands of all-zero codes (PDQ of blank images): auto MIH falls back to a scan for
    queries inside the cluster; both paths stay exact."""
    n = 12000
    codes = uniform_codes(n, 256, rng)
    codes[: n // 2] = 0
    codes[n // 2 : n // 2 + 300] = 0
    codes[n // 2 : n // 2 + 300, :2] = 0xFF  # a near cluster at distance 16
    ids = np.arange(n, dtype=np.int64) + 5
    idx = BinaryIndex(256, strategy=strategy)  # type: ignore[arg-type]
    idx.add(ids, codes)
    assert idx.path_for(31) == "mih"
    idx.remove(ids[:100])
    live = np.ones(n, bool)
    live[:100] = False
    for q in (np.zeros(32, np.uint8), flip(np.zeros(32, np.uint8), 20, rng), codes[-1]):
        for radius in (0, 16, 31):
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes[live], ids[live], q, radius)
    lims, bi, bd = idx.search_batch(np.zeros((3, 32), np.uint8), 31, threads=2)
    assert lims[-1] == 3 * (n // 2 - 100 + 300)
