"""Media bytes -> hashes: PDQ (+quality, + dihedral variants), pHash, MD5, SHA-256.

Two decode paths, one set of hash functions:

- `HashPath.REFERENCE`: full-resolution RGB decode, PDQ computed exactly as Meta's
  reference (`pdqhash` on a full Pillow decode; our numba port in `pdq_fast` is
  bit-identical to it and ~10x faster), pHash exactly as `imagehash.phash`. Every hash
  that leaves the service (`hashsvc hash`, enrollment, exports) uses this path.
- `HashPath.FAST`: for matching uploads. The JPEG decoder emits the luma plane directly
  (no chroma upsampling, no colour conversion) and large JPEGs are decoded at 1/2..1/8
  scale via the DCT (see `media.FAST_MIN_SIDE`); pHash resizes from a box-reduced image.
  Its drift against the reference is measured in bench/hashing.py and bounded there.

Only the signal types asked for are computed. The functions that take pixels are pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any, Literal

import numpy as np
from PIL import Image

from hashsvc import media
from hashsvc.signals import Hash, SignalType

#: Order of `pdqhash.compute_dihedral` and of `MediaHashes.pdq_dihedral`.
DIHEDRAL_NAMES: tuple[str, ...] = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flipx",
    "flipy",
    "flip_plus1",
    "flip_minus1",
)

#: what an image can give (vPDQ is a video's)
ALL_SIGNALS: frozenset[SignalType] = frozenset(SignalType) - {SignalType.VPDQ}
PIXEL_SIGNALS: frozenset[SignalType] = frozenset({SignalType.PDQ, SignalType.PHASH})


class HashPath(StrEnum):
    """Which decode path produced the perceptual hashes."""

    REFERENCE = "reference"
    FAST = "fast"


@dataclass(frozen=True)
class MediaHashes:
    """The hashes of one media file. Absent signals are None."""

    md5: Hash | None = None
    sha256: Hash | None = None
    pdq: Hash | None = None
    pdq_quality: int | None = None
    phash: Hash | None = None
    #: the 8 dihedral PDQ variants in DIHEDRAL_NAMES order ([0] == pdq), when asked for
    pdq_dihedral: tuple[Hash, ...] = field(default=())
    path: HashPath = HashPath.REFERENCE
    #: PDQ of the content inside added borders or caption bars (when asked for and
    #: found), and that box (left, top, right, bottom) in decoded pixels
    trimmed: tuple[Hash, ...] = field(default=())
    trim_box: tuple[int, int, int, int] | None = None

    def get(self, signal: SignalType) -> Hash | None:
        return {
            SignalType.PDQ: self.pdq,
            SignalType.PHASH: self.phash,
            SignalType.MD5: self.md5,
            SignalType.SHA256: self.sha256,
        }[signal]

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape (`hashsvc hash`, `/v1/hash`): hex strings, no variants."""
        out: dict[str, Any] = {}
        if self.pdq is not None:
            out["pdq"] = self.pdq.hex
            out["pdq_quality"] = self.pdq_quality
        if self.phash is not None:
            out["phash"] = self.phash.hex
        if self.md5 is not None:
            out["md5"] = self.md5.hex
        if self.sha256 is not None:
            out["sha256"] = self.sha256.hex
        return out


# --- pure hash functions -------------------------------------------------------------


def md5(data: bytes) -> Hash:
    return Hash(SignalType.MD5, hashlib.md5(data, usedforsecurity=False).digest())


def sha256(data: bytes) -> Hash:
    return Hash(SignalType.SHA256, hashlib.sha256(data).digest())


#: Which PDQ implementation hashes RGB pixels: our numba port (fast per image, ~1 s to
#: load its compiled kernels once per process) or Meta's C++ via `pdqhash` (~0.15 s to
#: import, ~5x slower per image). Both give identical bits (tests/test_pdq_fast.py): a
#: CLI call on a handful of files starts faster with `pdqhash`. "sampled" is the matching
#: (fast decode) path's: `pdq_sampled` filters only where PDQ samples, 0-2 bits from the
#: others on the same pixels; it takes a uint8 luma plane (anything else goes to numba).
PdqEngine = Literal["numba", "pdqhash", "sampled"]


