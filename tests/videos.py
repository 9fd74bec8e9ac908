"""Benign test videos, generated in memory with PyAV (tests and bench/video.py share it).

A video here is a slow pan-and-zoom over a sequence of generated or benign still images
(one "scene" per image), so consecutive frames differ a little and scenes differ a lot,
like real footage. Nothing depicts a person: the stills are numpy noise upsampled into
smooth blobs, or photos of a bridge / objects from ../shared/testdata and scikit-image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from PIL import Image


def blob_still(seed: int, size: tuple[int, int] = (960, 720)) -> Image.Image:
    """A smooth, photo-like generated still (high PDQ quality, nothing recognisable)."""
    rng = np.random.default_rng(seed)
    # 24x32 blobs: structure across PDQ's whole 16x16 DCT band, so its bits are stable
    # under re-encoding (smoother stills leave most coefficients near the median)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)


def frames(
    stills: Sequence[Image.Image],
    *,
    seconds_per_still: float,
    fps: int,
    size: tuple[int, int],
    bar: int = 0,
    zoom: float = 0.03,
) -> list[np.ndarray]:
    """RGB frames: each still is shown for `seconds_per_still`, slowly zooming in by
    `zoom` (a gentle push-in, as in real footage) so frames change; `bar` black rows are
    added on top and bottom (letterbox)."""
    w, h = size
    out: list[np.ndarray] = []
    per = max(1, round(seconds_per_still * fps))
    inner_h = h - 2 * bar
    for still in stills:
        sw, sh = still.size
        for i in range(per):
            scale = 1.0 - zoom * i / per
            cw, ch = sw * scale, sh * scale
            left, top = (sw - cw) / 2, (sh - ch) / 2
            box = (left, top, left + cw, top + ch)
            img = still.resize((w, inner_h), Image.Resampling.BILINEAR, box=box)
            arr = np.asarray(img)
            if bar:
                arr = np.concatenate(
                    [np.zeros((bar, w, 3), np.uint8), arr, np.zeros((bar, w, 3), np.uint8)]
                )
            out.append(np.ascontiguousarray(arr))
    return out


def encode(
    rgb_frames: Sequence[np.ndarray],
    *,
    fps: int = 30,
    container: str = "mp4",
    codec: str = "libx264",
    crf: int = 23,
    preset: str = "veryfast",
    gop: int | None = None,
) -> bytes:
    """Encode RGB frames into a video file held in memory; `gop`: a keyframe every `gop`
    frames (x264: exactly, scene-cut keyframes off; otherwise the encoder's choice)."""
    buf = io.BytesIO()
    h, w = rgb_frames[0].shape[:2]
    with _open_output(buf, container) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"  # MJPEG: full range
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset}
        elif codec in ("libvpx-vp9", "libvpx"):
            stream.options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.bit_rate = 2_000_000
        if gop is not None:
            stream.options = {**stream.options, "g": str(gop)}
            if codec == "libx264":
                stream.options = {**stream.options, "x264-params": "scenecut=0"}
        import av

        for arr in rgb_frames:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _open_output(buf: io.BytesIO, container: str):  # type: ignore[no-untyped-def]
    import av

    fmt = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "avi": "avi"}[container]
    return av.open(buf, mode="w", format=fmt)


def make_video(
    seeds: Sequence[int] = (1, 2, 3),
    *,
    seconds_per_still: float = 1.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    bar: int = 0,
    container: str = "mp4",
    codec: str = "libx264",
    crf: int = 23,
    gop: int | None = None,
) -> bytes:
    """A short generated video: one scene per seed."""
    stills = [blob_still(s) for s in seeds]
    rgb = frames(stills, seconds_per_still=seconds_per_still, fps=fps, size=size, bar=bar)
    return encode(rgb, fps=fps, container=container, codec=codec, crf=crf, gop=gop)
