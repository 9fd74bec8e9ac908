"""Edit-robust matching: borders/caption bars trimmed at query time, crops at enrollment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from hashsvc import robust
from hashsvc.config import Settings
from hashsvc.enrollment import enroll
from hashsvc.hashing import HashPath, hash_media
from hashsvc.matcher import Matcher
from hashsvc.robust import content_box, crop_boxes
from hashsvc.robust_edges import pure_line
from hashsvc.store import Store
from tests.conftest import PDQ_DATA, encode


def photo() -> Image.Image:
    return Image.open(PDQ_DATA / "bridge-mods" / "aaa-orig.jpg").convert("RGB").resize((800, 502))


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255), (200, 30, 90)])
def test_padding_of_any_colour_is_found(fill: tuple[int, int, int]) -> None:
    img = photo()
    padded = ImageOps.expand(img, border=(40, 25, 40, 25), fill=fill)
    box = content_box(np.asarray(padded.convert("L")))
    assert box is not None
    left, top, right, bottom = box
    assert abs(left - 40) <= 4 and abs(top - 25) <= 4
    assert abs(right - 840) <= 4 and abs(bottom - 527) <= 4


def test_a_caption_bar_with_text_is_found() -> None:
    img = photo()
    canvas = Image.new("RGB", (800, 502 + 70), (255, 255, 255))
    canvas.paste(img, (0, 70))
    ImageDraw.Draw(canvas).text((20, 25), "SHARE THIS IF YOU AGREE " * 3, fill=(0, 0, 0))
    box = content_box(np.asarray(canvas.convert("L")))
    assert box is not None and abs(box[1] - 70) <= 4 and box[3] == 572


def test_a_caption_bar_with_dense_text_is_found() -> None:
    """Bold text across the whole width: in its rows only ~40-55% of the pixels are the
    bar's colour (a 320 px wide copy with a one-line caption looked like this and was not
    trimmed: bench/robustness.py --tile 320x240 found 0.8% of caption-bar copies)."""
    img = photo().resize((320, 200))
    canvas = Image.new("RGB", (320, 200 + 40), (255, 255, 255))
    canvas.paste(img, (0, 40))
    draw = ImageDraw.Draw(canvas)
    for dx in (0, 1):  # a bold face: every stroke two pixels wide
        draw.text((4 + dx, 14), "when you see it... share before it's deleted", fill=(0, 0, 0))
    gray = np.asarray(canvas.convert("L"))
    text_rows = (np.abs(gray[14:26].astype(int) - 255) <= 12).mean(axis=1)
    assert text_rows.min() < 0.6  # denser than the caption test above
    box = content_box(gray)
    assert box is not None and abs(box[1] - 40) <= 4 and box[3] == 240


def test_only_flat_borders_are_trimmed_from_real_photos() -> None:
    """Some labelme frames carry real grey padding (q0291 left/bottom, q1050 right):
    whatever is trimmed must be flat; photos without padding are left whole."""
    trimmed = 0
    for p in sorted((PDQ_DATA / "reg-test-input" / "labelme-subset").glob("*.jpg")):
        gray = np.asarray(Image.open(p).convert("L"))
        box = content_box(gray)
        if box is None:
            continue
        trimmed += 1
        left, top, right, bottom = box
        for strip in (gray[:, :left], gray[:, right:], gray[:top, :], gray[bottom:, :]):
            if strip.size:  # one colour, but for the odd pixel where the padding ends
                assert (np.abs(strip.astype(int) - np.median(strip)) <= 12).mean() > 0.97, p.name
    assert trimmed == 2
    assert content_box(np.asarray(photo().convert("L"))) is None


def test_the_edge_check_kernel_agrees_with_numpy_median() -> None:
    """`pure_line` (the fast reject of bar-free uploads) against the test it replaces:
    np.median and a tolerance count, on lines near the tolerance and purity edges, of
    odd and even lengths (where the median is the mean of two values)."""
    rng = np.random.default_rng(7)
    for _ in range(5000):
        n = int(rng.integers(1, 300))
        base = int(rng.integers(0, 256))
        noisy = rng.random(n) < rng.random() * 0.1
        spread = int(rng.integers(8, 30))
        line = base + rng.integers(-spread, spread + 1, n) * noisy
        line = np.clip(line, 0, 255).astype(np.uint8)
        colour = np.median(line)
        expected = (np.abs(line.astype(np.int16) - colour) <= robust.TOLERANCE).mean()
        assert pure_line(line, robust.TOLERANCE, robust.PURE_SHARE) == (
            expected >= robust.PURE_SHARE
        ), (n, base)


@pytest.mark.parametrize("seed", range(40))
def test_content_box_skipping_impure_edges_changes_nothing(seed: int) -> None:
    """The fast reject may only skip sides whose `_bar_run` is 0: compare with every
    side measured in full, on generated images with and without bars."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 400)), int(rng.integers(40, 400))
    gray = rng.integers(0, 256, (h, w)).astype(np.uint8)
    for side in range(4):
        if rng.random() < 0.5:
            k = int(rng.integers(1, max(2, min(h, w) // 3)))
            fill = int(rng.integers(0, 256))
            region = [gray[:k], gray[-k:], gray[:, :k], gray[:, -k:]][side]
            region[...] = fill
            region[rng.random(region.shape) < 0.01] = 0  # a pixel or two of noise
    step = max(1, max(h, w) // 256)
    small = gray[::step, ::step]
    full = [robust._bar_run(lines) for lines in (small, small[::-1], small.T, small.T[::-1])]
    assert all(p or run == 0 for p, run in zip(robust._pure_edges(small), full, strict=True))


def _barred_lines(rng: np.random.Generator) -> np.ndarray:
    """Lines (rows) from an edge inwards: a bar of pure lines, then lines of any share of
    the bar's colour (caption text, a band of dense text, a photo that shares the colour),
    to walk every branch of `_bar_run`: the run's end, the text band, the pure line after."""
    n, w = int(rng.integers(2, 120)), int(rng.integers(1, 200))
    colour = int(rng.integers(0, 256))
    lines = rng.integers(0, 256, (n, w))
    for i in range(n):
        share = rng.choice([1.0, 0.99, 0.97, 0.7, 0.6, 0.5, 0.4, 0.3, rng.random()])
        if i == 0 and rng.random() < 0.8:
            share = 1.0  # most cases start with a bar
        keep = rng.random(w) < share
        near = colour + rng.integers(-12, 13, w)
        beyond = rng.random(w) < 0.02  # a few just past the tolerance
        near[beyond] = colour + rng.choice([-14, -13, 13, 14], int(beyond.sum()))
        lines[i] = np.where(keep, near, lines[i])
    return np.clip(lines, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_the_bar_run_kernel_agrees_with_numpy(seed: int) -> None:
    """`robust_edges.bar_run` (content_box's measurement of a side with a pure edge)
    against `_bar_run`, the numpy oracle: generated lines through every branch, the four
    sides of the labelme photos, and strided views (content_box passes transposed and
    reversed slices)."""
    rng = np.random.default_rng(seed)
    cases = [_barred_lines(rng) for _ in range(600)]
    photos = sorted((PDQ_DATA / "reg-test-input" / "labelme-subset").glob("*.jpg"))
    for p in photos[seed::8]:
        small = np.asarray(Image.open(p).convert("L"))[::2, ::2]
        cases += [small, small[::-1], small.T, small.T[::-1]]
    nonzero = 0
    for lines in cases:
        expected = robust._bar_run(lines)
        assert robust._kernel_bar_run(lines) == expected
        nonzero += expected > 0
    assert nonzero > 50  # the generated bars are measured, not all rejected at once


def test_content_box_is_the_same_without_the_kernel() -> None:
    """`kernel=False` (callers that must not load numba) measures every side in numpy:
    the same boxes, bars or none, as the kernel's fast reject."""
    img = photo()
    cases = [img, ImageOps.expand(img, border=(40, 25, 40, 25), fill=(200, 30, 90))]
    for p in sorted((PDQ_DATA / "reg-test-input" / "labelme-subset").glob("*.jpg"))[:30]:
        cases.append(Image.open(p))
    boxes = 0
    for case in cases:
        gray = np.asarray(case.convert("L"))
        box = content_box(gray)
        assert box == content_box(gray, kernel=False)
        boxes += box is not None
    assert 0 < boxes < len(cases)


def test_crop_boxes_stay_inside_the_image() -> None:
    for name, (left, top, right, bottom) in crop_boxes(1000, 600):
        assert 0 <= left < right <= 1000 and 0 <= top < bottom <= 600, name
        assert (right - left) >= 840 and (bottom - top) >= 500
        assert abs((left + right) / 2 - 500) <= 1 and abs((top + bottom) / 2 - 300) <= 1  # centred


def _matcher(tmp_path: Path, options: dict[str, bool] | None = None) -> Matcher:
    settings = Settings(data_dir=tmp_path)
    with Store.open(settings.db_path) as store:
        store.create_list("bank", "block", options=options)
        enroll(store, "bank", [("bridge", encode(photo(), quality=95))])
    return Matcher.open(settings)


def test_padded_and_cropped_copies_match_and_switches_turn_it_off(tmp_path: Path) -> None:
    img = photo()
    padded = encode(ImageOps.expand(img, border=(0, 120, 0, 120), fill=(0, 0, 0)))
    w, h = img.size
    cropped = encode(img.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))))
    m = _matcher(tmp_path / "on")
    try:
        assert hash_media(padded, path=HashPath.FAST).trimmed == ()  # only when asked
        r = m.match_media(padded)
        assert r.verdict == "block"
        assert {x.variant for x in r.matches} == {"trimmed"}
        assert [h.signal.value for h in m.hash_upload(padded).trimmed] == ["pdq"]
        r = m.match_media(cropped)
        assert r.verdict == "block" and any("crop" in str(x.variant) for x in r.matches)
    finally:
        m.close()
    off = _matcher(tmp_path / "off", {"crops": False, "trim_borders": False})
    try:
        assert off.match_media(padded).verdict == "allow"
        assert off.match_media(cropped).verdict == "allow"
        assert off.match_media(encode(img, quality=80)).verdict == "block"
    finally:
        off.close()
