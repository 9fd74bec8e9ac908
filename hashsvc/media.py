"""Safe decoding: bytes or a path in, a decoded image out, or one `MediaRejected`.

This module owns every decision about untrusted image files:

- **Format allow-list.** Pillow is only ever asked to try the raster formats we list
  (`Image.open(..., formats=...)`), so EPS/PDF/PSD never reach a plugin that could hand
  them to Ghostscript or another external program; they are named and rejected.
- **Pixel cap from the header.** Width x height is checked right after the header is
  parsed, before any pixel is decoded, so a decompression bomb costs microseconds.
- **No grey-filling of truncated files.** `ImageFile.LOAD_TRUNCATED_IMAGES` stays off and
  any decoder failure becomes `MediaRejected` with the reason.
- **Normalisation.** EXIF orientation applied; palette, CMYK, 16-bit, 32-bit and float
  pixels mapped to 8-bit RGB; alpha composited on a fixed white background so a
  transparent copy hashes like the opaque original; animations give their first frame.
- **Reduced-size JPEG decode** (`draft`) for the matching path only, and only when the
  image is large enough that the PDQ drift stays inside the budget measured in
  bench/hashing.py. Hashes that leave the service use the full decode.

Nothing here writes to disk: bytes are wrapped in `BytesIO`.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from hashsvc.errors import MediaRejected

# Never fill a truncated image with grey: a half-decoded file must not produce a hash.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own cap (checked from the header in `decode`) replaces Pillow's global bomb check,
# so the limit is configurable and the rejection names the size.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 50_000_000

#: Alpha is composited on this colour; any fixed colour works, white is what viewers show.
BACKGROUND = (255, 255, 255)

#: Fast path: decode JPEGs at 1/2, 1/4 or 1/8 only while the short side stays at least
#: this long. Measured in bench/hashing.py: above it the PDQ drift of the reduced decode
#: stays within the budget (median <= 2, p99 <= 8 bits); below it we decode in full.
FAST_MIN_SIDE = 1200

Mode = Literal["RGB", "L"]


def allowed_formats() -> tuple[str, ...]:
    """Raster formats we decode. AVIF/HEIF only where a maintained plugin is present."""
    fmts = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
    if features.check("avif"):
        fmts.append("AVIF")
    try:  # optional dependency: pillow-heif registers the HEIF opener
        import pillow_heif

        pillow_heif.register_heif_opener()
        fmts.append("HEIF")
    except ImportError:
        pass
    return tuple(fmts)


_ALLOWED = allowed_formats()

# Recognised but refused: formats that need external programs or are documents.
_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "EPS/PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
)


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus what a caller needs to know about how they were obtained.

    `scale` is the JPEG DCT reduction used (1 = full resolution); `size` is the size of
    `image` after orientation, `original_size` the size the file declares.
    """

    image: Image.Image
    format: str
    original_size: tuple[int, int]
    scale: int = 1

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def array(self) -> np.ndarray:
        """Contiguous read-only uint8 array: (H, W, 3) for RGB, (H, W) for L.

        Made once and kept: Pillow copies the whole image for every `np.asarray`
        (~0.3 ms at 1024x768), and the matching path asks for it more than once (PDQ,
        then the border check)."""
        cached: np.ndarray | None = self.__dict__.get("_array")
        if cached is None:
            cached = np.ascontiguousarray(np.asarray(self.image, dtype=np.uint8))
            cached.flags.writeable = False
            self.__dict__["_array"] = cached  # frozen dataclass: not through __setattr__
        return cached


