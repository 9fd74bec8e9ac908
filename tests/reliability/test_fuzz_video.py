"""Malformed video: PyAV/FFmpeg under mutated containers and streams.

Property: `video.hash_video` (reference and fast path, with bar trimming) returns hashes
or raises `MediaRejected`, nothing else escapes (an FFmpeg error, a ValueError from
PyAV, a numpy error on an odd frame...), and each input finishes within TIME_BOUND_S of
CPU. Seeds are small generated clips in every accepted container (MP4/H.264, Matroska
VP9, WebM VP8, AVI MPEG-4, AVI MJPEG, MPEG-TS H.264), made at run time; hypothesis flips
bits, overwrites, inserts and deletes bytes, truncates and splices them. Short under
`make test`, many more examples under `make fuzz` (HASHSVC_LONG=1).
"""

from __future__ import annotations

import functools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashsvc import video
from hashsvc.errors import MediaRejected
from tests.reliability.conftest import LONG, scaled
from tests.videos import blob_still, encode, frames

TIME_BOUND_S = 5.0
LIMITS = video.VideoLimits(max_seconds=60, max_frames=2_000, max_pixels=1_000_000)


@functools.cache
def _seeds() -> dict[str, bytes]:
    rgb = frames([blob_still(1), blob_still(2)], seconds_per_still=0.5, fps=10, size=(96, 64))
    out = {}
    for name, container, codec in (
        ("mp4-h264", "mp4", "libx264"),
        ("mkv-vp9", "mkv", "libvpx-vp9"),
        ("webm-vp8", "webm", "libvpx"),
        ("avi-mpeg4", "avi", "mpeg4"),
        ("avi-mjpeg", "avi", "mjpeg"),
    ):
        out[name] = encode(rgb, fps=10, container=container, codec=codec)
    out["ts-h264"] = _mpegts(rgb)
    return out


def _mpegts(rgb: list) -> bytes:  # type: ignore[type-arg]
    import io
    from fractions import Fraction

    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for arr in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_every_seed_is_a_valid_video() -> None:
    """The seeds must hash, or the fuzzing below would only ever see garbage."""
    for name, data in _seeds().items():
        assert video.container_of(data) is not None, name
        assert video.hash_video(data, limits=LIMITS).frames, name


class Case(bytes):
    """Mutated bytes whose repr names the seed and the size, not 100 kB of data."""

    seed = ""

    def __repr__(self) -> str:
        import hashlib

        return (
            f"Case({self.seed}, {len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]})"
        )


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(sorted(_seeds())))
    data = bytearray(_seeds()[name])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate",
                                     "splice", "header"]))  # fmt: skip
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=64))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=256))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 512))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            other = _seeds()[draw(st.sampled_from(sorted(_seeds())))]
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
        else:  # the first 512 bytes hold the container header and sample tables
            data[draw(st.integers(0, min(511, len(data) - 1)))] = draw(st.integers(0, 255))
    case = Case(bytes(data))
    case.seed = name
    return case


@settings(
    max_examples=int(scaled(60, 1500)),
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=mutated(), fast=st.booleans())
def test_only_media_rejected_escapes_and_time_is_bounded(case: Case, fast: bool) -> None:
    data = bytes(case)
    start = time.process_time()
    try:
        out = video.hash_video(data, limits=LIMITS, fast=fast, trim=True)
    except MediaRejected as e:
        assert str(e)  # a reason, for the caller
    else:
        assert out.frames and all(0 <= f.quality <= 100 for f in out.frames)
    assert time.process_time() - start < TIME_BOUND_S


def test_declared_huge_frames_are_rejected_from_the_header() -> None:
    """A container that declares 8K frames is refused before any frame is decoded."""
    rgb = frames([blob_still(3)], seconds_per_still=0.2, fps=5, size=(1280, 720))
    data = encode(rgb, fps=5)
    start = time.process_time()
    with pytest.raises(MediaRejected, match="video frames too large"):
        video.hash_video(data, limits=video.VideoLimits(max_pixels=640 * 480))
    assert time.process_time() - start < 1.0
