"""The table-major sweep for large batches (sweep.py): exact against the brute-force oracle,
the same answer and the same scan fallback as the query-by-query kernel, and taken only
where it is meant to be."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from search_oracle import as_set, clustered_codes, flip, oracle, planted_queries, uniform_codes

from hashsvc.search import BinaryIndex, mih, sweep
from hashsvc.search import index as index_mod
from hashsvc.search import kernels as K


@pytest.fixture
def small_sweeps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inline tables for test-sized segments, sweeps from 64 queries even inside dense
    clusters (those are what the exactness tests want), and a record of the batch size of
    every sweep the index runs."""
    monkeypatch.setattr(index_mod, "INLINE_MIN_ROWS", {256: 0, 64: 0}, raising=False)
    monkeypatch.setattr(mih, "SWEEP_MIN_QUERIES", 64)
    monkeypatch.setattr(sweep, "DENSE_ROWS_FACTOR", float("inf"))
    calls: list[int] = []
    real = sweep.mih_sweep

    def spy(*args: Any) -> Any:
        calls.append(len(args[4]))
        return real(*args)

    monkeypatch.setattr(sweep, "mih_sweep", spy)
    return calls


def _index(codes: np.ndarray, ids: np.ndarray, **kw: Any) -> BinaryIndex:
    idx = BinaryIndex(256, layout="inline", **kw)
    idx.add(ids, codes)
    assert idx._state.main.tables is not None and idx._state.main.tables.iw == 2
    return idx


def _check(idx: BinaryIndex, codes: np.ndarray, ids: np.ndarray, qs: np.ndarray, r: int,
           threads: int = 1) -> int:  # fmt: skip
    """search_batch equals the oracle query by query; returns the number of hits."""
    lims, bi, bd = idx.search_batch(qs, r, threads=threads)
    hits = 0
    for j, q in enumerate(qs):
        want = oracle(codes, ids, q, r)
        assert as_set(bi[lims[j] : lims[j + 1]], bd[lims[j] : lims[j + 1]]) == want, (j, r)
        hits += len(want)
    return hits


@pytest.mark.parametrize("radius", [0, 5, 31, 44])
def test_sweep_is_exact_on_planted_boundaries(
    small_sweeps: list[int], radius: int, rng: np.random.Generator
) -> None:
    """Codes planted at r-1, r, r+1 of every query (off-by-one at the radius, the prefix
    filter and the per-table radii) and tombstoned entries that must not come back."""
    base = uniform_codes(6000, 256, rng)
    qs, planted = planted_queries(base, radius, 150, rng)
    codes = np.concatenate([base, planted])
    ids = rng.permutation(10**7)[: len(codes)].astype(np.int64)
    idx = _index(codes, ids, strategy="mih")
    gone = ids[::7]
    idx.remove(gone)
    keep = ~np.isin(ids, gone)
    assert _check(idx, codes[keep], ids[keep], qs, radius) >= 100
    assert small_sweeps == [150]


def test_sweep_is_exact_in_dense_clusters_with_many_candidates(
    small_sweeps: list[int], rng: np.random.Generator
) -> None:
    """Near-duplicate clusters pass many rows through the prefix filter: the candidate
    buffer fills and is verified many times over, and the hits outgrow their first
    buffer (a quarter per query)."""
    codes = clustered_codes(8000, 256, rng, centres=20, lo=4, hi=24)
    ids = np.arange(len(codes), dtype=np.int64) * 3
    qs = np.array([flip(codes[i], 3, rng) for i in range(0, 8000, 50)], np.uint8)
    idx = _index(codes, ids, strategy="mih")
    hits = _check(idx, codes, ids, qs, 31)
    assert hits > 4 * len(qs) + 1024
    assert small_sweeps == [len(qs)]


def test_a_bucket_larger_than_the_candidate_buffer(
    small_sweeps: list[int], rng: np.random.Generator
) -> None:
    """20,000 identical codes fill one bucket of every table, more than the sweep's
    candidate buffer holds (``_CAND_BUF``): it is enlarged for that bucket, and every copy
    is found once."""
    assert sweep._CAND_BUF < 20000
    same = np.repeat(uniform_codes(1, 256, rng), 20000, axis=0)
    codes = np.concatenate([same, uniform_codes(3000, 256, rng)])
    ids = np.arange(len(codes), dtype=np.int64)
    idx = _index(codes, ids, strategy="mih")
    qs = np.concatenate([np.array([flip(same[0], 2, rng)]), uniform_codes(70, 256, rng)])
    assert _check(idx, codes, ids, qs, 31) >= 20000
    assert small_sweeps == [len(qs)]


