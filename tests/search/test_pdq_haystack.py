"""End to end on the PDQ reference regression data (Meta's haystack/needles, hex hashes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from search_oracle import as_set, oracle

from hashsvc.search import BinaryIndex

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "pdq" / "reg-test-input"
CANDIDATES = [DATA, Path("/work/shared/testdata/pdq/reg-test-input")]


def _load(name: str) -> np.ndarray:
    for d in CANDIDATES:
        p = d / name
        if p.is_file():
            lines = [ln.split()[0] for ln in p.read_text().splitlines() if ln.strip()]
            return np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in lines])
    pytest.skip(f"PDQ regression data {name} not available")


@pytest.mark.parametrize("strategy", ["auto", "mih", "flat"])
def test_haystack_needles_equal_oracle(strategy: str) -> None:
    hay = _load("haystack.txt")
    needles = _load("needles.txt")
    assert hay.shape[1] == 32 and needles.shape[1] == 32
    ids = np.arange(len(hay), dtype=np.int64)
    idx = BinaryIndex(256, strategy=strategy)  # type: ignore[arg-type]
    idx.add(ids, hay)
    total = 0
    for radius in (0, 31, 63):
        for q in needles:
            got = as_set(*idx.search(q, radius))
            assert got == oracle(hay, ids, q, radius)
            total += len(got)
        lims, bi, bd = idx.search_batch(needles, radius, threads=2)
        assert len(bi) == sum(len(oracle(hay, ids, q, radius)) for q in needles)
    assert total > 0  # the needles do have matches in the haystack