def pdq(pixels: np.ndarray, engine: PdqEngine = "numba") -> tuple[Hash, int]:
    """PDQ of uint8 RGB (H, W, 3) or luma (H, W) pixels -> (hash, quality 0..100)."""
    if engine == "pdqhash" and pixels.ndim == 3:
        import pdqhash

        bits, quality = pdqhash.compute(pixels)
        return Hash.from_bits(SignalType.PDQ, bits), int(quality)
    if engine == "sampled" and _sampled_input(pixels):
        from hashsvc import pdq_sampled

        bits, quality = pdq_sampled.pdq_from_gray_u8(pixels)
        return Hash.from_bits(SignalType.PDQ, bits), int(quality)
    from hashsvc import pdq_fast

    if pixels.ndim == 3:
        bits, quality = pdq_fast.pdq_from_rgb(pixels)
    else:
        bits, quality = pdq_fast.pdq_from_gray_u8(pixels)
    return Hash.from_bits(SignalType.PDQ, bits), int(quality)


def pdq_dihedral(
    pixels: np.ndarray, engine: PdqEngine = "numba", *, second_pass: bool = True
) -> tuple[tuple[Hash, ...], int]:
    """The 8 rotation/flip PDQ variants (DIHEDRAL_NAMES order).

    One filter pass gives all 8 by turning PDQ's 64x64 buffer, but only "original" and
    "flip_plus1" (the transpose) are exact: the buffer samples an image slightly off
    centre along an axis whose size gives an even filter window or uneven sampling
    (`buffer_offset`), and a flip doubles that offset. At 1024x768 the variants sat a
    median 10-16 bits from the PDQ of the truly turned image (>31 for 5-10% of photos),
    at 320x240 up to 50. `second_pass` hashes the image flipped along one off-centre
    axis as well (`_flip_axis`): 4 variants are then exact and the other 4 carry the
    error of the other axis only (`_TWO_PASS`). Skipped when both axes sample centred.
    """
    axis = _flip_axis(pixels.shape[0], pixels.shape[1]) if second_pass else None
    first, second, quality = _passes(pixels, engine, axis)
    if axis is None or second is None:
        return first, quality
    passes = (first, second)
    return tuple(passes[p][i] for p, i in _TWO_PASS_INDEX[axis]), quality


def _passes(
    pixels: np.ndarray, engine: PdqEngine, axis: int | None
) -> tuple[tuple[Hash, ...], tuple[Hash, ...] | None, int]:
    """(8 variants of the pixels, 8 of the pixels flipped along `axis` or None, quality)."""
    if engine == "sampled" and _sampled_input(pixels):
        from hashsvc import pdq_sampled  # both passes share the vertical filter stage

        bits, flipped_bits, quality = pdq_sampled.pdq_dihedral_passes(pixels, axis)
        second = None if flipped_bits is None else _pdq_hashes(flipped_bits)
        return _pdq_hashes(bits), second, quality
    first, quality = _dihedral_pass(pixels, engine)
    if axis is None:
        return first, None, quality
    flipped = pixels[:, ::-1] if axis == 1 else pixels[::-1]  # our kernels copy it once
    if engine == "pdqhash":  # the binding reads a non-C-ordered array's luma scrambled
        flipped = np.ascontiguousarray(flipped)
    return first, _dihedral_pass(flipped, engine)[0], quality


def _pdq_hashes(bits: Iterable[np.ndarray]) -> tuple[Hash, ...]:
    return tuple(Hash.from_bits(SignalType.PDQ, b) for b in bits)


#: With a second pass over the image flipped along `axis` (1: left-right, 0: top-bottom),
#: where each variant (DIHEDRAL_NAMES order) comes from: (pass, that pass's variant). A
#: pass's "original" and "flip_plus1" are exact; a variant that flips the buffer along
#: the other axis only carries that axis's (smaller) error.
_TWO_PASS: dict[int, tuple[tuple[int, str], ...]] = {
    1: ((0, "original"), (1, "flip_plus1"), (1, "flipx"), (0, "rotate270"),
        (0, "flipx"), (1, "original"), (0, "flip_plus1"), (1, "rotate270")),
    0: ((0, "original"), (0, "rotate90"), (1, "flipy"), (1, "flip_plus1"),
        (1, "original"), (0, "flipy"), (0, "flip_plus1"), (1, "rotate90")),
}  # fmt: skip
_TWO_PASS_INDEX = {
    axis: tuple((p, DIHEDRAL_NAMES.index(v)) for p, v in picks) for axis, picks in _TWO_PASS.items()
}