def read_bytes(source: bytes | bytearray | memoryview | str | Path) -> bytes:
    """Bytes from a path or pass-through; unreadable paths become MediaRejected."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        # a FIFO or a device would block or never end: only regular files are read
        mode = os.stat(source).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise MediaRejected(f"{source}: not a regular file (fifo, socket or device)")
        return Path(source).read_bytes()
    except IsADirectoryError:
        raise MediaRejected(f"{source}: is a directory") from None
    except FileNotFoundError:
        raise MediaRejected(f"{source}: no such file") from None
    except PermissionError:
        raise MediaRejected(f"{source}: permission denied") from None
    except OSError as e:
        raise MediaRejected(f"{source}: cannot read ({e.strerror or e})") from None


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: Mode = "RGB",
    fast: bool = False,
) -> DecodedImage:
    """Decode untrusted image bytes safely.

    mode="RGB" gives 8-bit RGB; mode="L" gives the luma plane (for JPEG, the Y channel
    straight from the decoder, skipping chroma). fast=True allows a reduced-size JPEG
    decode on large images (see FAST_MIN_SIDE); never use it for hashes that leave the
    service.
    """
    if not data:
        raise MediaRejected("empty file (0 bytes)")
    head = data[:16].lstrip()
    for magic, name in _REFUSED_MAGIC:
        if head.startswith(magic):
            raise MediaRejected(f"unsupported format: {name} is not accepted")
    try:
        img = Image.open(io.BytesIO(data), formats=_ALLOWED)
    except Image.UnidentifiedImageError:
        raise MediaRejected(
            "not an image, or an unsupported format (accepted: " + ", ".join(_ALLOWED) + ")"
        ) from None
    except Exception as e:  # any header parser failure is the file's fault
        raise MediaRejected(f"corrupt image header: {_reason(e)}") from None

    fmt = img.format or "unknown"
    w, h = img.size
    if w <= 0 or h <= 0:
        raise MediaRejected(f"invalid image dimensions {w}x{h}")
    if w * h > max_pixels:
        raise MediaRejected(
            f"too many pixels: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the limit of "
            f"{max_pixels / 1e6:.1f} MP"
        )

    scale = 1
    try:
        if fmt == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
            scale = _jpeg_scale(w, h) if fast else 1
            # draft("L") makes libjpeg emit the Y plane directly; scale via the DCT.
            img.draft(mode, (-(-w // scale), -(-h // scale)))
            scale = max(1, round(w / img.size[0]))
        img.load()
        out = _normalise(_oriented(img), mode)
    except MediaRejected:
        raise
    except Exception as e:
        raise MediaRejected(f"truncated or corrupt image data: {_reason(e)}") from None
    return DecodedImage(image=out, format=fmt, original_size=(w, h), scale=scale)


def decode_path(path: str | Path, **kwargs: object) -> DecodedImage:
    """`decode(read_bytes(path))`, with the path named in any rejection."""
    data = read_bytes(path)
    try:
        return decode(data, **kwargs)  # type: ignore[arg-type]
    except MediaRejected as e:
        raise MediaRejected(f"{path}: {e}") from None


def _jpeg_scale(w: int, h: int) -> int:
    """Largest DCT reduction (1, 2, 4, 8) keeping the short side >= FAST_MIN_SIDE."""
    short = min(w, h)
    scale = 1
    while scale < 8 and short // (scale * 2) >= FAST_MIN_SIDE:
        scale *= 2
    return scale


def _oriented(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a malformed EXIF block is ignored, not fatal."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img) or img


def _normalise(img: Image.Image, mode: Mode) -> Image.Image:
    """Map any decoded mode to 8-bit RGB (or L)."""
    m = img.mode
    if m == mode:
        return img
    if m in ("RGBA", "LA", "PA", "RGBa", "La") or (m == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif m.startswith("I;16") or m in ("I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img)), "L")
    elif m == "1":
        img = img.convert("L")
    elif m not in ("RGB", "L"):
        img = img.convert("RGB")  # P, CMYK, YCbCr, HSV (Pillow's own converters)
    return img if img.mode == mode else img.convert(mode)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """High-bit-depth or float samples to 0..255, keeping relative brightness.

    16-bit containers are scaled by their nominal range; floats in [0, 1] are treated as
    normalised, other floats as 0..255 already; 32-bit ints that exceed 255 are assumed
    to carry 16-bit data (what PNG/TIFF decoders put there).
    """
    a = arr.astype(np.float64)
    if arr.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        hi = float(finite.max()) if finite.size else 0.0
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if hi <= 1.0:
            a = a * 255.0
    elif arr.dtype.itemsize == 2 or (a.size and a.max() > 255):
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text[:200]
