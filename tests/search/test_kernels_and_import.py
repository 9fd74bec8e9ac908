"""Low-level pieces: popcount, MIH plans, table layout, and the cheap-import contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hashsvc.search import mih


def test_import_is_cheap() -> None:
    code = (
        "import sys, hashsvc.search as s; s.BinaryIndex; "
        "bad = [m for m in ('numba', 'faiss', 'llvmlite') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_popcount() -> None:
    from hashsvc.search import kernels as K

    for v in (0, 1, 2**63, 2**64 - 1, 0x5555_5555_5555_5555, 12345678901234):
        assert K.popcount64(np.uint64(v)) == bin(v).count("1")


@pytest.mark.parametrize("n", [10, 10_000, 1_000_000, 10_000_000, 100_000_000])
@pytest.mark.parametrize("bits", [64, 256])
def test_num_tables_and_radius_budget(n: int, bits: int) -> None:
    m = mih.choose_num_tables(n, bits)
    starts, lens = mih.split_bits(bits, m)
    assert lens.sum() == bits and lens.max() - lens.min() <= 1 and lens.max() <= 32
    assert starts[0] == 0 and np.all(np.diff(starts) == lens[:-1])
    for radius in (0, 1, 10, 31, 64, bits):
        rad = mih.allocate_radii(lens, radius, n)
        # pigeonhole: sum(r_t + 1) >= radius + 1 guarantees no miss
        assert (rad + 1).sum() >= radius + 1 or np.all(rad >= lens)
    if bits == 256 and n == 10_000_000:
        assert m == 11 and sorted(set(lens.tolist())) == [23, 24]
    assert (mih.allocate_radii(lens, 0, n) >= 0).sum() == 1  # radius 0: a single probe


def test_build_table_is_a_counting_sort(rng: np.random.Generator) -> None:
    codes = rng.integers(0, 2**63, size=(5000, 4), dtype=np.uint64)
    t = mih.build_tables(codes, 256, 20, threads=2)  # 12-13-bit substrings, some straddling
    from hashsvc.search import kernels as K

    assert np.all(t.meta[:, K.M_DIRECT] == 1)

    for j in range(t.num_tables):
        start, length = int(t.starts[j]), int(t.lens[j])
        keys = K.substring_keys(codes.reshape(-1), 4, len(codes), start, length)
        off = t.offsets[t.meta[j, K.M_OFF] : t.meta[j, K.M_OFF] + 2**length + 1].astype(np.int64)
        rows = t.rows[j * len(codes) : (j + 1) * len(codes)].astype(np.int64)
        order = np.argsort(keys, kind="stable")
        assert np.array_equal(rows, order)  # stable: ascending rows within a bucket
        assert off[0] == 0 and off[-1] == len(codes)
        counts = np.bincount(keys.astype(np.int64), minlength=2**length)
        assert np.array_equal(np.diff(off), counts)


def test_sparse_forced_tables_use_sorted_layout(rng: np.random.Generator) -> None:
    """A forced m with wide substrings over few rows must not allocate 2**24-entry arrays."""
    from hashsvc.search import kernels as K

    codes = rng.integers(0, 2**63, size=(3000, 4), dtype=np.uint64)
    t = mih.build_tables(codes, 256, 11)
    assert np.all(t.meta[:, K.M_DIRECT] == 0)
    assert t.nbytes < 2_000_000
