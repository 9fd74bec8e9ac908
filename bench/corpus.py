"""Benign photo corpus for the benchmarks: reproducible, and never anything but benign.

Sources, in this order (whatever is installed is used; the list printed by each
benchmark says what was):
- Meta's PDQ test photos in ../shared/testdata/pdq (bridge, desk, street scenes);
- scikit-image's bundled sample photos of objects and scenes (no people);
- Debian's wallpaper packages (`make bench-data` installs mate-backgrounds,
  ukui-wallpapers and plasma-workspace-wallpapers): /usr/share/backgrounds and
  /usr/share/wallpapers.

Large photos are cut into non-overlapping tiles so that one wallpaper gives several
distinct images. Everything is deterministic given the installed files.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata" / "pdq"
WALLPAPER_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
SKIMAGE_PHOTOS = ("coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "gravel.png", "brick.png", "grass.png",
                  "color.png", "horse.png")  # fmt: skip
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@cache
def source_paths() -> tuple[Path, ...]:
    """Every source photo, deduplicated by content size+name, sorted for stability."""
    paths: list[Path] = []
    if TESTDATA.is_dir():
        paths += sorted((TESTDATA / "reg-test-input" / "exif-rotn").glob("*.jpg"))
        paths += [TESTDATA / "bridge-mods" / "aaa-orig.jpg",
                  TESTDATA / "reg-test-input" / "pen-and-coaster.png"]  # fmt: skip
        paths += sorted((TESTDATA / "reg-test-input" / "labelme-subset").glob("*.jpg"))
    try:
        import skimage.data

        base = Path(skimage.data.__file__).parent
        paths += [base / name for name in SKIMAGE_PHOTOS if (base / name).exists()]
    except ImportError:
        pass
    for d in WALLPAPER_DIRS:
        if d.is_dir():
            paths += sorted(p for p in d.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    # plasma ships each wallpaper in several resolutions (and a dark variant): keep one
    by_name: dict[str, Path] = {}
    rest: list[Path] = []
    for p in paths:
        if p.parent.name.startswith("images") and p.parent.parent.name == "contents":
            name = p.parent.parent.parent.name
            if name not in by_name or p.stat().st_size > by_name[name].stat().st_size:
                by_name[name] = p
        else:
            rest.append(p)
    return _distinct_pictures(rest + sorted(by_name.values()))


def _distinct_pictures(paths: list[Path]) -> tuple[Path, ...]:
    """Drop a source whose whole picture hashes within 40 PDQ bits of one kept before
    (the same wallpaper at another resolution, e.g. Elephants_3840x2160.jpg)."""
    kept: list[Path] = []
    codes: list[np.ndarray] = []
    for p in paths:
        img = load_rgb(p)
        img.thumbnail((512, 512))
        bits, _ = pdqhash.compute(np.asarray(img))
        if all(int((bits != c).sum()) > 40 for c in codes):
            kept.append(p)
            codes.append(bits)
    return tuple(kept)


def load_rgb(path: Path) -> Image.Image:
    img = Image.open(path)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA", "PA", "P"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def tiles(
    size: tuple[int, int],
    limit: int | None = None,
    max_side: int | None = None,
    *,
    skip_mirror_twins: bool = False,
    mirrored: list[str] | None = None,
) -> Iterator[Image.Image]:
    """Non-overlapping `size` tiles cut from every source; small sources are resized
    to fit one tile (keeping them distinct images). `max_side` first shrinks large
    sources so that a tile shows a scene, not a patch of wall or sky.

    `skip_mirror_twins`: drop tiles that are a rotated/flipped copy of another tile of
    the same source: in a source that is its own mirror image (`mirror_axes`) keep only
    the tiles on one side of the axis, and drop a tile whose exactly rotated or flipped
    pixels hash within PDQ 31 of a tile kept before (a pattern with point symmetry, e.g.
    diagonal stripes). Why: such a pair is one picture, rotated or flipped, which is
    exactly the edit dihedral matching exists to catch; counting it as "unrelated"
    makes a correct match look like a false one (bench/robustness.py). The names of the
    sources where either happened are appended to `mirrored`."""
    tw, th = size
    count = 0
    for path in source_paths():
        img = load_rgb(path)
        if max_side is not None and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        w, h = img.size
        if w < tw or h < th:
            scale = max(tw / w, th / h)
            img = img.resize((max(tw, round(w * scale)), max(th, round(h * scale))),
                             Image.Resampling.LANCZOS)  # fmt: skip
            w, h = img.size
        axis_x, axis_y = mirror_axes(img) if skip_mirror_twins else (None, None)
        twins = (axis_x, axis_y) != (None, None)
        kept: list[np.ndarray] = []  # reference PDQ of this source's tiles so far
        for y in range(0, h - th + 1, th):
            for x in range(0, w - tw + 1, tw):
                if _has_twin(x + tw / 2, axis_x) or _has_twin(y + th / 2, axis_y):
                    continue
                tile = img.crop((x, y, x + tw, y + th))
                if skip_mirror_twins:
                    if _turned_copy(tile, kept):
                        twins = True
                        continue
                    kept.append(pdqhash.compute(np.asarray(tile))[0])
                yield tile
                count += 1
                if limit is not None and count >= limit:
                    return
        if mirrored is not None and twins:
            mirrored.append(path.name)


_TURNS = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
          Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
          Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)  # fmt: skip


def _turned_copy(tile: Image.Image, kept: list[np.ndarray]) -> bool:
    """Whether a rotation/flip of `tile` (exact pixels, Meta's PDQ) is within 31 bits of
    one of the `kept` hashes."""
    for turn in _TURNS:
        bits, _ = pdqhash.compute(np.asarray(tile.transpose(turn)))
        if any(int((bits != k).sum()) <= 31 for k in kept):
            return True
    return False


#: A picture is its own mirror image when the normalised cross-correlation of its
#: high-passed thumbnail with the mirrored thumbnail reaches this (over >= half its
#: width/height). Measured on the corpus: the mirror-symmetric wallpapers score
#: 0.90-1.00; the next source 0.85 (a screenshot), the rest <= 0.77.
MIRROR_NCC = 0.9


def mirror_axes(img: Image.Image, width: int = 256) -> tuple[float | None, float | None]:
    """The vertical and horizontal mirror axes of `img` in pixels (None: not mirrored)."""
    from PIL import ImageFilter

    gray = img.convert("L")
    small = gray.resize((width, max(8, round(gray.height * width / gray.width))),
                        Image.Resampling.BOX)  # fmt: skip
    a = np.asarray(small, np.float32)
    detail = a - np.asarray(small.filter(ImageFilter.BoxBlur(4)), np.float32)
    out: list[float | None] = []
    for plane, full in ((detail, img.width), (detail.T, img.height)):
        n = plane.shape[1]
        best, shift = -1.0, 0
        for s in range(-n // 2, n // 2 + 1):  # plane[:, s + k] ~ mirrored[:, k]
            x = plane[:, max(s, 0) : n + min(s, 0)]
            y = plane[:, ::-1][:, max(-s, 0) : n + min(-s, 0)]
            x, y = x - x.mean(), y - y.mean()
            norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
            c = float((x * y).sum()) / norm if norm > 0 else 0.0
            if c > best:
                best, shift = c, s
        # column j mirrors column n - 1 + shift - j: the axis is their midpoint
        out.append((n - 1 + shift) / 2 * full / n if best >= MIRROR_NCC else None)
    return out[0], out[1]


def _has_twin(centre: float, axis: float | None) -> bool:
    """A tile centred past the mirror axis whose mirrored centre still lies in the
    picture: its twin on the other side is (or overlaps) a tile already kept."""
    return axis is not None and centre > axis and 2 * axis - centre >= 0


def large_photos(size: tuple[int, int] = (3264, 2448)) -> Iterator[Image.Image]:
    """One ~8 MP image per source at least 0.75x that size: a centred crop to the
    aspect ratio, resized (mostly down) to `size`."""
    tw, th = size
    for path in source_paths():
        with Image.open(path) as probe:
            w, h = probe.size
        if min(w, h) < 0.75 * th or max(w, h) < 0.75 * tw:
            continue
        img = load_rgb(path)
        yield ImageOps.fit(img, size, Image.Resampling.LANCZOS)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def describe() -> str:
    """One line naming what the corpus was built from (for RESULTS.md)."""
    groups: dict[str, int] = {}
    for p in source_paths():
        s = str(p)
        key = (
            "shared/testdata"
            if "testdata" in s
            else "scikit-image"
            if "skimage" in s
            else "/usr/share/backgrounds"
            if "backgrounds" in s
            else "/usr/share/wallpapers"
        )
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in groups.items())
