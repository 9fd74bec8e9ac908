"""Edit-robust matching: find added borders/caption bars (query side) and cut the crops
that enrollment also indexes (list side). Pure functions on pixel arrays.

Why: PDQ and pHash are global hashes, so padding an image, adding a caption bar or
cropping a few percent moves most bits; these are the cheapest evasions there are.
- `content_box` finds near-uniform borders (letterbox, padding of any colour) and solid
  caption bars (a bar of one colour carrying text) and returns the box of the real
  content; the matcher hashes that box as an extra query.
- `crop_boxes` lists the crops an enrolled image is also indexed under: centred crops
  removing 3, 6, 9, 12 and 15% of each side's length. A copy centre-cropped by up to
  ~16% lies within 1.5% of one of them, which PDQ's threshold absorbs. Lists imported
  as bare hashes have no pixels and get none.
bench/robustness.py measures what each costs in false matches.
"""

from __future__ import annotations

import numpy as np

#: A row/column belongs to a border when this share of its pixels is within TOLERANCE of
#: the border colour; caption text covers far less than 40% of most caption bars' rows.
BAR_SHARE = 0.6
#: Dense caption text (bold, across a narrow image) leaves only 40-60% of its rows in
#: the bar's colour: such a band of lines still belongs to the bar when it is at most
#: TEXT_BAND of the side's length and a pure line closes it. Lowering BAR_SHARE instead
#: ate photo rows whose luma happens to equal a coloured padding's (pad 25%: 96.0 ->
#: 92.8% recall in bench/robustness.py).
TEXT_SHARE = 0.35
TEXT_BAND = 0.08
PURE_SHARE = 0.98
TOLERANCE = 12
#: Trim only when it removes at least this share of a side, and keeps at least MIN_KEEP.
MIN_TRIM = 0.02
MIN_KEEP = 0.5
#: Crops indexed at enrollment: centred, removing this share of width and of height.
#: Measured on the benchmark photos: PDQ moves ~20 bits per 2% of crop, so a 3% grid
#: leaves any centred crop of 1.5-16.5% within ~15 bits of a variant. Asymmetric crops
#: (one side only) move the content instead of scaling it and need a far denser grid
#: (~1.5% steps in two offsets): not indexed, and stated as a known miss.
CROP_SHARES: tuple[float, ...] = (0.03, 0.06, 0.09, 0.12, 0.15)
CROPS: tuple[tuple[str, float, float, float, float], ...] = tuple(
    (f"crop-centre-{round(100 * c)}", c / 2, c / 2, 1 - c / 2, 1 - c / 2) for c in CROP_SHARES
)

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), pixels


def _bar_run(lines: np.ndarray) -> int:
    """How many leading lines (rows of `lines`) form one bar of the first line's colour.

    A line belongs to the bar while >= BAR_SHARE of its pixels are that colour (a
    caption's text rows mostly stay above it); the bar ends at the last *pure* line
    (>= PURE_SHARE) of that run, so content that happens to share the bar's colour is
    not eaten: padding and a caption's bottom margin are pure, photo rows are not.
    After that, one short band of denser text (>= TEXT_SHARE, <= TEXT_BAND of the
    length) followed by a pure line continues the bar.
    """
    colour = np.median(lines[0])
    # the edge line alone first: most uploads have no bar, and then that is all we read
    if (np.abs(lines[0].astype(np.int16) - colour) <= TOLERANCE).mean() < PURE_SHARE:
        return 0
    share = (np.abs(lines.astype(np.int16) - colour) <= TOLERANCE).mean(axis=1)
    end = _pure_end(share)
    band = end
    longest = max(1, int(TEXT_BAND * len(lines)))
    while band < len(share) and band - end < longest and TEXT_SHARE <= share[band] < PURE_SHARE:
        band += 1
    if band > end and band < len(share) and share[band] >= PURE_SHARE:
        return band + _pure_end(share[band:])
    return end


def _pure_end(share: np.ndarray) -> int:
    """1 + the last pure line of the leading run of lines with share >= BAR_SHARE
    (share[0] is pure)."""
    bad = np.flatnonzero(share < BAR_SHARE)
    run = int(bad[0]) if bad.size else len(share)
    pure = np.flatnonzero(share[:run] >= PURE_SHARE)
    return int(pure[-1]) + 1


def _pure_edges(small: np.ndarray) -> tuple[bool, bool, bool, bool]:
    """Whether each edge line (top, bottom, left, right) is pure, the test `_bar_run`
    starts with: one small kernel per side instead of several numpy calls (~150 us per
    upload, and most uploads have no bar at all)."""
    from hashsvc.robust_edges import pure_line

    lines = (small[0], small[-1], small[:, 0], small[:, -1])
    return tuple(  # type: ignore[return-value]
        pure_line(np.ascontiguousarray(line), TOLERANCE, PURE_SHARE) for line in lines
    )


def _kernel_bar_run(lines: np.ndarray) -> int:
    """`_bar_run` by the numba kernel (uint8 lines): the same answer, reading only the
    lines it needs."""
    from hashsvc.robust_edges import bar_run

    return int(bar_run(lines, TOLERANCE, BAR_SHARE, PURE_SHARE, TEXT_SHARE, TEXT_BAND))


def content_box(gray: np.ndarray, *, kernel: bool = True) -> Box | None:
    """The box inside added borders/caption bars, or None when there are none.

    `gray` is a uint8 (H, W) luma plane. Each side is measured independently from the
    edge inwards; a side counts only if it trims >= MIN_TRIM of the dimension, and the
    result must keep >= MIN_KEEP of each dimension (else it was not a border).
    `kernel=False` measures in numpy instead of the numba kernels (same answer): a caller
    that hashes a few files without numba (`hashsvc match`, engine "pdqhash") must not
    load it for this.
    """
    h, w = gray.shape
    if h < 16 or w < 16:
        return None
    # measure on a strided subsample (<= ~256 px a side): borders are large features,
    # and this keeps a side that has a bar at ~0.05 ms (a side without one: ~3 us with
    # the kernel, ~40 us without)
    step = max(1, max(h, w) // 256)
    small = gray[::step, ::step]
    # the kernel counts uint8 values in a 256-bin histogram; any other dtype is measured
    # in numpy, as every side was before the kernel
    kernel = kernel and small.dtype == np.uint8
    pure = _pure_edges(small) if kernel else (True,) * 4
    if not any(pure):  # the common upload: no side starts with a bar
        return None
    run = _kernel_bar_run if kernel else _bar_run
    top, bottom, left, right = (
        run(lines) * step if edge_pure else 0
        for lines, edge_pure in zip((small, small[::-1], small.T, small.T[::-1]), pure, strict=True)
    )
    top, bottom = (t if t >= MIN_TRIM * h else 0 for t in (top, bottom))
    left, right = (t if t >= MIN_TRIM * w else 0 for t in (left, right))
    box = (left, top, w - right, h - bottom)
    if box == (0, 0, w, h):
        return None
    if (box[2] - box[0]) < MIN_KEEP * w or (box[3] - box[1]) < MIN_KEEP * h:
        return None
    return box


def crop_boxes(width: int, height: int) -> list[tuple[str, Box]]:
    """The enrollment crops of a width x height image, in pixels."""
    out = []
    for name, left, top, right, bottom in CROPS:
        out.append((name, (round(left * width), round(top * height),
                           round(right * width), round(bottom * height))))  # fmt: skip
    return out
