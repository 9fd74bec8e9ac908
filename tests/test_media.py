from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import psutil
import pytest
from PIL import Image

from hashsvc import media
from hashsvc.errors import MediaRejected
from tests.conftest import encode, smooth_image


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height zeros: ~100 KB on disk, 900 MP decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def test_decodes_a_jpeg_to_rgb() -> None:
    d = media.decode(encode(smooth_image(1)))
    assert d.format == "JPEG" and d.image.mode == "RGB" and d.size == (320, 240)
    assert d.array().shape == (240, 320, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "EPS"),
        (b"\xc5\xd0\xd3\xc6" + bytes(40), "EPS"),
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (b"8BPS\x00\x01" + bytes(40), "PSD"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"GIF89a", "corrupt|not an image"),
    ],
)
def test_bad_inputs_are_rejected_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MediaRejected, match=reason):
        media.decode(data)


def test_truncated_jpeg_is_rejected_not_grey_filled() -> None:
    data = encode(smooth_image(2, (640, 480)), quality=95)
    with pytest.raises(MediaRejected, match="truncated"):
        media.decode(data[: len(data) // 2])


def test_truncated_png_is_rejected() -> None:
    data = encode(smooth_image(3, (640, 480)), "PNG")
    with pytest.raises(MediaRejected, match="truncated|corrupt"):
        media.decode(data[: len(data) * 2 // 3])


def test_png_bomb_is_rejected_from_the_header_cheaply() -> None:
    bomb = _png_bomb(30_000, 30_000)
    assert len(bomb) < 2_000_000
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    with pytest.raises(MediaRejected, match=r"too many pixels: 30000x30000 = 900\.0 MP"):
        media.decode(bomb)
    assert time.perf_counter() - t0 < 1.0
    assert proc.memory_info().rss - rss0 < 50_000_000


def test_pixel_cap_is_configurable() -> None:
    data = encode(smooth_image(4, (200, 100)), "PNG")
    assert media.decode(data, max_pixels=20_000).size == (200, 100)
    with pytest.raises(MediaRejected, match="too many pixels"):
        media.decode(data, max_pixels=19_999)


def test_animated_gif_with_hundreds_of_frames_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (64, 48), (i % 256, 255 - i % 256, 0)) for i in range(400)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=10)
    t0 = time.perf_counter()
    d = media.decode(buf.getvalue())
    assert time.perf_counter() - t0 < 1.0
    assert d.image.mode == "RGB"
    assert tuple(d.array()[10, 10]) == pytest.approx((0, 255, 0), abs=8)


def test_exif_orientation_is_applied() -> None:
    img = smooth_image(5, (300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    d = media.decode(encode(img, exif=exif.tobytes()))
    assert d.size == (200, 300)
    expected = np.asarray(img.transpose(Image.Transpose.ROTATE_270), dtype=np.int16)
    assert np.abs(d.array().astype(np.int16) - expected).mean() < 4


def _close_to(img: Image.Image, reference: np.ndarray, tol: float) -> None:
    arr = media.decode(encode(img, "PNG" if img.mode != "CMYK" else "TIFF")).array()
    assert arr.shape == reference.shape
    assert np.abs(arr.astype(np.int16) - reference.astype(np.int16)).mean() < tol


def test_modes_are_normalised_to_rgb() -> None:
    rgb = smooth_image(6)
    ref = np.asarray(rgb)
    gray = np.asarray(rgb.convert("L"))
    gray_rgb = np.repeat(gray[..., None], 3, axis=2)
    _close_to(rgb.convert("CMYK"), ref, 2)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    _close_to(pal, np.asarray(pal.convert("RGB")), 0.01)
    _close_to(rgb.convert("RGBA"), ref, 0.5)
    _close_to(rgb.convert("LA"), gray_rgb, 0.5)
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit grayscale PNG
    _close_to(sixteen, gray_rgb, 1)
    float_img = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    arr = media.decode(encode(float_img, "TIFF")).array()
    assert np.abs(arr.astype(np.int16) - gray_rgb).mean() < 1


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    arr = media.decode(encode(rgba, "PNG")).array()
    assert (arr == 255).all()


def test_luma_mode_decodes_the_y_plane() -> None:
    img = smooth_image(7, (640, 480))
    d = media.decode(encode(img, quality=95), mode="L")
    assert d.image.mode == "L" and d.array().shape == (480, 640)
    ref = np.asarray(img.convert("L"), dtype=np.int16)
    assert np.abs(d.array().astype(np.int16) - ref).mean() < 2


def test_fast_path_reduces_only_large_jpegs() -> None:
    small = encode(smooth_image(8, (1024, 768)))
    assert media.decode(small, mode="L", fast=True).scale == 1
    big = encode(smooth_image(8, (3264, 2448)))
    d = media.decode(big, mode="L", fast=True)
    assert d.scale == 2 and d.size == (1632, 1224)
    assert media.decode(big, mode="L", fast=False).scale == 1


def test_path_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MediaRejected, match="no such file"):
        media.decode_path(tmp_path / "missing.jpg")
    with pytest.raises(MediaRejected, match="is a directory"):
        media.decode_path(tmp_path)
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"")
    with pytest.raises(MediaRejected, match=r"x\.jpg: empty file"):
        media.decode_path(bad)
