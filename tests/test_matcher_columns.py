"""`Matcher.match_pdq_codes` (a batch of PDQ-only lookups, column-wise) answers every item
as `match_many` does on the same items built one by one: the oracle here is the ordinary
path, over codes placed on each side of every rule it applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hashsvc.config import Settings
from hashsvc.hashing import HashPath, MediaHashes
from hashsvc.hashlist import ListEntry
from hashsvc.matcher import Matcher
from hashsvc.policy import Verdict
from hashsvc.signals import Hash, SignalType


def _flipped(code: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(256, n, replace=False)] ^= 1
    return np.packbits(bits)


@pytest.fixture
def matcher(tmp_path: Path) -> tuple[Matcher, np.ndarray]:
    """Lists with thresholds 31 (block), 20 (report) and 10 (block, one entry disabled);
    returns the matcher and the listed codes (row i: list entry i)."""
    rng = np.random.default_rng(7)
    listed = rng.integers(0, 256, (6, 32), dtype=np.uint8)
    settings = Settings(data_dir=tmp_path)
    m = Matcher.open(settings)
    for name, action, threshold, rows in (
        ("wide", "block", 31, (0, 1)),
        ("narrow", "report", 20, (2, 3)),
        ("tight", "block", 10, (4, 5)),
    ):
        m.store.create_list(name, action, pdq_threshold=threshold)
        m.store.import_entries(
            name,
            [ListEntry(hash=Hash(SignalType.PDQ, listed[r].tobytes())) for r in rows],
            source_name="t",
            file_sha256="",
        )
    (off,) = [e.id for e in m.store.entries("tight") if e.hash.value == listed[5].tobytes()]
    m.store.set_enabled(off, False)
    m.indexes.refresh()
    return m, listed


def _queries(listed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int | None]]:
    codes, quality = [], []
    for row in listed:
        for flips in (0, 5, 9, 10, 11, 19, 20, 21, 30, 31, 32, 40):
            for q in (None, 100, 50, 49, 0):
                codes.append(_flipped(row, flips, rng))
                quality.append(q)
    for _ in range(300):  # unrelated codes: the plain allows
        codes.append(rng.integers(0, 256, 32, dtype=np.uint8))
        quality.append(int(rng.choice([100, 80, 10])) if rng.random() < 0.5 else None)
    codes.append(codes[0])  # the same code twice in one batch
    quality.append(quality[0])
    return np.array(codes, np.uint8), quality


@pytest.mark.parametrize("lists", [None, ("wide", "tight"), ()])
def test_columns_answer_like_match_many(
    matcher: tuple[Matcher, np.ndarray], lists: tuple[str, ...] | None
) -> None:
    m, listed = matcher
    codes, quality = _queries(listed, np.random.default_rng(1))
    got = m.match_pdq_codes(codes, quality, lists=lists)
    items = [
        MediaHashes(pdq=Hash(SignalType.PDQ, c.tobytes()), pdq_quality=q, path=HashPath.REFERENCE)
        for c, q in zip(codes, quality, strict=True)
    ]
    want = m.match_many(items, lists=lists)
    plain = 0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g is None:
            assert (w.verdict, w.matches, w.notes) == (Verdict.ALLOW, (), ()), i
            plain += 1
        else:
            assert (g.verdict, g.matches, g.notes, g.hashes) == (
                w.verdict,
                w.matches,
                w.notes,
                w.hashes,
            ), i
    verdicts = {r.verdict for r in want}
    assert plain >= 300 and len(got) - plain > 30
    expected = {None: set(Verdict), (): {Verdict.ALLOW}}.get(lists, {Verdict.ALLOW, Verdict.BLOCK})
    assert verdicts == expected, verdicts


def test_columns_refuse_mismatched_lengths_and_take_empty(
    matcher: tuple[Matcher, np.ndarray],
) -> None:
    m, listed = matcher
    with pytest.raises(ValueError):
        m.match_pdq_codes(listed, [None])
    assert m.match_pdq_codes(np.empty((0, 32), np.uint8), []) == []
