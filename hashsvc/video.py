"""Video bytes -> MD5, SHA-256 and vPDQ frame hashes, decoded in memory with PyAV.

This module owns every decision about untrusted video files, as media.py does for
images:

- **Container allow-list by content.** The container is recognised from its first bytes
  (MP4/MOV/3GP, Matroska/WebM, AVI, MPEG-TS; `hashsvc.containers`, re-exported here)
  and FFmpeg is told which demuxer to use, so it never probes its way into a playlist
  or concat demuxer that would open other files or URLs. Decoding happens from a
  BytesIO: nothing is written to disk.
- **Codec allow-list**: H.264, HEVC, VP8, VP9, AV1, MPEG-4 part 2, MPEG-1/2, MJPEG.
- **Caps from the container before decoding**: frame size, duration and frame count
  (`VideoLimits`); the same caps are enforced again while decoding, since a container
  may lie or not say.
- **Corrupt and truncated streams** are rejected with `MediaRejected`: FFmpeg errors, no
  decodable frame, or far fewer frames than the container declares.

Frame sampling follows vPDQ: with `seconds_per_hash` s, frame n is hashed when
n % round(s * fps) == 0 (s = 0: every frame), timestamp n / fps; PDQ of the frame's
RGB24 conversion (our bit-exact numba PDQ). `fast=True` (matching only) decodes only the
groups of pictures a sample needs (`_SampleDecoder`) and lets FFmpeg skip non-reference
frames and the deblocking filter in them; the sampled frame is then the first decoded one
at or after each sample time; bench/video.py measures its drift.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hashsvc import hashing
from hashsvc.containers import container_of as container_of
from hashsvc.containers import is_video as is_video
from hashsvc.errors import MediaRejected
from hashsvc.signals import Hash
from hashsvc.vpdq import Frame, collapse_repeats, unique_hashes

#: codec names (FFmpeg decoder names) we decode
ALLOWED_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "mpeg4", "mpeg2video", "mpeg1video",
     "mjpeg", "msmpeg4v3"}
)  # fmt: skip

#: Share of the frames a container declares that must decode; fewer means truncated.
MIN_DECODED_SHARE = 0.9


@dataclass(frozen=True)
class VideoLimits:
    """Caps checked from the container before decoding, and again while decoding."""

    max_seconds: float = 3600.0
    max_frames: int = 250_000
    max_pixels: int = 4096 * 2304  # one frame; 4K UHD fits


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float | None  # seconds, when the container says
    frames: int | None  # when the container says


@dataclass(frozen=True)
class VideoHashes:
    """The hashes of one video: bytes digests and vPDQ frames."""

    #: None for a precomputed vPDQ hash (a vPDQ file or an API body)
    md5: Hash | None
    sha256: Hash | None
    frames: tuple[Frame, ...]
    info: VideoInfo | None = None
    decoded_frames: int = 0
    fast: bool = False
    #: PDQ of each sampled frame's content inside letterbox/pillarbox bars, for frames
    #: that have them (matching only: `trim=True`)
    trimmed: tuple[Frame, ...] = field(default=())

    def unique_frames(self, min_quality: int) -> list[Hash]:
        return unique_hashes(self.frames, min_quality)

    def vpdq_lines(self) -> list[str]:
        return [f.line() for f in self.frames]

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape (`hashsvc hash`, `/v1/hash`)."""
        out: dict[str, Any] = {}
        if self.md5 is not None:
            out["md5"] = self.md5.hex
        if self.sha256 is not None:
            out["sha256"] = self.sha256.hex
        if self.info is not None:
            i = self.info
            out["video"] = {
                "container": i.container,
                "codec": i.codec,
                "width": i.width,
                "height": i.height,
                "fps": round(i.fps, 3),
                "duration": None if i.duration is None else round(i.duration, 3),
            }
        out["vpdq"] = [f.to_json() for f in self.frames]
        return out

    @classmethod
    def from_frames(cls, frames: Sequence[Frame]) -> VideoHashes:
        """A precomputed vPDQ hash (no bytes digests, no container facts)."""
        return cls(md5=None, sha256=None, frames=tuple(frames))


