"""The inline MIH bucket layout (mih.py): layout choice, table content, the cost model, and
exactness where its partial-distance filter, the full fetch of the words past the prefix and
the first-table dedupe could go wrong. Every search is checked against the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from search_oracle import (
    as_set,
    classify,
    clustered_codes,
    corner_plants,
    flip,
    from_kernel_bits,
    kernel_bits,
    mih_plan,
    oracle,
    uniform_codes,
)

from hashsvc.search import BinaryIndex, InvalidInputError, mih
from hashsvc.search import index as index_mod

RADII = {256: 31, 64: 10}


@pytest.fixture
def no_inline_min_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``layout="auto"`` choose inline for test-sized segments: index.py only takes it
    for PDQ from ``INLINE_MIN_ROWS`` rows (~750k), too many for a unit test."""
    monkeypatch.setattr(index_mod, "INLINE_MIN_ROWS", {256: 0, 64: 0}, raising=False)


def _prefix_bits(bits: int) -> int:
    return 64 * mih.inline_words(bits)


def _tables(idx: BinaryIndex) -> mih.MihTables:
    t = idx._state.main.tables
    assert t is not None
    return t


def _assert_exact(
    idx: BinaryIndex,
    codes: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    radius: int,
    threads: tuple[int, ...] = (1, 2),
) -> int:
    """Single and batch searches equal the oracle; returns the number of hits."""
    want = [oracle(codes, ids, q, radius) for q in queries]
    for q, w in zip(queries, want, strict=True):
        got_ids, got_d = idx.search(q, radius)
        assert len(np.unique(got_ids)) == len(got_ids), "an id was reported twice"
        assert as_set(got_ids, got_d) == w
    for th in threads:
        lims, bi, bd = idx.search_batch(queries, radius, threads=th)
        for j, w in enumerate(want):
            part = bi[lims[j] : lims[j + 1]]
            assert len(np.unique(part)) == len(part), "an id was reported twice"
            assert as_set(part, bd[lims[j] : lims[j + 1]]) == w, (j, th)
    return sum(len(w) for w in want)


# --------------------------------------------------------------------------- layout choice