#: Below this offset (in 64x64 buffer cells) on both axes one pass is close enough.
CENTRED_OFFSET = 0.04


@cache
def buffer_offset(n: int) -> float:
    """How far off centre PDQ's 64x64 buffer samples a dimension of n pixels, in cells.

    Each of the two box-filter passes shifts by half a pixel when the window
    ((n + 127) // 128) is even; decimation takes pixel int((o + 0.5) * n / 64) for the
    cell whose centre is at (o + 0.5) * n / 64 - 0.5. A flip turns the offset's sign, so
    a flipped buffer is off by twice this from the buffer of the flipped image.
    """
    window = (n + 127) // 128
    shift = 1.0 if window % 2 == 0 else 0.0
    cell = n / 64
    sampled = sum(int((o + 0.5) * cell) - ((o + 0.5) * cell - 0.5) for o in range(64)) / 64
    return abs(shift + sampled) / cell


def _flip_axis(rows: int, cols: int) -> int | None:
    """The axis to hash flipped in a second pass (1: left-right), or None.

    Left-right whenever the columns sample off centre: a mirror image is the commonest
    evasion, and the second pass makes it (and rotate90) exact."""
    if buffer_offset(cols) >= CENTRED_OFFSET:
        return 1
    return 0 if buffer_offset(rows) >= CENTRED_OFFSET else None


def _sampled_input(pixels: np.ndarray) -> bool:
    return pixels.ndim == 2 and pixels.dtype == np.uint8


def _dihedral_pass(pixels: np.ndarray, engine: PdqEngine) -> tuple[tuple[Hash, ...], int]:
    """The 8 variants from one filter pass (buffer turned)."""
    if engine == "pdqhash" and pixels.ndim == 3:
        import pdqhash

        variants, quality = pdqhash.compute_dihedral(pixels)
        return _pdq_hashes(variants), int(quality)
    from hashsvc import pdq_fast

    if pixels.ndim == 3:
        bits, quality = pdq_fast.pdq_dihedral_from_rgb(pixels)
    elif pixels.dtype == np.uint8:
        bits, quality = pdq_fast.pdq_dihedral_from_gray_u8(pixels)
    else:
        luma = np.ascontiguousarray(pixels, dtype=np.float32)
        bits, quality = pdq_fast.pdq_dihedral_from_luma(luma)
    return _pdq_hashes(bits), int(quality)


def phash(image: Image.Image, *, prereduce: bool = False) -> Hash:
    """64-bit pHash, bit-identical to `imagehash.phash` (hash_size 8, highfreq_factor 4).

    The 32x32 DCT is a matrix product here instead of scipy.fftpack, which imagehash
    imports on first use at ~0.7 s: the CLI must start fast. tests/test_hashing.py
    checks equality with imagehash. prereduce=True first box-reduces large images to
    >= 4x the working size, making the Lanczos resize ~10x cheaper for 0-2 bits drift.
    """
    if prereduce:
        factor = min(image.size) // 128
        if factor >= 2:
            image = image.reduce(factor)
    small = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64)
    coeffs = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    return Hash.from_bits(SignalType.PHASH, (coeffs > np.median(coeffs)).ravel())


