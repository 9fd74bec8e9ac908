"""Corroboration: a PDQ hit beyond the list's threshold counts when the same media item's
pHash is close too (matcher.py `_corroborated`, Settings.corroborate_*).

Queries are the enrolled hashes with a known number of bits flipped, so every distance
is exact and each side of each bound is tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hashsvc.config import Settings
from hashsvc.enrollment import enroll
from hashsvc.hashing import HashPath, MediaHashes
from hashsvc.hashlist import ListEntry
from hashsvc.matcher import CORROBORATED, Matcher
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Store
from tests.conftest import PDQ_DATA

BRIDGE = PDQ_DATA / "bridge-mods" / "aaa-orig.jpg"


def flipped(h: Hash, n: int, seed: int = 0) -> Hash:
    bits = h.bits()
    bits[np.random.default_rng(seed).choice(len(bits), n, replace=False)] ^= 1
    return Hash.from_bits(h.signal, bits)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Settings, Hash, Hash]:
    settings = Settings(data_dir=tmp_path)
    with Store.open(settings.db_path) as store:
        store.create_list("bank", "block")
        store.create_list("strict", "block", options={"corroborate": False})
        store.create_list("bare", "report")
        data = BRIDGE.read_bytes()
        enroll(store, "bank", [("b", data)])
        enroll(store, "strict", [("b", data)])
        (pdq,) = [e.hash for e in store.entries("bank") if e.hash.signal is SignalType.PDQ]
        (phash,) = [e.hash for e in store.entries("bank") if e.hash.signal is SignalType.PHASH]
        # the same hashes as bare, unrelated rows (no shared external id): no sibling
        store.import_entries(
            "bare", [ListEntry(hash=pdq), ListEntry(hash=phash)], source_name="t", file_sha256=""
        )
    return settings, pdq, phash


def _matches(settings: Settings, query: MediaHashes, corroborate: bool = True) -> set[str]:
    matcher = Matcher.open(settings)
    try:
        result = matcher.match(query, corroborate=corroborate)
    finally:
        matcher.close()
    return {f"{m.list_name}:{m.signal.value}:{m.variant}:{m.distance}" for m in result.matches}


def _query(
    pdq: Hash, phash: Hash, pdq_bits: int, phash_bits: int, quality: int = 100
) -> MediaHashes:
    return MediaHashes(
        pdq=flipped(pdq, pdq_bits, 1), pdq_quality=quality,
        phash=flipped(phash, phash_bits, 2), path=HashPath.REFERENCE,
    )  # fmt: skip


def test_pdq_beyond_threshold_matches_when_phash_backs_it(
    setup: tuple[Settings, Hash, Hash],
) -> None:
    settings, pdq, phash = setup
    got = _matches(settings, _query(pdq, phash, 40, 8))
    assert got == {f"bank:pdq:{CORROBORATED}:40"}  # not `strict` (opted out), not `bare`


_P, _H = Settings().corroborate_pdq, Settings().corroborate_phash


@pytest.mark.parametrize(
    ("pdq_bits", "phash_bits", "quality", "matched"),
    [(_P, _H, 100, True), (_P + 1, _H, 100, False), (_P, _H + 1, 100, False),
     (40, 8, 20, True), (40, 8, 19, False), (40, 8, 45, True)],
)  # fmt: skip
def test_bounds(
    setup: tuple[Settings, Hash, Hash], pdq_bits: int, phash_bits: int, quality: int, matched: bool
) -> None:
    settings, pdq, phash = setup
    got = _matches(settings, _query(pdq, phash, pdq_bits, phash_bits, quality))
    assert bool(got) is matched, got


def test_precomputed_lookups_do_not_corroborate_unless_configured(
    setup: tuple[Settings, Hash, Hash],
) -> None:
    settings, pdq, phash = setup
    query = _query(pdq, phash, 40, 8)
    assert _matches(settings, query, corroborate=False) == set()
    assert _matches(settings.with_(corroborate_lookups=True), query, corroborate=False)
    assert _matches(settings.with_(corroborate=False), query, corroborate=True) == set()


def test_within_threshold_hits_are_not_labelled_corroborated(
    setup: tuple[Settings, Hash, Hash],
) -> None:
    settings, pdq, phash = setup
    got = _matches(settings, _query(pdq, phash, 20, 8))
    assert "bank:pdq:None:20" in got and "strict:pdq:None:20" in got
    assert not any(CORROBORATED in g for g in got)


# --- rotation/flip variants are confirmed on the transformed pixels -----------------------


def test_dihedral_matches_are_confirmed_with_the_exact_distance(tmp_path: Path) -> None:
    """A mirrored/rotated copy matches through a variant; the reported distance is that
    of the truly transformed pixels, not of the approximation: Meta's pdqhash (the oracle)
    on the transformed full decode for REFERENCE hashes, and on the transformed luma of the
    matching path's own decode for FAST ones (within the 2 bits by which the FAST path's
    sampled kernel may differ from exact PDQ on the same pixels)."""
    import io

    import pdqhash
    from PIL import Image

    from hashsvc import media

    settings = Settings(data_dir=tmp_path)
    with Store.open(settings.db_path) as store:
        store.create_list("bank", "block", options={"crops": False})
        enroll(store, "bank", [("b", BRIDGE.read_bytes())])
        (entry,) = [e for e in store.entries("bank") if e.hash.signal is SignalType.PDQ]
    original = Image.open(BRIDGE).convert("RGB")
    matcher = Matcher.open(settings)
    try:
        for edit, undo in (
            (Image.Transpose.FLIP_LEFT_RIGHT, lambda a: a[:, ::-1]),
            (Image.Transpose.ROTATE_90, lambda a: np.rot90(a, -1)),
        ):
            buf = io.BytesIO()
            original.transpose(edit).save(buf, "JPEG", quality=90)
            data = buf.getvalue()
            distances = {}
            for path in (HashPath.REFERENCE, HashPath.FAST):
                result = matcher.match_upload(matcher.hash_upload(data, path=path), data)
                (m,) = [m for m in result.matches if m.signal is SignalType.PDQ]
                assert m.variant not in (None, "original")
                if path is HashPath.REFERENCE:
                    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                else:  # the luma as R = G = B: PDQ's own luma of it is that luma
                    luma = media.decode(data, mode="L", fast=True).array()
                    pixels = np.repeat(luma[:, :, None], 3, axis=2)
                bits, _ = pdqhash.compute(np.ascontiguousarray(undo(pixels)))
                oracle = Hash.from_bits(SignalType.PDQ, bits) - entry.hash
                assert abs(m.distance - oracle) <= (0 if path is HashPath.REFERENCE else 2)
                distances[path] = m.distance
            # the matching path's decode drifts a few bits from the full one, no more
            assert abs(distances[HashPath.FAST] - distances[HashPath.REFERENCE]) <= 8, distances
    finally:
        matcher.close()


def test_an_unconfirmed_variant_match_is_dropped(setup: tuple[Settings, Hash, Hash]) -> None:
    """A variant hit on an entry the transformed pixels are far from is removed, and the
    verdict follows (the approximation's false matches in the benchmark were of this kind)."""
    from hashsvc.matcher import Match, MatchResult
    from hashsvc.policy import Verdict
    from hashsvc.store import Action

    settings, _, _ = setup
    unrelated = (PDQ_DATA / "reg-test-input" / "labelme-subset").glob("*.jpg")
    data = next(iter(sorted(unrelated))).read_bytes()
    matcher = Matcher.open(settings)
    try:
        (pdq_entry,) = [
            e.id for e in matcher.store.entries("bank") if e.hash.signal is SignalType.PDQ
        ]
        fake = Match("bank", pdq_entry, SignalType.PDQ, 30, Action.BLOCK, "", "", "flipy")
        hashes = matcher.hash_upload(data)
        before = MatchResult(Verdict.BLOCK, (fake,), hashes)  # type: ignore[arg-type]
        after = matcher.confirm_dihedral(before, data)
        assert after.matches == () and after.verdict is Verdict.ALLOW
        assert any("not confirmed" in n for n in after.notes)
    finally:
        matcher.close()


def test_corroborable_lists_need_both_signals_with_an_external_id(tmp_path: Path) -> None:
    """Only a list holding a PDQ and a pHash entry that carry external ids can give a
    pHash hit a PDQ sibling; a disabled pair still counts (liveness is read per match)."""
    rng = np.random.default_rng(5)

    def rand(signal: SignalType) -> Hash:
        return Hash(signal, rng.integers(0, 256, signal.bits // 8, np.uint8).tobytes())

    with Store.open(tmp_path / "h.db") as store:
        for name in ("bare", "pdq_ids", "mixed", "paired"):
            store.create_list(name, "block")
        PDQ, PHASH = SignalType.PDQ, SignalType.PHASH
        rows = {
            "bare": [ListEntry(hash=rand(PDQ)), ListEntry(hash=rand(PHASH))],
            "pdq_ids": [ListEntry(hash=rand(PDQ), external_id="a"), ListEntry(hash=rand(PHASH))],
            "mixed": [ListEntry(hash=rand(PHASH), external_id="b")],
            "paired": [ListEntry(hash=rand(PDQ), external_id="c"),
                       ListEntry(hash=rand(PHASH), external_id="c")],
        }  # fmt: skip
        for name, entries in rows.items():
            store.import_entries(name, entries, source_name="t", file_sha256="")
        by_name = {lst.name: lst.id for lst in store.lists()}
        assert store.corroborable_lists() == [by_name["paired"]]
        # a PDQ with an id in `mixed` (whose pHash has one) makes it qualify
        store.import_entries(
            "mixed", [ListEntry(hash=rand(PDQ), external_id="z")], source_name="t",
            file_sha256="",
        )  # fmt: skip
        assert store.corroborable_lists() == sorted([by_name["paired"], by_name["mixed"]])
        for e in store.entries("paired"):
            store.set_enabled(e.id, False)
        assert by_name["paired"] in store.corroborable_lists()


def test_without_pairs_the_wide_phash_search_is_skipped_until_one_arrives(
    tmp_path: Path,
) -> None:
    """With no list holding a PDQ/pHash pair, pHash is searched at the lists' own
    radius, not corroboration's; once an enrolled item arrives (a version change), the
    same query corroborates again, with nothing else reopened."""
    settings = Settings(data_dir=tmp_path)
    data = BRIDGE.read_bytes()
    with Store.open(settings.db_path) as store:
        store.create_list("bank", "block")
        enroll(store, "bank", [("b", data)])
        enrolled = {e.hash.signal: e.hash for e in store.entries("bank")}
        store.create_list("bare", "block", phash_threshold=4)
        store.import_entries(
            "bare", [ListEntry(hash=enrolled[SignalType.PDQ]),
                     ListEntry(hash=enrolled[SignalType.PHASH])],
            source_name="t", file_sha256="",
        )  # fmt: skip
        store.delete_list("bank")
    query = _query(enrolled[SignalType.PDQ], enrolled[SignalType.PHASH], 40, 8)
    matcher = Matcher.open(settings)
    radii: list[int] = []
    search = matcher.indexes.search

    def spy(q: Hash, radius: int):  # type: ignore[no-untyped-def]
        if q.signal is SignalType.PHASH:
            radii.append(radius)
        return search(q, radius)

    matcher.indexes.search = spy  # type: ignore[method-assign]
    try:
        assert matcher.match(query, corroborate=True).matches == ()
        assert radii == [4]  # `bare`'s pHash threshold, not corroborate_phash (16)
        with Store.open(settings.db_path) as store:
            store.create_list("bank2", "block")
            enroll(store, "bank2", [("b", data)])
        matcher.indexes.refresh()
        got = matcher.match(query, corroborate=True).matches
        assert [(m.list_name, m.variant, m.distance) for m in got] == [("bank2", CORROBORATED, 40)]
        assert radii[-1] == Settings().corroborate_phash
    finally:
        matcher.close()
