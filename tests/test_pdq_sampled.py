"""hashsvc.pdq_sampled (the matching path's PDQ) against pdq_fast, the bit-exact port of
Meta's reference (tests/test_pdq_fast.py ties pdq_fast to the pdqhash binding).

The oracle is the reference's own 64x64 buffer of the same pixels (and of the pixels
truly flipped): the sampled buffer must equal it up to float32 rounding, and the hash
bits may differ only where a coefficient sits on the median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashsvc import hashing, media, pdq_fast, pdq_sampled
from hashsvc.hashing import HashPath
from tests.conftest import encode, smooth_image

FLIPS = ((False, False), (False, True), (True, False), (True, True))


def reference_buffer(gray: np.ndarray) -> np.ndarray:
    """pdq_fast's Jarosz filter + decimation: the reference's float32 buffer."""
    gray = np.ascontiguousarray(gray)
    nr, nc = gray.shape
    out = np.empty((64, 64), dtype=np.float32)
    pdq_fast._downsample(
        1, gray.reshape(-1), pdq_fast._EMPTY_F32, nr, nc, *pdq_fast._geometry(nr, nc), out
    )
    return out


def flipped(gray: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
    out = gray[::-1] if rows else gray
    return np.ascontiguousarray(out[:, ::-1] if cols else out)


def photo_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@pytest.mark.parametrize(
    "shape",
    [(128, 128), (240, 320), (768, 1024), (333, 517), (1000, 129), (129, 1000), (2448, 3264)],
)
def test_buffers_equal_the_reference_filter_for_every_flip(shape: tuple[int, int]) -> None:
    # windows even and odd, decimation even and uneven, the tallest/widest aspect ratios
    gray = np.random.default_rng(shape[0] * 7 + shape[1]).integers(0, 256, shape, np.uint8)
    for (rows, cols), got in zip(FLIPS, pdq_sampled.buffers(gray, FLIPS), strict=True):
        want = reference_buffer(flipped(gray, rows, cols))
        # values 0..255; float32 rounding of two different summation orders
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


def literal_weights(n: int) -> np.ndarray:
    """(64, n) weights of two box1DFloat passes at the decimation positions, the slow
    obvious way: average, over p's window, the rows of the single-pass filter."""
    w = (n + 127) // 128
    half = (w + 2) // 2
    box = np.zeros((n, n))
    for i in range(n):
        lo, hi = max(0, i + half - w), min(n - 1, i + half - 1)
        box[i, lo : hi + 1] = 1.0 / (hi - lo + 1)
    return (box @ box)[pdq_fast._decimation_indices(n)]


@pytest.mark.parametrize("n", [128, 129, 200, 240, 256, 383, 768, 1024, 1500])
def test_weights_equal_the_literal_filter(n: int) -> None:
    starts, weights = pdq_sampled._sample_weights(n)
    dense = np.zeros((64, n))
    for o in range(64):
        dense[o, starts[o] : starts[o] + weights.shape[1]] = weights[o]
    np.testing.assert_allclose(dense, literal_weights(n), rtol=0, atol=1e-7)


def test_weights_are_the_doubled_box_filter() -> None:
    # each sample is an average of averages: its weights sum to 1, all >= 0, and they
    # span at most the 2w - 1 pixels two box passes of width w reach
    for n in (128, 129, 240, 768, 1024, 3264):
        starts, weights = pdq_sampled._sample_weights(n)
        w = (n + 127) // 128
        assert weights.shape == (64, 2 * w - 1)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
        assert (weights >= 0).all() and (starts >= 0).all() and (starts + 2 * w - 1 <= n).all()


def test_photo_hashes_equal_the_exact_kernel(pdq_data: Path) -> None:
    photos = sorted(pdq_data.rglob("*.jpg"))[:40]
    assert len(photos) >= 20
    drifts = []
    for path in photos:
        gray = photo_gray(path)
        if min(gray.shape) < pdq_sampled.MIN_SIDE:
            continue
        want, q_want = pdq_fast.pdq_dihedral_from_gray_u8(gray)
        got, got_flipped, q_got = pdq_sampled.pdq_dihedral_passes(gray, 1)
        assert q_got == q_want
        assert got_flipped is not None
        want_flipped, _ = pdq_fast.pdq_dihedral_from_gray_u8(flipped(gray, False, True))
        if q_want >= 50:  # below that the bits are rounding noise in any implementation
            drifts.append(int((got != want).sum(axis=1).max()))
            drifts.append(int((got_flipped != want_flipped).sum(axis=1).max()))
    assert len(drifts) >= 20
    assert max(drifts) <= 2 and np.median(drifts) == 0, drifts


def test_plain_hash_and_top_bottom_pass() -> None:
    gray = np.asarray(smooth_image(3, (640, 480)).convert("L"))
    bits, quality = pdq_sampled.pdq_from_gray_u8(gray)
    want, q_want = pdq_fast.pdq_from_gray_u8(gray)
    assert quality == q_want >= 50
    assert int((bits != want).sum()) <= 2
    first, second, _ = pdq_sampled.pdq_dihedral_passes(gray, 0)
    assert second is not None
    want_second, _ = pdq_fast.pdq_dihedral_from_gray_u8(flipped(gray, True, False))
    assert int((second != want_second).sum(axis=1).max()) <= 2


@pytest.mark.parametrize("shape", [(5, 5), (64, 64), (100, 300), (127, 500)])
def test_small_images_take_the_exact_kernel(shape: tuple[int, int]) -> None:
    gray = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    bits, quality = pdq_sampled.pdq_from_gray_u8(gray)
    want, q_want = pdq_fast.pdq_from_gray_u8(gray)
    assert quality == q_want and np.array_equal(bits, want)
    first, second, _ = pdq_sampled.pdq_dihedral_passes(gray, 1)
    assert np.array_equal(first, pdq_fast.pdq_dihedral_from_gray_u8(gray)[0])
    assert second is not None
    assert np.array_equal(second, pdq_fast.pdq_dihedral_from_gray_u8(flipped(gray, False, True))[0])


def test_fast_path_hashes_with_it_and_reference_path_does_not() -> None:
    data = encode(smooth_image(5, (1024, 768)), quality=90)
    fast = hashing.hash_media(data, path=HashPath.FAST, dihedral=True)
    reference = hashing.hash_media(data, path=HashPath.REFERENCE)
    gray = media.decode(data, mode="L", fast=True).array()  # the fast path's luma
    sampled_bits, _ = pdq_sampled.pdq_from_gray_u8(gray)
    assert fast.pdq == hashing.Hash.from_bits(hashing.SignalType.PDQ, sampled_bits)
    # the reference path stays bit-exact with Meta's PDQ on the RGB decode
    rgb = media.decode(data).array()
    assert reference.pdq == hashing.Hash.from_bits(
        hashing.SignalType.PDQ, pdq_fast.pdq_from_rgb(rgb)[0]
    )
    assert fast.pdq - reference.pdq <= 8


def test_rejects_what_is_not_a_uint8_plane() -> None:
    with pytest.raises(ValueError, match="uint8"):
        pdq_sampled.pdq_from_gray_u8(np.zeros((200, 200), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        pdq_sampled.pdq_dihedral_passes(np.zeros((200, 200, 3), np.uint8), None)