def _dct_ii_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II (scipy.fftpack.dct type 2): 2 cos(pi k (2m + 1) / 2n)."""
    k = np.arange(n)[:, None]
    m = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * m + 1) / (2 * n))


_DCT32 = _dct_ii_matrix(32)


# --- orchestration ---------------------------------------------------------------------


def hash_media(
    data: bytes,
    signals: Collection[SignalType] = ALL_SIGNALS,
    *,
    path: HashPath = HashPath.REFERENCE,
    dihedral: bool = False,
    trim: bool = False,
    max_pixels: int = media.DEFAULT_MAX_PIXELS,
    engine: PdqEngine = "numba",
) -> MediaHashes:
    """Hash image bytes in memory. Raises MediaRejected for anything undecodable.

    Cryptographic hashes are of the original bytes. Pixels are decoded only when a
    perceptual signal is asked for; when only MD5/SHA-256 are wanted, the bytes are still
    validated as an image so the caller gets the same rejection either way.

    engine="numba" (the default) means the exact kernel on the reference path and the
    sampled one on the FAST path: both are matching-only there, and a caller that
    wants a reference hash uses the reference path, not a kernel choice.
    """
    wanted = set(signals)
    fast = path is HashPath.FAST
    decoded, engine = decode_for(data, path, engine, max_pixels=max_pixels)
    values: dict[str, Any] = {"path": path}
    if SignalType.MD5 in wanted:
        values["md5"] = md5(data)
    if SignalType.SHA256 in wanted:
        values["sha256"] = sha256(data)
    if SignalType.PDQ in wanted:
        pixels = decoded.array()
        if dihedral:
            variants, quality = pdq_dihedral(pixels, engine)
            values.update(pdq=variants[0], pdq_quality=quality, pdq_dihedral=variants)
        else:
            values["pdq"], values["pdq_quality"] = pdq(pixels, engine)
    if SignalType.PHASH in wanted:
        values["phash"] = phash(decoded.image, prereduce=fast)
    if trim and SignalType.PDQ in wanted:
        values.update(_trimmed(decoded, wanted, engine))
    return MediaHashes(**values)


def decode_for(
    data: bytes, path: HashPath, engine: PdqEngine = "numba", *, max_pixels: int
) -> tuple[media.DecodedImage, PdqEngine]:
    """The pixels a path hashes, and the PDQ kernel it hashes them with: the FAST path's
    reduced luma decode with the sampled kernel (for "numba": matching only, 0-2 bits
    from numba on the same luma), the REFERENCE path's full RGB decode with `engine`.
    `hash_media` and the matcher's rotation check both decode through here, so a match
    is confirmed on the same pixels its hash came from."""
    fast = path is HashPath.FAST
    if fast and engine == "numba":
        engine = "sampled"
    decoded = media.decode(data, max_pixels=max_pixels, mode="L" if fast else "RGB", fast=fast)
    return decoded, engine


def _trimmed(
    decoded: media.DecodedImage, wanted: set[SignalType], engine: PdqEngine = "numba"
) -> dict[str, Any]:
    """PDQ of the content inside added borders / caption bars, if there are any."""
    from hashsvc.robust import content_box

    pixels = decoded.array()
    gray = pixels if pixels.ndim == 2 else np.asarray(decoded.image.convert("L"))
    box = content_box(gray, kernel=engine != "pdqhash")
    if box is None:
        return {}
    left, top, right, bottom = box
    out: list[Hash] = []
    if SignalType.PDQ in wanted:
        out.append(pdq(np.ascontiguousarray(pixels[top:bottom, left:right]), engine)[0])
    # no pHash of the trimmed content: in bench/robustness.py it was the one path that
    # made false matches (2 in 5.1M pairs), while PDQ's trimmed hash made none
    return {"trimmed": tuple(out), "trim_box": box} if out else {}


def crop_variants(
    data: bytes, *, max_pixels: int = media.DEFAULT_MAX_PIXELS
) -> list[tuple[Hash, str]]:
    """Reference-path PDQ of each enrollment crop (see `robust.CROPS`), with its name."""
    from hashsvc.robust import crop_boxes

    decoded = media.decode(data, max_pixels=max_pixels)
    pixels = decoded.array()
    h, w = pixels.shape[:2]
    out = []
    for name, (left, top, right, bottom) in crop_boxes(w, h):
        if right - left >= 8 and bottom - top >= 8:
            out.append((pdq(np.ascontiguousarray(pixels[top:bottom, left:right]))[0], name))
    return out


def parse_signals(names: Iterable[str]) -> frozenset[SignalType]:
    """`["pdq", "md5"]` -> signal types; raises InvalidHash naming an unknown one."""
    return frozenset(SignalType.parse(n) for n in names)
