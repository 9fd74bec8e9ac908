"""Seeds, mutations, crafted bombs and the property for fuzzing the media decoder.

Shared by the hypothesis harness (test_fuzz.py) and the atheris script (fuzz_media.py),
so both fuzz the same inputs against the same property. Every seed is made at run time:
a generated image (smooth noise, a gradient) encoded by Pillow in each format
`hashsvc.media` accepts, plus Meta's benign bridge photos from the shared PDQ test data.
No image of a person is used or made.

The property (`check`): `hash_media` on the reference path and on the matching path
(fast decode + dihedral variants + border trim, what `/v1/match` runs) either returns
complete hashes or raises `MediaRejected`; any other exception is a bug, and so is an
input that takes longer than `TIME_BOUND_S` or raises the process's peak RSS by more
than `MEMORY_BOUND_MB` under the fuzzing pixel cap.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hashsvc import hashing, media
from hashsvc.errors import MediaRejected
from tests.conftest import PDQ_DATA

BRIDGE = PDQ_DATA / "bridge-mods"

#: The pixel cap while fuzzing. Well below Settings.max_pixels (50 MP) so a mutated header
#: that happens to declare a large valid canvas cannot make one input cost seconds; the
#: cost at the real cap is measured once, by `test_cost_at_the_real_cap_is_bounded`.
FUZZ_MAX_PIXELS = 4_000_000
#: Per-input bounds under FUZZ_MAX_PIXELS (the slowest mutant measured ~0.7 s of CPU and
#: ~170 MB). Time is the thread's CPU time: the box is shared, and at a load of 8 on 2
#: cores the wall time of the same input triples. The wall bound catches a hang.
TIME_BOUND_S = 2.0
WALL_BOUND_S = 20.0
MEMORY_BOUND_MB = 256.0


# --- seeds ---------------------------------------------------------------------------


def generated_image(seed: int = 7, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Upsampled noise plus a gradient: a photo-like RGB image with a high PDQ quality."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC))
    ramp = np.linspace(0, 60, size[0], dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(img * 0.8 + ramp, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: exercises media._oriented
    return exif.tobytes()


def format_seeds(img: Image.Image, tag: str) -> dict[str, bytes]:
    """`img` encoded in every format and the main modes/options of each that Pillow
    can write and media.py accepts."""
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(img.size))
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    grey = img.convert("L")
    i16 = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)
    out = {
        "jpeg": encode(img, "JPEG", quality=85),
        "jpeg-progressive-exif": encode(img, "JPEG", progressive=True, exif=_exif_rotated()),
        "jpeg-grey": encode(grey, "JPEG"),
        "jpeg-cmyk": encode(img.convert("CMYK"), "JPEG"),
        "png": encode(img, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-palette-transparency": encode(pal, "PNG", transparency=0),
        "png-16bit": encode(i16, "PNG"),
        "png-interlaced": encode(img, "PNG", interlace=True) if _png_interlace() else b"",
        "gif": encode(pal, "GIF"),
        "gif-animated": encode(
            pal, "GIF", save_all=True, append_images=[grey.convert("P")], duration=50, loop=0
        ),
        "bmp": encode(img, "BMP"),
        "bmp-palette": encode(pal, "BMP"),
        "tiff": encode(img, "TIFF"),
        "tiff-lzw": encode(img, "TIFF", compression="tiff_lzw"),
        "tiff-deflate-16bit": encode(i16, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-float": encode(Image.fromarray(np.asarray(grey, dtype=np.float32) / 255), "TIFF"),
        "webp-lossy": encode(img, "WEBP", quality=80),
        "webp-lossless-alpha": encode(rgba, "WEBP", lossless=True),
        "webp-animated": encode(img, "WEBP", save_all=True, append_images=[grey.convert("RGB")]),
    }
    if "AVIF" in media.allowed_formats():
        out["avif"] = encode(img, "AVIF", quality=60)
    return {f"{tag}-{k}": v for k, v in out.items() if v}


def _png_interlace() -> bool:
    """Pillow >= 12 writes Adam7 PNGs (older ones ignore the option)."""
    return int(Image.__version__.split(".")[0]) >= 12  # type: ignore[attr-defined]


def seeds() -> dict[str, bytes]:
    """Every seed: the generated image in each format, a small bridge photo re-encoded in
    each format, and two of the bridge JPEGs as they are on disk."""
    out = format_seeds(generated_image(), "gen")
    out["gen-tiny-1x1-png"] = encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG")
    if BRIDGE.is_dir():
        for name in ("square-128x128.jpg", "shrink-a-lot.jpg"):
            out[f"bridge-{name}"] = (BRIDGE / name).read_bytes()
        with Image.open(BRIDGE / "shrink-a-lot.jpg") as photo:
            out.update(format_seeds(photo.convert("RGB").resize((80, 50)), "bridge"))
    return out


# --- header fields -----------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset of the length field, type, data length) of each well-formed chunk."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 12 + length > len(data):
            break
        out.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return out


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC, so a mutation reaches the parser behind the checksum."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    buf = bytearray(data)
    for pos, _, length in _png_chunks(data):
        body = bytes(buf[pos + 4 : pos + 8 + length])
        buf[pos + 8 + length : pos + 12 + length] = struct.pack(">I", zlib.crc32(body))
    return bytes(buf)


def _png_dims(buf: bytearray, w: int, h: int) -> bool:
    for pos, ctype, _ in _png_chunks(bytes(buf)):
        if ctype == b"IHDR":
            buf[pos + 8 : pos + 16] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
            return True
    return False


def _jpeg_dims(buf: bytearray, w: int, h: int) -> bool:
    pos = 2
    while pos + 9 < len(buf) and buf[pos] == 0xFF:
        marker = buf[pos + 1]
        (length,) = struct.unpack(">H", buf[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            buf[pos + 5 : pos + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
            return True
        pos += 2 + length
    return False


def _gif_dims(buf: bytearray, w: int, h: int) -> bool:
    if not buf.startswith(b"GIF8") or len(buf) < 10:
        return False
    buf[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    desc = buf.find(b"\x2c", 13)
    if desc > 0 and desc + 9 <= len(buf):  # the first image descriptor, if found
        buf[desc + 5 : desc + 9] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    return True


def _bmp_dims(buf: bytearray, w: int, h: int) -> bool:
    if not buf.startswith(b"BM") or len(buf) < 26:
        return False
    buf[18:26] = struct.pack("<ii", _s32(w), _s32(h))
    return True


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _tiff_dims(buf: bytearray, w: int, h: int) -> bool:
    order = {b"II": "<", b"MM": ">"}.get(bytes(buf[:2]))
    if order is None or len(buf) < 8:
        return False
    (ifd,) = struct.unpack(order + "I", buf[4:8])
    if ifd + 2 > len(buf):
        return False
    (count,) = struct.unpack(order + "H", buf[ifd : ifd + 2])
    done = False
    for i in range(count):
        e = ifd + 2 + 12 * i
        if e + 12 > len(buf):
            break
        tag, _typ = struct.unpack(order + "HH", buf[e : e + 4])
        if tag in (256, 257):
            value = (w if tag == 256 else h) & 0xFFFFFFFF
            buf[e + 2 : e + 12] = struct.pack(order + "HII", 4, 1, value)  # LONG, count 1
            done = True
    return done


def _webp_dims(buf: bytearray, w: int, h: int) -> bool:
    if buf[:4] != b"RIFF" or buf[8:12] != b"WEBP" or len(buf) < 30:
        return False
    kind = bytes(buf[12:16])
    if kind == b"VP8X":
        buf[24:30] = ((w - 1) & 0xFFFFFF).to_bytes(3, "little") + ((h - 1) & 0xFFFFFF).to_bytes(
            3, "little"
        )
    elif kind == b"VP8 ":
        buf[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    elif kind == b"VP8L":
        (bits,) = struct.unpack("<I", buf[21:25])
        bits = (bits & ~0x0FFFFFFF) | ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)
        buf[21:25] = struct.pack("<I", bits)
    else:
        return False
    return True


def _avif_dims(buf: bytearray, w: int, h: int) -> bool:
    at = buf.find(b"ispe")
    if at < 0 or at + 16 > len(buf):
        return False
    buf[at + 8 : at + 16] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
    return True


_DIMS: tuple[Callable[[bytearray, int, int], bool], ...] = (
    _png_dims,
    _jpeg_dims,
    _gif_dims,
    _bmp_dims,
    _tiff_dims,
    _webp_dims,
    _avif_dims,
)


def with_dimensions(data: bytes, w: int, h: int) -> bytes:
    """`data` with the width/height fields of its header set to w x h (PNG IHDR with its
    CRC fixed, JPEG SOF, GIF screen and first frame, BMP, TIFF tags, WebP VP8/VP8L/VP8X,
    AVIF ispe); unchanged if no such header is found."""
    buf = bytearray(data)
    for edit in _DIMS:
        if edit(buf, w, h):
            return png_fix_crcs(bytes(buf))
    return data


# --- mutations (for the hypothesis harness; atheris has libFuzzer's own) ---------------


@dataclass(frozen=True)
class Mutation:
    """One edit. `pos` is taken modulo the length, so any drawn value is meaningful."""

    op: str
    pos: int = 0
    value: int = 0
    blob: bytes = b""

    def apply(self, data: bytes, others: list[bytes]) -> bytes:
        n = len(data)
        p = self.pos % (n + 1)
        if self.op == "flip" and n:
            b = bytearray(data)
            b[p % n] ^= 1 << (self.value % 8)
            return bytes(b)
        if self.op == "set" and n:
            b = bytearray(data)
            b[p % n] = self.value & 0xFF
            return bytes(b)
        if self.op == "truncate":
            return data[:p]
        if self.op == "insert":
            return data[:p] + self.blob + data[p:]
        if self.op == "delete":
            return data[:p] + data[p + 1 + self.value % 64 :]
        if self.op == "dims":
            return with_dimensions(data, self.value & 0xFFFFFFFF, self.pos & 0xFFFFFFFF)
        if self.op == "splice" and others:
            other = others[self.value % len(others)]
            q = (self.pos // 7) % (len(other) + 1)
            return data[:p] + other[q:]
        if self.op == "fix_crc":
            return png_fix_crcs(data)
        return data


def mutate(data: bytes, mutations: list[Mutation], others: list[bytes]) -> bytes:
    for m in mutations:
        data = m.apply(data, others)
    return data


# --- crafted bombs ------------------------------------------------------------------


def _png(w: int, h: int, idat: bytes, extra: list[tuple[bytes, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """A greyscale 8-bit PNG from raw chunks (the IDAT is given compressed)."""

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + ctype
            + body
            + struct.pack(">I", zlib.crc32(ctype + body))
        )

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    mid = b"".join(chunk(t, b) for t, b in extra)
    return b"\x89PNG\r\n\x1a\n" + head + mid + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _zeros_deflated(n: int) -> bytes:
    """zlib of n zero bytes (~1000:1). Large streams repeat one fully flushed 1 MB block
    (byte-aligned, no back-references across it), so building a 256 MB bomb takes 0.1 s
    and never holds the 256 MB."""
    mib = 1 << 20
    if n < 4 * mib:
        return zlib.compress(bytes(n), 9)
    piece = bytes(mib)
    z = zlib.compressobj(9)
    head = z.compress(piece) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(piece) + z.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(n // mib):
        adler = zlib.adler32(piece, adler)
    # zlib header, n/1MB identical blocks, an empty final block, the Adler-32 trailer
    return head[:2] + block * (n // mib) + b"\x03\x00" + adler.to_bytes(4, "big")


def bombs(max_pixels: int) -> dict[str, bytes]:
    """Small files that declare more than `max_pixels` pixels (decompression bombs), or
    whose compressed data inflates far beyond what their header needs."""
    small = generated_image(size=(8, 8))
    side = int(max_pixels**0.5) + 1  # just over the cap
    over = {
        "png-100000x100000": with_dimensions(encode(small, "PNG"), 100_000, 100_000),
        "png-just-over-cap": _png(side, side, _zeros_deflated(side + 1)),
        "jpeg-65500x65500": with_dimensions(encode(small, "JPEG"), 65_500, 65_500),
        "gif-65535x65535": with_dimensions(encode(small.convert("P"), "GIF"), 65_535, 65_535),
        "bmp-2^31": with_dimensions(encode(small, "BMP"), 2**31 - 1, 2**31 - 1),
        "bmp-negative-height": with_dimensions(encode(small, "BMP"), 60_000, -60_000),
        "tiff-2^32": with_dimensions(encode(small, "TIFF"), 2**32 - 1, 2**32 - 1),
        "tiff-lzw-40000x40000": with_dimensions(
            encode(small, "TIFF", compression="tiff_lzw"), 40_000, 40_000
        ),
        "webp-vp8x-16Mx16M": with_dimensions(
            encode(small.convert("RGBA"), "WEBP", lossless=True, exif=_exif_rotated()),
            2**24,
            2**24,
        ),
        "webp-vp8l-16384x16384": with_dimensions(
            encode(small, "WEBP", lossless=True), 16_384, 16_384
        ),
        "webp-vp8-16383x16383": with_dimensions(encode(small, "WEBP"), 16_383, 16_383),
    }
    if "AVIF" in media.allowed_formats():
        over["avif-ispe-65536x65536"] = with_dimensions(encode(small, "AVIF"), 65_536, 65_536)
    # within the cap, but the compressed streams inflate to 256 MB
    inflating = {
        "png-idat-inflates-256MB": _png(64, 64, _zeros_deflated(256 << 20)),
        "png-ztxt-inflates-256MB": _png(
            8, 8, _zeros_deflated(8 * 9), [(b"zTXt", b"k\0\0" + _zeros_deflated(256 << 20))]
        ),
        "png-iccp-inflates-256MB": _png(
            8, 8, _zeros_deflated(8 * 9), [(b"iCCP", b"p\0\0" + _zeros_deflated(256 << 20))]
        ),
    }
    return {**{f"over-cap-{k}": v for k, v in over.items()}, **inflating}


# --- the property -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one input did: 'hashed' or 'rejected', its CPU and wall time, the peak RSS
    rise, and the rejection's reason."""

    result: str
    cpu_s: float
    wall_s: float
    peak_mb: float
    reason: str = ""


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


