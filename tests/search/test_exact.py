"""Exactness of every search path against the brute-force oracle."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from search_oracle import (
    KINDS,
    as_set,
    classify,
    clustered_codes,
    corner_plants,
    flip,
    mih_plan,
    oracle,
    planted_queries,
    uniform_codes,
)

from hashsvc.search import BinaryIndex, mih

RADII = {256: 31, 64: 10}

#: (bits, num_tables) of the MIH configurations; each runs with both bucket layouts.
MIH_TABLES = [
    (256, None),  # at ~3k rows: inline 32 tables of 8 bits, rows 22 of 11-12 bits
    (256, 11),  # 23/24-bit substrings straddling 64-bit words, as at 10M
    (256, 8),  # 32-bit substrings: sorted-keys layout for PDQ too
    (64, None),
    (64, 2),  # 32-bit substrings: sorted-keys table layout (binary search)
]
MIH_CONFIGS = [(bits, m, layout) for bits, m in MIH_TABLES for layout in ("inline", "rows")]

CONFIGS = [
    # (bits, strategy, num_tables, layout)
    *[(bits, "mih", m, layout) for bits, m, layout in MIH_CONFIGS],
    (256, "flat", None, "auto"),
    (256, "auto", None, "auto"),
    (64, "flat", None, "auto"),
    (64, "auto", None, "auto"),
]


def _ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Non-contiguous, shuffled ids (the index must not assume 0..n-1 or sorted input)."""
    ids = rng.choice(10 * n + 10, size=n, replace=False).astype(np.int64) * 7 - 1000
    return ids


def _layout(idx: BinaryIndex) -> str | None:
    """Layout of the main segment's MIH tables (None: no tables)."""
    t = idx._state.main.tables
    return None if t is None else t.layout


def _check_layout(idx: BinaryIndex, strategy: str, layout: str) -> None:
    if strategy == "mih":
        assert _layout(idx) == layout


@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize(("bits", "strategy", "m", "layout"), CONFIGS)
def test_planted_neighbours_match_oracle(
    bits: int, strategy: str, m: int | None, layout: str, kind: str, rng: np.random.Generator
) -> None:
    r = RADII[bits]
    n = 3000
    base = uniform_codes(n, bits, rng) if kind == "uniform" else clustered_codes(n, bits, rng)
    qs, planted = planted_queries(base, r, 24, rng)
    codes = np.concatenate([base, planted])
    ids = _ids(len(codes), rng)
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m, layout=layout)
    idx.add(ids, codes)
    assert len(idx) == len(codes)
    _check_layout(idx, strategy, layout)
    if strategy == "mih":
        assert idx.path_for(r) == "mih"
    if strategy == "flat":
        assert idx.path_for(r) == "flat"
    for radius in (r, 0, 3, r + 5):
        for q in qs:
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes, ids, q, radius), (radius, bits, strategy, m, layout)


@pytest.mark.parametrize(("bits", "strategy", "m", "layout"), CONFIGS)
def test_radius_extremes(
    bits: int, strategy: str, m: int | None, layout: str, rng: np.random.Generator
) -> None:
    codes = uniform_codes(500, bits, rng)
    codes[0] = 0
    codes[1] = 255
    ids = np.arange(500, dtype=np.int64)
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m, layout=layout)
    idx.add(ids, codes)
    _check_layout(idx, strategy, layout)
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