@pytest.mark.usefixtures("no_inline_min_rows")
@pytest.mark.parametrize("bits", [256, 64])
def test_auto_layout_follows_the_memory_bound(bits: int, rng: np.random.Generator) -> None:
    n = 2000
    r = RADII[bits]
    codes = uniform_codes(n, bits, rng)
    ids = np.arange(n, dtype=np.int64)
    qs = np.array([flip(codes[i], r // 2, rng) for i in range(0, n, 400)], np.uint8)
    m_in = mih.choose_num_tables(n, bits, inline=True)
    m_rows = mih.choose_num_tables(n, bits)
    need = mih.inline_nbytes(n, bits, m_in)
    assert need == m_in * n * (4 + 8 * mih.inline_words(bits))
    cases = [
        ({"inline_max_bytes": need}, "inline", m_in),
        ({"inline_max_bytes": need - 1}, "rows", m_rows),
        ({"inline_max_bytes": 0}, "rows", m_rows),
        ({}, "inline", m_in),  # the default bound: a small index is inline
        ({"layout": "inline", "inline_max_bytes": 0}, "inline", m_in),  # forced
        ({"layout": "rows", "inline_max_bytes": 1 << 40}, "rows", m_rows),  # forced
    ]
    for kw, layout, m in cases:
        idx = BinaryIndex(bits, strategy="mih", **kw)  # type: ignore[arg-type]
        idx.add(ids, codes)
        t = _tables(idx)
        assert (t.layout, t.num_tables, t.iw) == (
            layout,
            m,
            mih.inline_words(bits) if layout == "inline" else 0,
        ), kw
        assert _assert_exact(idx, codes, ids, qs, r, threads=(2,)) >= len(qs)
    # a forced number of tables: the bound is computed for that number
    m = 11 if bits == 256 else 4
    need_m = mih.inline_nbytes(n, bits, m)
    for bound, layout in ((need_m, "inline"), (need_m - 1, "rows")):
        idx = BinaryIndex(bits, strategy="mih", num_tables=m, inline_max_bytes=bound)
        idx.add(ids, codes)
        assert (_tables(idx).layout, _tables(idx).num_tables) == (layout, m)


@pytest.mark.usefixtures("no_inline_min_rows")
def test_auto_layout_is_chosen_again_at_every_rebuild(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """The bound applies to the segment being built: a compaction that grows the main
    segment past it switches to rows, and a load chooses again for what it loads."""
    bits, r = 256, 31
    codes = clustered_codes(2000, bits, rng, centres=10)
    ids = rng.permutation(10**6)[:2000].astype(np.int64)
    bound = mih.inline_nbytes(1000, bits, mih.choose_num_tables(1000, bits, inline=True))
    assert mih.inline_nbytes(2000, bits, mih.choose_num_tables(2000, bits, inline=True)) > bound
    idx = BinaryIndex(bits, strategy="mih", inline_max_bytes=bound)
    idx.add(ids[:1000], codes[:1000])
    assert _tables(idx).layout == "inline"
    idx.add(ids[1000:], codes[1000:])  # delta: the main segment keeps its tables
    assert _tables(idx).layout == "inline" and idx.delta_size == 1000
    qs = np.array([flip(codes[i], 3, rng) for i in range(0, 2000, 97)], np.uint8)
    assert _assert_exact(idx, codes, ids, qs, r) > len(qs)
    idx.compact()
    assert _tables(idx).layout == "rows"
    _assert_exact(idx, codes, ids, qs, r)
    idx.save(tmp_path / "ix")
    for kw, layout in (
        ({"inline_max_bytes": bound}, "rows"),
        ({"inline_max_bytes": 4 * bound}, "inline"),
        ({"layout": "inline", "inline_max_bytes": 0}, "inline"),
        ({"layout": "rows"}, "rows"),
    ):
        loaded = BinaryIndex.load(tmp_path / "ix", bits, strategy="mih", **kw)  # type: ignore[arg-type]
        assert _tables(loaded).layout == layout, kw
        _assert_exact(loaded, codes, ids, qs, r, threads=(2,))


def test_auto_layout_below_inline_min_rows_is_rows(rng: np.random.Generator) -> None:
    """index.INLINE_MIN_ROWS (if the index has such a floor): ``auto`` keeps the rows layout
    below it whatever the memory bound; a forced ``inline`` still builds inline."""
    floor = getattr(index_mod, "INLINE_MIN_ROWS", {256: 0})[256]
    if floor <= 3000:
        pytest.skip("no inline row floor for PDQ")
    codes = uniform_codes(3000, 256, rng)
    ids = np.arange(3000, dtype=np.int64)
    for layout, want in (("auto", "rows"), ("inline", "inline")):
        idx = BinaryIndex(256, strategy="mih", layout=layout, inline_max_bytes=1 << 40)  # type: ignore[arg-type]
        idx.add(ids, codes)
        assert _tables(idx).layout == want
        q = flip(codes[5], 9, rng)
        assert as_set(*idx.search(q, 31)) == oracle(codes, ids, q, 31)


def test_layout_is_validated(tmp_path: Path, rng: np.random.Generator) -> None:
    for bad in ("Inline", "row", "", None, "flat"):
        with pytest.raises(InvalidInputError):
            BinaryIndex(256, layout=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            BinaryIndex(64, strategy="mih", layout=bad)  # type: ignore[arg-type]
    codes = uniform_codes(50, 256, rng)
    idx = BinaryIndex(256, strategy="flat", layout="inline")  # no tables: layout unused
    idx.add(np.arange(50), codes)
    assert not idx.uses_mih
    assert as_set(*idx.search(codes[3], 31)) == oracle(codes, np.arange(50), codes[3], 31)
    idx.save(tmp_path / "ix")
    with pytest.raises(InvalidInputError):
        BinaryIndex.load(tmp_path / "ix", 256, layout="inlined")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- table content


@pytest.mark.parametrize(
    ("bits", "m", "direct"),
    [
        (256, 32, True),  # 8-bit substrings (the inline default for small n)
        (256, 11, False),  # 23/24 bits straddling words; sparse here: sorted keys
        (256, 20, True),  # 12/13 bits straddling words, direct
        (256, 8, False),  # 32-bit substrings: sorted keys
        (64, 8, True),
        (64, 2, False),
    ],
)
def test_inline_tables_hold_code_prefixes_in_bucket_order(
    bits: int, m: int, direct: bool, rng: np.random.Generator
) -> None:
    from hashsvc.search import kernels as K

    n, W = 3000, bits // 64
    codes = uniform_codes(n, bits, rng).view(np.uint64).reshape(n, W).copy()
    codes[:40] = codes[0]  # a full bucket in every table
    iw = mih.inline_words(bits)
    assert 1 <= iw <= W and (bits == 256 or iw == 1)
    inl = mih.build_tables(codes, bits, m, threads=2, inline=True)
    inl1 = mih.build_tables(codes, bits, m, threads=1, inline=True)
    rows = mih.build_tables(codes, bits, m, threads=2)
    assert np.all(inl.meta[:, K.M_DIRECT] == int(direct))
    assert (inl.layout, inl.iw, rows.layout, rows.iw, rows.inline.size) == (
        "inline",
        iw,
        "rows",
        0,
        0,
    )
    # the layouts share their buckets; inline only adds the prefixes
    for name in ("rows", "offsets", "keys", "meta", "starts", "lens"):
        assert np.array_equal(getattr(inl, name), getattr(rows, name)), name
    assert inl.inline.dtype == np.uint64 and inl.inline.shape == (m * n * iw,)
    assert np.array_equal(inl.inline, inl1.inline)  # the threaded gather is the same
    for t in range(m):
        order = inl.rows[t * n : (t + 1) * n].astype(np.int64)
        assert np.array_equal(np.sort(order), np.arange(n))
        block = inl.inline[t * n * iw : (t + 1) * n * iw]
        assert np.array_equal(block.reshape(n, iw), codes[order, :iw]), t
        start, length = int(inl.starts[t]), int(inl.lens[t])
        if start + length <= 64 * iw:  # keys read from the prefixes ascend: bucket order
            keys = K.substring_keys(block, iw, n, start, length)
            assert np.all(np.diff(keys.astype(np.int64)) >= 0), t
    assert inl.nbytes - rows.nbytes == inl.inline.nbytes == m * n * iw * 8
    assert inl.rows.nbytes + inl.inline.nbytes == mih.inline_nbytes(n, bits, m)
    # and the index counts them
    ids = np.arange(n, dtype=np.int64)
    c8 = codes.view(np.uint8).reshape(n, bits // 8)
    by_layout = {}
    for layout in ("inline", "rows"):
        idx = BinaryIndex(bits, strategy="mih", num_tables=m, layout=layout)  # type: ignore[arg-type]
        idx.add(ids, c8)
        by_layout[layout] = idx.memory_bytes()
    assert by_layout["inline"] - by_layout["rows"] == m * n * iw * 8


# --------------------------------------------------------------------------- exactness


def _cluster_around(
    q: np.ndarray, count: int, radius: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Codes near ``q`` in the kernels' bit numbering: up to ``radius`` flips in the
    inline prefix (PDQ) and 0..8 after it, so nearly all pass the partial filter and
    many are only rejected by the words after it; for pHash (all inline) distances
    ``radius - 4 .. radius + 4``. Returns the codes and how many of them have a prefix
    within ``radius`` but a full distance beyond it."""
    bits = q.size * 8
    pb = _prefix_bits(bits)
    qb = kernel_bits(q)
    out, tail_rejects = [], 0
    for i in range(count):
        x = np.zeros(bits, np.uint8)
        if pb < bits:
            k_pre = radius if i % 5 == 0 else int(rng.integers(radius - 12, radius + 1))
            k_tail = 0 if i % 5 == 0 else int(rng.integers(0, 9))
            x[rng.choice(pb, k_pre, replace=False)] = 1
            x[pb + rng.choice(bits - pb, k_tail, replace=False)] = 1
            tail_rejects += int(k_pre + k_tail > radius)
        else:
            x[rng.choice(bits, int(rng.integers(radius - 4, radius + 5)), replace=False)] = 1
        out.append(from_kernel_bits(qb ^ x))
    return np.array(out, np.uint8), tail_rejects


@pytest.mark.parametrize(
    ("bits", "strategy", "n_other"),
    [(256, "mih", 2000), (256, "auto", 8000), (64, "mih", 2000)],
)
@pytest.mark.parametrize("layout", ["inline", "rows"])
def test_near_duplicate_cluster_around_the_query(
    bits: int, strategy: str, n_other: int, layout: str, rng: np.random.Generator
) -> None:
    """Many candidates pass the partial (prefix) distance but are beyond the radius on the
    full code; prefix distances of exactly the radius must pass. ``auto`` with a segment
    big enough for tables may answer cluster queries by a scan instead: exact either way."""
    r = RADII[bits]
    centre = uniform_codes(1, bits, rng)[0]
    cluster, tail_rejects = _cluster_around(centre, 1500, r, rng)
    if _prefix_bits(bits) < bits:
        assert tail_rejects > 300
    codes = np.concatenate([uniform_codes(n_other, bits, rng), cluster])
    ids = rng.permutation(10 * len(codes))[: len(codes)].astype(np.int64)
    idx = BinaryIndex(bits, strategy=strategy, layout=layout)  # type: ignore[arg-type]
    idx.add(ids, codes)
    assert _tables(idx).layout == layout
    assert idx.path_for(r) == "mih"
    qs = np.array([centre, flip(centre, 1, rng), flip(centre, 3, rng), cluster[0]], np.uint8)
    for radius in (r, r - 3):
        assert _assert_exact(idx, codes, ids, qs, radius) > 100


@pytest.mark.parametrize("bits", [256, 64])
def test_tombstones_delta_compact_and_reload_stay_exact(
    bits: int, tmp_path: Path, rng: np.random.Generator
) -> None:
    r = RADII[bits]
    codes = clustered_codes(2600, bits, rng, centres=12, lo=2, hi=r + 4)
    ids = rng.permutation(10**5)[:2600].astype(np.int64)
    idx = BinaryIndex(bits, strategy="mih", layout="inline", max_delta=10_000)
    idx.add(ids[:2000], codes[:2000])
    idx.add(ids[2000:2400], codes[2000:2400])  # the delta
    assert _tables(idx).layout == "inline" and idx.delta_size == 400
    live = np.ones(len(ids), bool)
    live[2400:] = False

    def remove(sel: np.ndarray) -> None:
        idx.remove(ids[sel])
        live[sel] = False

    remove(np.r_[0:2400:7])  # tombstones in main and delta
    qs = np.array(
        [flip(codes[i], 2, rng) for i in [*range(0, 2400, 7)][:8] + [5, 1999, 2001, 2399]],
        np.uint8,
    )

    def check(index: BinaryIndex) -> None:
        assert _assert_exact(index, codes[live], ids[live], qs, r) > len(qs)
        assert _assert_exact(index, codes[live], ids[live], qs, 2) > 0

    check(idx)
    idx.compact()
    assert _tables(idx).layout == "inline" and idx.delta_size == 0
    check(idx)
    remove(np.r_[1:2400:5])  # tombstones in the rebuilt tables
    idx.add(ids[2400:], codes[2400:])  # a new delta
    live[2400:] = True
    check(idx)
    idx.save(tmp_path / "ix")
    for layout in ("inline", "rows"):
        loaded = BinaryIndex.load(tmp_path / "ix", bits, strategy="mih", layout=layout)  # type: ignore[arg-type]
        assert _tables(loaded).layout == layout and len(loaded) == int(live.sum())
        check(loaded)


@pytest.mark.parametrize(("bits", "m"), [(256, None), (256, 11), (256, 8), (64, None), (64, 2)])
@pytest.mark.parametrize("layout", ["inline", "rows"])
def test_a_row_found_by_several_tables_is_reported_once(
    bits: int, m: int | None, layout: str, rng: np.random.Generator
) -> None:
    """Copies of the query (found by every probed table), codes a few bits away, and
    codes found only by several of the last tables: each row reported once."""
    r = RADII[bits]
    prefix_bits = _prefix_bits(bits)
    tail_from = bits - 64 if bits == 256 else 32
    nq, per_query = 6, 20
    n = 2000 + nq * per_query
    plan = mih_plan(n, bits, m, layout == "inline", r)
    qs = uniform_codes(nq, bits, rng)
    near = []
    multi = 0
    for q in qs:
        for j, c in enumerate(corner_plants(q, plan, r, prefix_bits, tail_from, per_query, rng)):
            if j % 5 == 2:  # replace some with copies and near copies of the query
                c = flip(q, j % 3, rng)
            near.append(c)
            multi += "multi" in classify(c, q, plan, r, prefix_bits, tail_from)
    assert multi >= nq * per_query // 4
    codes = np.concatenate([uniform_codes(n - len(near), bits, rng), np.array(near, np.uint8)])
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    idx = BinaryIndex(bits, strategy="mih", num_tables=m, layout=layout)  # type: ignore[arg-type]
    idx.add(ids, codes)
    assert _tables(idx).layout == layout
    assert np.array_equal(_tables(idx).plan(r).rad, plan[2])
    for radius in (r, 0, 4):
        _assert_exact(idx, codes, ids, qs, radius)
    # every query has a copy among the codes (found by every probed table at radius r)
    for q in qs:
        got = idx.search(q, r)[0]
        assert len(got) == len(set(got.tolist())) and int((got[:, None] == ids).any(1).sum())
        assert len(idx.search(q, 0)[0]) >= 1


# --------------------------------------------------------------------------- cost model


def test_cost_model_inline_beats_rows_for_pdq_at_1m() -> None:
    n, r = 1_000_000, 31
    m_in = mih.choose_num_tables(n, 256, inline=True)
    m_rows = mih.choose_num_tables(n, 256)
    assert m_in == 16 and m_rows < m_in
    _, lens_in = mih.split_bits(256, m_in)
    _, lens_rows = mih.split_bits(256, m_rows)
    est_in = mih.estimate_mih_ns(lens_in, r, n, inline=True)
    est_rows = mih.estimate_mih_ns(lens_rows, r, n)
    assert est_in < est_rows
    # the flag matters: the same inline tables priced as rows would cost more
    assert est_in < mih.estimate_mih_ns(lens_in, r, n, inline=False)
    rad = mih.allocate_radii(lens_in, r, n, inline=True)
    assert rad.tolist() == [1] * 16 and int((rad + 1).sum()) == r + 1
    assert mih.total_probes(lens_in, r, n, inline=True) == 16 * 17
    assert mih.total_probes(lens_rows, r, n) > 16 * 17


@pytest.mark.parametrize("n", [2, 100, 3000, 100_000, 1_000_000, 10_000_000])
@pytest.mark.parametrize("bits", [64, 256])
def test_inline_table_count_keeps_substrings_of_at_least_8_bits(n: int, bits: int) -> None:
    m = mih.choose_num_tables(n, bits, inline=True)
    _, lens = mih.split_bits(bits, m)
    assert lens.min() >= 8 and lens.max() <= mih.MAX_SUB_BITS
    if n >= 3000:  # shorter substrings than the rows layout (tiny n: rows has 1-7 bits)
        assert m >= mih.choose_num_tables(n, bits)
    for radius in (0, 10, 31, bits):
        rad = mih.allocate_radii(lens, radius, n, inline=True)
        assert (rad + 1).sum() >= radius + 1 or np.all(rad >= lens)


def test_planted_bit_numbering_matches_the_kernels(rng: np.random.Generator) -> None:
    """The corner-case planting (search_oracle) addresses bits as the kernels do."""
    from hashsvc.search import kernels as K

    code = np.zeros(32, np.uint8)
    for b in rng.choice(256, 12, replace=False).tolist():
        x = np.zeros(256, np.uint8)
        x[b] = 1
        c = from_kernel_bits(kernel_bits(code) ^ x).view(np.uint64)
        start = b - b % 8
        key = K.substring_keys(c, 4, 1, start, 8)[0]
        assert int(key) == 1 << (b - start)


def test_dense_cluster_past_the_prefix_filter_falls_back_to_a_scan(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    """Inside a cluster of near-duplicates nearly every bucket row passes the prefix filter
    and would cost a full fetch: past ``max_cand`` fetches (as in the rows layout) the
    query is answered by a scan, although its bucket rows are within ``max_rows``. Before
    this bound a 60k-code cluster at 1M took 18.8 ms on the MIH path against 5.2 ms for a
    scan. A far query stays on MIH; both answers equal the oracle."""
    n = 20000
    codes = uniform_codes(n, 256, rng)
    centre = codes[0].copy()
    for i in range(1, 1201):  # 1,200 codes within 3 bits of the centre
        codes[i] = flip(centre, int(rng.integers(0, 4)), rng)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    idx = BinaryIndex(256, layout="inline")
    idx.add(ids, codes)
    t = idx._state.main.tables
    assert t is not None and t.layout == "inline"
    scans: list[int] = []
    real = index_mod.flat.scan_batch

    def counting(*args: object) -> object:
        scans.append(len(args[4]))  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(index_mod.flat, "scan_batch", counting)
    far = flip(centre, 128, rng)
    assert as_set(*idx.search(far, 31)) == oracle(codes, ids, far, 31)
    assert scans == []
    assert as_set(*idx.search(centre, 31)) == oracle(codes, ids, centre, 31)
    assert scans == [1]
    # in a batch the fallback queries sit between MIH ones (the pipeline's double buffers)
    batch = np.stack([far, centre, flip(centre, 5, rng), far, centre])
    lims, got_ids, got_d = idx.search_batch(batch, 31)
    assert scans == [1, 3]
    for j, q in enumerate(batch):
        sl = slice(lims[j], lims[j + 1])
        assert as_set(got_ids[sl], got_d[sl]) == oracle(codes, ids, q, 31)
    # the bound it crossed is the fetch bound, not the bucket-rows one
    from hashsvc.search import flat
    from hashsvc.search import kernels as K

    p = t.plan(31)
    q64 = np.frombuffer(centre.tobytes(), np.uint64)
    read = 0
    for ti in range(t.num_tables):
        if p.rad[ti] < 0:
            continue
        key = K._extract(q64, 0, int(t.meta[ti, K.M_START]), int(t.meta[ti, K.M_LEN]))
        for mask in p.masks[p.mask_off[ti] : p.mask_off[ti + 1]]:
            k = int(t.meta[ti, K.M_OFF]) + int(key ^ mask)
            read += int(t.offsets[k + 1]) - int(t.offsets[k])
    scan_ns = flat.estimate_scan_ns(n, 4)
    # 1,200 codes within the radius pass the filter: more than the fetch bound allows
    assert scan_ns / mih.COST_CANDIDATE_NS < 1200 <= read <= scan_ns / t.candidate_ns