PEAK_RSS_RESETTABLE = _reset_peak_rss()


def hash_both_paths(data: bytes, max_pixels: int) -> str:
    """The code under test: both decode paths, as the CLI/enrollment and /v1/match run
    them. Returns 'hashed' or the rejection's text; lets any other exception escape."""
    outcomes = []
    for path, extra in ((hashing.HashPath.REFERENCE, False), (hashing.HashPath.FAST, True)):
        try:
            h = hashing.hash_media(
                data, path=path, dihedral=extra, trim=extra, max_pixels=max_pixels
            )
        except MediaRejected as e:
            assert str(e), "a rejection must say why"
            outcomes.append(str(e))
            continue
        assert h.pdq is not None and len(h.pdq.hex) == 64, h
        assert h.phash is not None and len(h.phash.hex) == 16, h
        assert h.md5 is not None and h.sha256 is not None, h
        assert h.pdq_quality is not None and 0 <= h.pdq_quality <= 100, h
        assert len(h.pdq_dihedral) == (8 if extra else 0), h
        outcomes.append("hashed")
    # the fast path may accept what the full decode refuses (it reads only the luma
    # plane, maybe at 1/8 scale); either way, each path ends in hashes or a rejection
    return outcomes[0]


def check(data: bytes, max_pixels: int = FUZZ_MAX_PIXELS) -> Outcome:
    """Run the property on one input and measure it. Raises whatever escapes.

    Warnings are ignored, as in production: pytest's filterwarnings=error would turn
    Pillow's "Tag data larger than file" into an exception that `decode` rejects, and
    so fuzz a path the service never takes (the file is decoded with the tag skipped)."""
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    wall, cpu = time.perf_counter(), time.thread_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = hash_both_paths(data, max_pixels)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    peak_mb = max(0, _status_kb("VmHWM") - before) / 1024 if PEAK_RSS_RESETTABLE else 0.0
    if text == "hashed":
        return Outcome("hashed", cpu, wall, peak_mb)
    return Outcome("rejected", cpu, wall, peak_mb, text)