@pytest.mark.parametrize(("bits", "strategy", "m", "layout"), CONFIGS)
def test_duplicate_codes_all_returned(
    bits: int, strategy: str, m: int | None, layout: str, rng: np.random.Generator
) -> None:
    base = uniform_codes(800, bits, rng)
    dup = np.repeat(base[:5], 6, axis=0)  # 5 codes x 6 copies, different ids
    codes = np.concatenate([base, dup, np.zeros((3, bits // 8), np.uint8)])
    ids = np.arange(len(codes), dtype=np.int64) + 10**12
    idx = BinaryIndex(bits, strategy=strategy, num_tables=m, layout=layout)
    idx.add(ids, codes)
    _check_layout(idx, strategy, layout)
    for q in (base[0], base[3], np.zeros(bits // 8, np.uint8)):
        for radius in (0, 2, RADII[bits]):
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes, ids, q, radius)
    assert len(idx.search(base[0], 0)[0]) == 7


@pytest.mark.parametrize(
    ("bits", "strategy", "layout"),
    [
        (256, "mih", "inline"),
        (256, "mih", "rows"),
        (256, "flat", "auto"),
        (64, "flat", "auto"),
        (64, "mih", "inline"),
        (64, "mih", "rows"),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_single(
    bits: int, strategy: str, layout: str, threads: int, rng: np.random.Generator
) -> None:
    r = RADII[bits]
    base = clustered_codes(2000, bits, rng, centres=20)
    qs, planted = planted_queries(base, r, 30, rng)
    codes = np.concatenate([base, planted])
    ids = np.arange(len(codes), dtype=np.int64)
    idx = BinaryIndex(bits, strategy=strategy, layout=layout)
    idx.add(ids[:-40], codes[:-40])
    idx.add(ids[-40:], codes[-40:])  # some in the delta
    idx.remove(ids[::9])
    _check_layout(idx, strategy, layout)
    live = np.ones(len(ids), bool)
    live[::9] = False
    lims, bid, bd = idx.search_batch(qs, r, threads=threads)
    assert lims.shape == (len(qs) + 1,) and lims[0] == 0 and lims[-1] == len(bid)
    assert bid.dtype == np.int64 and bd.dtype == np.int32
    for j, q in enumerate(qs):
        single = as_set(*idx.search(q, r))
        assert single == oracle(codes[live], ids[live], q, r)
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


@pytest.mark.parametrize("layout", ["inline", "rows"])
@pytest.mark.parametrize("strategy", ["auto", "mih"])
def test_dense_cluster_of_identical_codes(
    strategy: str, layout: str, rng: np.random.Generator
) -> None:
    """Thousands of all-zero codes (PDQ of blank images): auto MIH falls back to a scan for
    queries inside the cluster; both paths stay exact."""
    n = 12000
    codes = uniform_codes(n, 256, rng)
    codes[: n // 2] = 0
    codes[n // 2 : n // 2 + 300] = 0
    codes[n // 2 : n // 2 + 300, :2] = 0xFF  # a near cluster at distance 16
    ids = np.arange(n, dtype=np.int64) + 5
    idx = BinaryIndex(256, strategy=strategy, layout=layout)  # type: ignore[arg-type]
    idx.add(ids, codes)
    assert idx.path_for(31) == "mih"
    assert _layout(idx) == layout
    idx.remove(ids[:100])
    live = np.ones(n, bool)
    live[:100] = False
    for q in (np.zeros(32, np.uint8), flip(np.zeros(32, np.uint8), 20, rng), codes[-1]):
        for radius in (0, 16, 31):
            got = as_set(*idx.search(q, radius))
            assert got == oracle(codes[live], ids[live], q, radius)
    lims, bi, bd = idx.search_batch(np.zeros((3, 32), np.uint8), 31, threads=2)
    assert lims[-1] == 3 * (n // 2 - 100 + 300)


@pytest.mark.parametrize(("bits", "m", "layout"), MIH_CONFIGS)
def test_hits_beyond_the_inline_prefix(
    bits: int, m: int | None, layout: str, rng: np.random.Generator
) -> None:
    """Codes aimed at the corners of MIH verification (search_oracle.classify): hits that
    differ from the query by up to the radius in the bits before the last 64 (or before
    the end of the inline prefix) and so are found only by the tables after them, i.e.
    keys that lie past the inline prefix; hits found by several of those tables (dedupe);
    a prefix distance of exactly the radius; candidates whose prefix is within the radius
    but whose words past the prefix take them beyond it. pHash keeps its whole code
    inline: there the "tail" is the tables over bits 32..63."""
    r = RADII[bits]
    nq, per_query = 16, 10
    prefix_bits = 64 * mih.inline_words(bits)
    tails = sorted({prefix_bits, bits - 64}) if bits == 256 else [32]
    base = uniform_codes(3000, bits, rng)
    n = len(base) + nq * per_query
    plan = mih_plan(n, bits, m, layout == "inline", r)
    qs = uniform_codes(nq, bits, rng)
    planted = []
    kinds: dict[int, Counter[str]] = {tf: Counter() for tf in tails}
    for q in qs:
        for tf in tails:
            for c in corner_plants(q, plan, r, prefix_bits, tf, per_query // len(tails), rng):
                planted.append(c)
                kinds[tf].update(classify(c, q, plan, r, prefix_bits, tf))
    assert len(planted) == nq * per_query
    total = sum(kinds.values(), Counter())
    wanted = KINDS if prefix_bits < bits else ("tail_only", "multi", "prefix_at_radius")
    assert all(total[k] >= nq for k in wanted), kinds
    assert kinds[tails[-1]]["tail_only"] >= nq, kinds  # found only past bit 192 (PDQ)
    codes = np.concatenate([base, np.array(planted, np.uint8)])
    ids = _ids(len(codes), rng)
    idx = BinaryIndex(bits, strategy="mih", num_tables=m, layout=layout)
    idx.add(ids, codes)
    t = idx._state.main.tables
    assert t is not None and t.layout == layout
    assert np.array_equal(t.plan(r).rad, plan[2])  # the plants target the real plan
    for radius in (r, r - 1, r + 1):
        want = [oracle(codes, ids, q, radius) for q in qs]
        for q, w in zip(qs, want, strict=True):
            assert as_set(*idx.search(q, radius)) == w, radius
        lims, bi, bd = idx.search_batch(qs, radius, threads=2)
        for j, w in enumerate(want):
            assert as_set(bi[lims[j] : lims[j + 1]], bd[lims[j] : lims[j + 1]]) == w
    assert sum(len(oracle(codes, ids, q, r)) for q in qs) >= nq * per_query // 2