def test_sweep_answers_like_the_query_kernel_including_its_scan_fallback(
    rng: np.random.Generator,
) -> None:
    """Kernel level, finite ``max_rows``/``max_cand``: the same hits and the same mask of
    queries left to a scan as ``kernels.mih_batch`` (clustered queries trip both bounds,
    uniform ones neither)."""
    codes = np.concatenate(
        [clustered_codes(6000, 256, rng, centres=5, lo=2, hi=20), uniform_codes(6000, 256, rng)]
    )
    ids = np.arange(len(codes), dtype=np.int64)
    idx = BinaryIndex(256, layout="inline", strategy="mih")
    idx.add(ids, codes)
    m = idx._state.main
    t = m.tables
    assert t is not None
    p = t.plan(31)
    Q = idx._check_codes(
        np.concatenate([codes[:: len(codes) // 200], uniform_codes(200, 256, rng)])
    )
    inf = 1 << 40
    mixed = set()  # which bound split the queries into scanned and searched
    bounds = [(cand, inf) for cand in (5, 50, 300)] + [(inf, rows) for rows in (2000, 8000, 30000)]
    for max_cand, max_rows in [*bounds, (inf, inf)]:
        args = (m.codes.reshape(-1), 4, m.ids, m.dead, Q, 31, t.meta, p.rad, t.offsets)
        tail = (t.inline, t.iw, p.masks, p.mask_off, max_cand, max_rows)
        lims_a, ids_a, d_a, scan_a = K.mih_batch(*args, t.keys, t.rows, *tail)
        lims_b, ids_b, d_b, scan_b = sweep.mih_sweep(*args, t.rows, *tail)
        assert np.array_equal(scan_a, scan_b), (max_cand, max_rows)
        if 0 < scan_b.sum() < len(Q):
            mixed.add("cand" if max_cand < inf else "rows")
        for j in range(len(Q)):
            a, b = slice(lims_a[j], lims_a[j + 1]), slice(lims_b[j], lims_b[j + 1])
            assert as_set(ids_a[a], d_a[a]) == as_set(ids_b[b], d_b[b]), (j, max_cand)
    assert mixed == {"cand", "rows"}


def test_auto_strategy_scans_the_sweeps_dense_queries_exactly(
    small_sweeps: list[int], rng: np.random.Generator
) -> None:
    """Through the index with its own bounds: queries inside a cluster of identical codes
    fall back to a scan, and the merged answer is still the oracle's."""
    codes = np.concatenate(
        [np.repeat(uniform_codes(1, 256, rng), 3000, axis=0), uniform_codes(9000, 256, rng)]
    )
    ids = np.arange(len(codes), dtype=np.int64)
    idx = _index(codes, ids, strategy="auto")
    qs = np.concatenate([codes[:2][:, :], uniform_codes(100, 256, rng), codes[5000:5010]])
    assert _check(idx, codes, ids, qs, 31) >= 2 * 3000 + 10
    assert small_sweeps == [len(qs)]


def test_sweep_is_taken_only_for_large_pdq_batches(
    small_sweeps: list[int], rng: np.random.Generator
) -> None:
    codes = uniform_codes(4000, 256, rng)
    ids = np.arange(4000, dtype=np.int64)
    idx = _index(codes, ids, strategy="mih")
    qs = np.array([flip(codes[i], 4, rng) for i in range(0, 4000, 20)], np.uint8)  # 200
    _check(idx, codes, ids, qs[:63], 31)  # below the threshold: query by query
    assert small_sweeps == []
    _check(idx, codes, ids, qs, 31, threads=2)  # two chunks of 100: each sweeps
    assert small_sweeps == [100, 100]
    small_sweeps.clear()
    _check(idx, codes, ids, qs[:100], 31, threads=2)  # 2 x 50 would be too small: 4 x 25
    assert small_sweeps == []
    # pHash (one inline word): never
    ph = uniform_codes(4000, 64, rng)
    pidx = BinaryIndex(64, layout="inline", strategy="mih")
    pidx.add(ids, ph)
    pq = np.array([flip(ph[i], 2, rng) for i in range(0, 4000, 20)], np.uint8)
    lims, bi, bd = pidx.search_batch(pq, 6)
    for j, q in enumerate(pq):
        assert as_set(bi[lims[j] : lims[j + 1]], bd[lims[j] : lims[j + 1]]) == oracle(ph, ids, q, 6)
    assert small_sweeps == []


def test_the_real_threshold_sweeps_a_thousand_queries(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the shipped ``SWEEP_MIN_QUERIES`` (an API batch is up to 1,000 hashes)."""
    monkeypatch.setattr(index_mod, "INLINE_MIN_ROWS", {256: 0, 64: 0}, raising=False)
    assert mih.SWEEP_MIN_QUERIES <= 1000
    codes = uniform_codes(3000, 256, rng)
    ids = np.arange(3000, dtype=np.int64)
    idx = _index(codes, ids, strategy="mih")
    qs = np.array([flip(codes[i % 3000], 6, rng) for i in range(0, 3000, 3)], np.uint8)
    assert sweep.eligible(idx._state.main.tables.meta, idx._state.main.tables.plan(31).rad,
                          2, len(qs))  # fmt: skip
    assert _check(idx, codes, ids, qs, 31) >= len(qs)


def test_batches_inside_dense_clusters_go_query_by_query(
    small_sweeps: list[int], monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    """``looks_dense``: queries among near-duplicate clusters read several times the
    bucket rows of uniform codes, and such a batch is left to ``mih_batch``; a uniform
    batch on the same index still sweeps. Both answers are the oracle's."""
    monkeypatch.setattr(sweep, "DENSE_ROWS_FACTOR", 1.5)
    codes = np.concatenate(
        [clustered_codes(6000, 256, rng, centres=10, lo=4, hi=16), uniform_codes(6000, 256, rng)]
    )
    ids = np.arange(len(codes), dtype=np.int64)
    idx = _index(codes, ids, strategy="mih")
    dense = np.array([flip(codes[i], 3, rng) for i in range(0, 6000, 60)], np.uint8)
    spread = uniform_codes(100, 256, rng)
    t = idx._state.main.tables
    assert t is not None
    p = t.plan(31)
    args = (idx._state.main.n, t.meta, p.rad, t.offsets, t.keys, p.masks, p.mask_off)
    assert sweep.looks_dense(idx._check_codes(dense), *args)
    assert not sweep.looks_dense(idx._check_codes(spread), *args)
    assert _check(idx, codes, ids, dense, 31) > len(dense)
    assert small_sweeps == []
    _check(idx, codes, ids, spread, 31)
    assert small_sweeps == [len(spread)]