def probe(data: bytes, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Container facts, checked against the caps; nothing is decoded."""
    with _open(data) as (_, info):
        _check_declared(info, limits)
        return info


def hash_video(
    data: bytes,
    *,
    seconds_per_hash: float = 1.0,
    limits: VideoLimits = VideoLimits(),
    fast: bool = False,
    collapse: bool = True,
    trim: bool = False,
) -> VideoHashes:
    """MD5, SHA-256 and the vPDQ frames of a video held in memory.

    Raises MediaRejected for anything we do not accept or cannot decode in full.
    `collapse` drops a frame whose PDQ equals the previous kept one (a still scene).
    `trim` also hashes each sampled frame's content inside bars (robust.content_box):
    a re-upload with bars added is 60-90 bits from the original in plain vPDQ
    (Meta's own pattern-* samples), 8 bits once trimmed.
    """
    if seconds_per_hash < 0:
        raise ValueError("seconds_per_hash must be >= 0")
    with _open(data) as (container, info):
        _check_declared(info, limits)
        frames, trimmed, decoded, reached, last_time = _hash_frames(
            container, info, seconds_per_hash, limits, fast, trim
        )
    if info.frames and reached < MIN_DECODED_SHARE * info.frames:
        raise MediaRejected(
            f"truncated or corrupt video: decoding stopped at frame {reached} of the "
            f"{info.frames} the container declares"
        )
    # containers that declare no frame count (Matroska/WebM) still declare a duration;
    # time, not a frame count, so variable frame rates cannot trip it
    if (
        info.duration
        and last_time is not None
        and last_time < MIN_DECODED_SHARE * info.duration - 1
    ):
        raise MediaRejected(
            f"truncated or corrupt video: decoding stopped at {last_time:.1f} s of the "
            f"{info.duration:.1f} s the container declares"
        )
    if not frames:
        raise MediaRejected("no decodable video frame")
    if collapse:
        frames = collapse_repeats(frames)
        trimmed = collapse_repeats(trimmed)
    return VideoHashes(
        md5=hashing.md5(data),
        sha256=hashing.sha256(data),
        frames=tuple(frames),
        info=info,
        decoded_frames=decoded,
        fast=fast,
        trimmed=tuple(trimmed),
    )


# --- internals -----------------------------------------------------------------------


class _open:
    """Context manager: (container, VideoInfo) for video bytes, or MediaRejected."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.container: Any = None

    def __enter__(self) -> tuple[Any, VideoInfo]:
        import av

        if not self.data:
            raise MediaRejected("empty file (0 bytes)")
        demuxer = container_of(self.data)
        if demuxer is None:
            raise MediaRejected(
                "not a video we accept (MP4/MOV, WebM/MKV, AVI or MPEG-TS, by content)"
            )
        try:
            self.container = av.open(io.BytesIO(self.data), mode="r", format=demuxer)
        except (av.FFmpegError, ValueError, OSError, EOFError, IndexError) as e:
            raise MediaRejected(
                f"truncated or corrupt video container ({demuxer}): {_reason(e)}"
            ) from None
        try:
            return self.container, _info(self.container, demuxer)
        except BaseException:
            self.container.close()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()


def _info(container: Any, demuxer: str) -> VideoInfo:
    streams = list(container.streams.video)
    if not streams:
        raise MediaRejected(f"no video stream in the {demuxer} container")
    stream = streams[0]
    ctx = stream.codec_context
    if ctx is None:  # a stream FFmpeg has no decoder for (seen on mangled headers)
        raise MediaRejected(f"the video stream in the {demuxer} container has no known codec")
    codec = ctx.name
    if codec not in ALLOWED_CODECS:
        raise MediaRejected(f"unsupported video codec {codec!r}")
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not 0 < fps <= 1000:
        raise MediaRejected(f"invalid frame rate {fps!r}")
    duration: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    frames = int(stream.frames) or None
    return VideoInfo(demuxer, codec, int(ctx.width), int(ctx.height), fps, duration, frames)


def _check_declared(info: VideoInfo, limits: VideoLimits) -> None:
    if info.width <= 0 or info.height <= 0:
        raise MediaRejected(f"invalid video dimensions {info.width}x{info.height}")
    _check_pixels(info.width, info.height, limits)
    if info.duration is not None and info.duration > limits.max_seconds:
        raise MediaRejected(
            f"video too long: {info.duration:.0f} s exceeds the limit of {limits.max_seconds:.0f} s"
        )
    if info.frames is not None and info.frames > limits.max_frames:
        raise MediaRejected(
            f"too many frames: {info.frames} exceeds the limit of {limits.max_frames}"
        )


def _check_pixels(w: int, h: int, limits: VideoLimits) -> None:
    if w * h > limits.max_pixels:
        raise MediaRejected(
            f"video frames too large: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the limit of "
            f"{limits.max_pixels / 1e6:.1f} MP"
        )


def _hash_frames(
    container: Any,
    info: VideoInfo,
    seconds_per_hash: float,
    limits: VideoLimits,
    fast: bool,
    trim: bool,
) -> tuple[list[Frame], list[Frame], int, int, float | None]:
    """Decode the first video stream; PDQ of every sampled frame. Returns (frames,
    trimmed frames, count of frames decoded, how many frames the stream reached: the
    last number + 1, the last frame's time in seconds from the start if known)."""
    import av

    from hashsvc.robust import content_box

    stream = container.streams.video[0]
    ctx = stream.codec_context
    if fast:
        ctx.skip_frame = "NONREF"
        # no deblocking, and H.264's non-bit-exact shortcuts: ~25% less decode time
        ctx.options = {"skip_loop_filter": "all", "flags2": "+fast"}
    step = max(1, round(seconds_per_hash * info.fps)) if seconds_per_hash > 0 else 1
    # float once: Fraction arithmetic on every decoded frame showed in the profile
    time_base = float(stream.time_base) if stream.time_base is not None else None
    start_pts = stream.start_time or 0
    out: list[Frame] = []
    trimmed: list[Frame] = []
    decoded = 0
    reached = 0
    last_time: float | None = None
    gops = _SampleDecoder(container, stream, info.fps, step, limits) if fast else None
    try:
        for frame in gops.frames() if gops is not None else container.decode(stream):
            if frame.pts is not None and time_base is not None:
                last_time = (frame.pts - start_pts) * time_base
            if fast and last_time is not None and frame.pts is not None:
                number = round(last_time * info.fps)  # frames were skipped: number by time
            else:
                number = decoded
            decoded += 1
            reached = max(reached, number + 1)
            if decoded > limits.max_frames:
                raise MediaRejected(f"too many frames: more than {limits.max_frames}")
            seconds = number / info.fps
            if seconds > limits.max_seconds:
                raise MediaRejected(
                    f"video too long: more than {limits.max_seconds:.0f} s of frames"
                )
            if gops is not None:
                sample = gops.sample_of(number)
                if sample is None:
                    continue
            else:
                if number % step:
                    continue
                sample = number
            _check_pixels(frame.width, frame.height, limits)
            luma = _luma_plane(frame) if fast else None
            pixels = luma if luma is not None else frame.to_ndarray(format="rgb24")
            pdq, quality = _pdq(pixels, frame)
            out.append(Frame(sample, quality, pdq, sample / info.fps))
            if trim:
                gray = luma if luma is not None else frame.to_ndarray(format="gray")
                box = content_box(gray)
                if box is not None:
                    left, top, right, bottom = box
                    pdq, quality = _pdq(pixels[top:bottom, left:right], frame)
                    trimmed.append(Frame(sample, quality, pdq, sample / info.fps))
    except MediaRejected:
        raise
    except av.FFmpegError as e:
        raise MediaRejected(f"truncated or corrupt video stream: {_reason(e)}") from None
    except (ValueError, OSError, EOFError, IndexError, MemoryError) as e:
        raise MediaRejected(f"truncated or corrupt video stream: {_reason(e)}") from None
    if gops is not None:  # how far the stream goes, skipped packets included
        reached = max(reached, gops.reached)
        if gops.last_time is not None:
            last_time = max(last_time or 0.0, gops.last_time)
    return out, trimmed, decoded, reached, last_time


class _SampleDecoder:
    """The fast path's decoder: only the packets the samples need reach FFmpeg.

    A sampled frame depends on nothing before the keyframe that starts its group of
    pictures. So once every packet fed so far lies before the next sample (`wanted`, a
    frame number `sample_of` advances), later packets are held back instead of decoded: a
    keyframe at or before `wanted` drops them (they can only be frames no sample needs),
    a packet at or past `wanted` releases them in order (the sample lies in this group).
    With a keyframe every 1-2 s, as phone and web encoders write them, this skips about
    half the decoding at one sample per second; with no usable timestamps on a packet it
    feeds everything from then on. Skipped packets are demuxed, not decoded: how far the
    stream goes (`reached`, `last_time`) and the frame cap count them too.

    Frames after a keyframe never refer to frames before it when it is an IDR/closed-GOP
    keyframe; after an open-GOP keyframe only its leading pictures (shown before it, so
    numbered below `wanted` and ignored) may, so the decoded samples are the same frames
    a full decode gives, up to the fast path's own options.
    """

    def __init__(
        self, container: Any, stream: Any, fps: float, step: int, limits: VideoLimits
    ) -> None:
        self.container = container
        self.stream = stream
        self.fps = fps
        self.step = step  # frames between samples
        self.limits = limits
        self.wanted = 0  # the next sample's frame number
        self.reached = 0
        self.last_time: float | None = None
        self.time_base = float(stream.time_base) if stream.time_base is not None else None
        self.start_pts = stream.start_time or 0

    def sample_of(self, number: int) -> int | None:
        """The sample a decoded frame numbered `number` stands for (the first decoded
        frame at or after each sample time), or None when it stands for none."""
        if number < self.wanted:
            return None
        sample = self.wanted
        self.wanted = (number // self.step + 1) * self.step
        return sample

    def frames(self) -> Iterator[Any]:
        held: list[Any] = []  # packets not fed, all before `wanted`
        fed_max = -1  # largest frame number fed to the decoder
        skipping = self.time_base is not None
        packets = 0
        for packet in self.container.demux(self.stream):
            if packet.size == 0:  # end of stream: drain the decoder (held packets: not needed)
                yield from packet.decode()
                return
            packets += 1
            if packets > self.limits.max_frames:
                raise MediaRejected(f"too many frames: more than {self.limits.max_frames}")
            number: int | None = None
            if skipping and packet.pts is not None:
                assert self.time_base is not None
                seconds = (packet.pts - self.start_pts) * self.time_base
                number = round(seconds * self.fps)
                self.reached = max(self.reached, number + 1)
                self.last_time = max(self.last_time or 0.0, seconds)
            else:
                skipping = False
            if number is not None and fed_max < self.wanted:
                if packet.is_keyframe and number <= self.wanted:
                    held.clear()  # everything held lies before this keyframe: not needed
                elif number < self.wanted:
                    held.append(packet)
                    continue
            for p in (*held, packet):
                yield from p.decode()
            held.clear()
            if number is not None:
                fed_max = max(fed_max, number)


#: 8-bit formats whose first plane is the luma (Y) plane at full resolution
_Y_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                      "nv12", "nv21"})  # fmt: skip


def _luma_plane(frame: Any) -> np.ndarray | None:
    """The decoder's own Y plane, without a copy or a colour conversion (fast path): the
    PDQ luma of the RGB conversion is this Y plane up to rounding, clipping and, for
    limited-range video, an affine map that only moves the DC term. None when the pixel
    format has no 8-bit Y plane first (then RGB is used)."""
    if frame.format.name not in _Y_FIRST:
        return None
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def _pdq(pixels: np.ndarray, frame: Any) -> tuple[Hash, int]:
    """`hashing.pdq` of RGB pixels (bit-exact with the reference), or of a Y plane (fast
    path, with the matching path's sampled PDQ). PDQ's quality is a sum of luma
    gradients: a limited-range Y plane (16-235) has them 219/255 as steep, so its quality
    is scaled back to what the RGB frame gives."""
    engine: hashing.PdqEngine = "sampled" if pixels.ndim == 2 else "numba"
    pdq, quality = hashing.pdq(np.ascontiguousarray(pixels), engine)
    limited = not frame.format.name.startswith("yuvj") and frame.color_range != 2  # 2: full
    if pixels.ndim == 2 and limited:
        quality = min(100, int(quality * 255 / 219))
    return pdq, quality


def _reason(e: BaseException) -> str:
    # PyAV appends the file name, which for bytes in memory is "'<none>'"
    text = str(e).replace(": '<none>'", "").strip() or type(e).__name__
    return text[:200]
