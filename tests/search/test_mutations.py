"""add / remove / compact semantics: delta segment, tombstones, duplicate ids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_oracle import as_set, clustered_codes, flip, oracle, uniform_codes

from hashsvc.search import BinaryIndex, DuplicateIdError, InvalidInputError, SearchError

STRATS = [(256, "mih"), (256, "flat"), (64, "flat"), (64, "mih")]


@pytest.mark.parametrize(("bits", "strategy"), STRATS)
def test_delta_and_tombstones_before_and_after_compact(
    bits: int, strategy: str, rng: np.random.Generator
) -> None:
    r = 31 if bits == 256 else 10
    codes = clustered_codes(1500, bits, rng, centres=30)
    ids = np.arange(1500, dtype=np.int64) * 3
    idx = BinaryIndex(bits, strategy=strategy)
    idx.add(ids[:1000], codes[:1000])  # bulk load -> main segment
    assert idx.delta_size == 0
    idx.add(ids[1000:], codes[1000:])  # -> delta, searchable immediately
    assert idx.delta_size == 500 and len(idx) == 1500
    removed = np.concatenate([ids[:1000:7], ids[1000::5], np.array([10**9, -5])])  # + unknown
    idx.remove(removed)
    idx.remove(removed)  # idempotent
    live = ~np.isin(ids, removed)
    assert len(idx) == int(live.sum())
    queries = [flip(codes[i], 3, rng) for i in rng.choice(1500, 25, replace=False)]

    def check() -> None:
        for q in queries:
            got = as_set(*idx.search(q, r))
            assert got == oracle(codes[live], ids[live], q, r)
            assert not ({i for i, _ in got} & set(removed.tolist()))

    check()
    idx.compact()
    assert idx.delta_size == 0 and len(idx) == int(live.sum())
    check()
    # re-adding a removed id is a new entry (with a new code)
    new_code = uniform_codes(1, bits, rng)
    idx.add(removed[:1], new_code)
    got_ids, _ = idx.search(new_code[0], 0)
    assert removed[0] in got_ids.tolist()


@pytest.mark.parametrize(("bits", "strategy"), STRATS[:3])
def test_delta_overflow_compacts(bits: int, strategy: str, rng: np.random.Generator) -> None:
    codes = uniform_codes(400, bits, rng)
    ids = np.arange(400, dtype=np.int64)
    idx = BinaryIndex(bits, strategy=strategy, max_delta=50)
    idx.add(ids[:100], codes[:100])
    for s in range(100, 400, 30):
        idx.add(ids[s : s + 30], codes[s : s + 30])
        assert idx.delta_size <= 50
    assert len(idx) == 400
    for i in (0, 150, 399):
        assert i in idx.search(codes[i], 0)[0].tolist()


def test_duplicate_ids_rejected(rng: np.random.Generator) -> None:
    codes = uniform_codes(10, 256, rng)
    idx = BinaryIndex(256)
    with pytest.raises(DuplicateIdError):
        idx.add(np.array([1, 2, 1]), codes[:3])
    assert len(idx) == 0
    idx.add(np.arange(5), codes[:5])
    with pytest.raises(DuplicateIdError):
        idx.add(np.array([7, 3]), codes[5:7])  # 3 is live in main
    idx.add(np.array([7]), codes[5:6])
    with pytest.raises(DuplicateIdError):
        idx.add(np.array([7]), codes[6:7])  # 7 is live in the delta
    assert len(idx) == 6
    idx.remove(np.array([7, 3]))
    idx.add(np.array([7, 3]), codes[6:8])  # fine once removed
    assert len(idx) == 6
    assert issubclass(DuplicateIdError, SearchError)


def test_invalid_inputs() -> None:
    idx = BinaryIndex(256)
    with pytest.raises(InvalidInputError):
        BinaryIndex(128)
    with pytest.raises(InvalidInputError):
        idx.add(np.arange(2), np.zeros((2, 8), np.uint8))  # wrong width
    with pytest.raises(InvalidInputError):
        idx.add(np.arange(3), np.zeros((2, 32), np.uint8))  # count mismatch
    with pytest.raises(InvalidInputError):
        idx.add(np.arange(2), np.zeros((2, 32), np.int64))  # wrong dtype
    with pytest.raises(InvalidInputError):
        idx.search(np.zeros(31, np.uint8), 3)
    with pytest.raises(InvalidInputError):
        idx.search(np.zeros(32, np.uint8), -1)
    with pytest.raises(InvalidInputError):
        idx.search_batch(np.zeros((2, 32), np.uint8), 3, threads=0)
    with pytest.raises(ValueError):  # InvalidInputError is also a ValueError
        idx.add(np.zeros((2, 2), np.int64), np.zeros((2, 32), np.uint8))


class _Model:
    """Dict model of the index: id -> code."""

    def __init__(self) -> None:
        self.d: dict[int, np.ndarray] = {}

    def arrays(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.d:
            return np.empty(0, np.int64), np.empty((0, nbytes), np.uint8)
        ks = sorted(self.d)
        return np.array(ks, np.int64), np.array([self.d[k] for k in ks], np.uint8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.sampled_from([64, 256]),
    strategy=st.sampled_from(["auto", "mih", "flat"]),
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "remove", "compact", "search"]), st.integers(1, 40)),
        min_size=1,
        max_size=25,
    ),
    max_delta=st.sampled_from([0, 16, 1000]),
)
def test_random_operation_sequences(
    bits: int, strategy: str, seed: int, ops: list[tuple[str, int]], max_delta: int
) -> None:
    """Any interleaving of add/remove/compact keeps search equal to the oracle."""
    rng = np.random.default_rng(seed)
    nb = bits // 8
    idx = BinaryIndex(bits, strategy=strategy, max_delta=max_delta)  # type: ignore[arg-type]
    model = _Model()
    next_id = 0
    centres = uniform_codes(3, bits, rng)
    for op, k in ops:
        if op == "add":
            codes = np.array(
                [flip(centres[rng.integers(3)], int(rng.integers(0, 12)), rng) for _ in range(k)],
                np.uint8,
            )
            new_ids = np.arange(next_id, next_id + k, dtype=np.int64)[::-1].copy()
            next_id += k
            idx.add(new_ids, codes)
            for i, c in zip(new_ids.tolist(), codes, strict=True):
                model.d[i] = c
        elif op == "remove":
            if model.d:
                pick = rng.choice(sorted(model.d), size=min(k, len(model.d)), replace=False)
                idx.remove(pick)
                for i in pick.tolist():
                    model.d.pop(i)
        elif op == "compact":
            idx.compact()
        else:
            ids, codes = model.arrays(nb)
            q = flip(centres[rng.integers(3)], int(rng.integers(0, 8)), rng)
            radius = int(rng.choice([0, 4, 10, 31, bits]))
            assert as_set(*idx.search(q, radius)) == oracle(codes, ids, q, radius)
            lims, bi, bd = idx.search_batch(q[None, :], radius)
            assert as_set(bi, bd) == oracle(codes, ids, q, radius)
        assert len(idx) == len(model.d)


def test_ids_in_ranges_matches_a_filter_over_live_ids() -> None:
    """Oracle: the live ids (main and delta, after removals) filtered by the ranges."""
    rng = np.random.default_rng(7)
    index = BinaryIndex(64, max_delta=1000)
    main_ids = np.unique(rng.integers(0, 5000, 800))
    index.add(main_ids, rng.integers(0, 256, (len(main_ids), 8), dtype=np.uint8))
    delta_ids = np.setdiff1d(np.unique(rng.integers(5000, 9000, 300)), main_ids)
    index.add(delta_ids, rng.integers(0, 256, (len(delta_ids), 8), dtype=np.uint8))
    index.remove(np.concatenate([main_ids[::7], delta_ids[::5]]))
    live, _ = index.live_arrays()
    lo = np.array([8000, 0, 100, 4990, 6000], dtype=np.int64)
    hi = np.array([8500, 50, 1000, 5100, 6000], dtype=np.int64)
    got = np.sort(index.ids_in_ranges(lo, hi))
    want = live[np.any((live[:, None] >= lo) & (live[:, None] < hi), axis=1)]
    assert len(want) > 50
    assert np.array_equal(got, want)
    assert len(index.ids_in_ranges(np.array([], np.int64), np.array([], np.int64))) == 0
