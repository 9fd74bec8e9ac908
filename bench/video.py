"""Video hashing speed and vPDQ drift: hashsvc.video vs Meta's vpdq, one core (issue 7).

Why: a user who needs vPDQ hashes would otherwise run Meta's `vpdq` package
(`vpdq.computeHash`, C++ with its own libav decoding). hashsvc decodes with PyAV from
memory instead, for its container/codec allow-list and caps, and hashes with its own
numba PDQ. This script checks that it is not slower than vpdq, how far a 1-minute 1080p
clip is from the "checked in under 3 s on one core" target, and that the frame hashes
stay the same as vpdq's (drift), on both of our paths:

- reference: `hash_video(data, seconds_per_hash=1.0)`, every frame decoded (hash,
  enroll, export);
- fast: `hash_video(..., fast=True)`, only the groups of pictures a sample needs are
  decoded, and FFmpeg skips non-reference frames and the deblocking filter in them
  (matching only): cheaper, but the frames differ from vpdq's.

Speed = seconds of video hashed per CPU-second (time.process_time of the whole process,
so decoder threads count), with the process pinned to one core; the pipelines run
interleaved, `--repeat` times each, order rotated every round. Two "decode only" rows
(PyAV, no hashing) show the floor under our two paths. Inputs are generated with
tests/videos.py (a slow zoom over smooth generated stills, one scene per 2 s, nothing
recognisable) and cached in bench/_data/ (git-ignored); vpdq needs a file path. Drift is
also measured on Meta's vPDQ sample videos (/work/shared/testdata/vpdq), every frame.

    .venv/bin/python bench/video.py [--seconds 60] [--repeat 3] [--core N] [--no-samples]

Writes a markdown report to stdout and to bench/RESULTS-video.md.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import vpdq  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from machine import machine  # noqa: E402

from hashsvc import video  # noqa: E402
from hashsvc.video import hash_video  # noqa: E402
from tests import videos  # noqa: E402

DATA = HERE / "_data"
SAMPLES = Path("/work/shared/testdata/vpdq")
FPS = 30
SECONDS_PER_STILL = 2.0
CLIPS: dict[str, tuple[int, int]] = {
    "480p": (854, 480),
    "1080p": (1920, 1080),
    "1080p-gop250": (1920, 1080),
}
#: keyframe spacing per clip: None = x264's choice (a keyframe at each scene cut, i.e. every
#: 2 s here); 250 = one every 250 frames exactly (x264's default maximum, scene cuts off),
#: the worst case for the fast path, which skips what lies between a sample and a keyframe
GOPS: dict[str, int | None] = {"1080p-gop250": 250}
#: the 1080p clip another bench run left (60 s, 30 stills of 2 s, seeds 0..29)
LEGACY_1080 = DATA / "test1080.mp4"
TARGET_1080_SECONDS = 3.0  # issue 7: a 1-minute 1080p clip checked in under 3 s, one core
PDQ_THRESHOLD = 31  # vPDQ's per-frame match distance
MIN_QUALITY = 50

#: a frame: number -> (quality, 256-bit hash as int)
Frames = dict[int, tuple[int, int]]
#: what a pipeline returns: its frames and how many frames it decoded (None: not known)
Result = tuple[Frames, int | None]


# --- inputs ---------------------------------------------------------------------------


class _LazyFrames(Sequence[np.ndarray]):
    """tests/videos.frames() over many stills, one still at a time (a 60 s 1080p clip
    is 11 GB of RGB frames held at once); the frames are identical to one big call."""

    def __init__(self, seeds: Sequence[int], size: tuple[int, int]) -> None:
        self.seeds = list(seeds)
        self.size = size
        self.per = max(1, round(SECONDS_PER_STILL * FPS))
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _still(self, k: int) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != k:
            still = videos.blob_still(self.seeds[k])
            rgb = videos.frames([still], seconds_per_still=SECONDS_PER_STILL, fps=FPS,
                                size=self.size)  # fmt: skip
            self._cached = (k, rgb)
        return self._cached[1]

    def __len__(self) -> int:
        return len(self.seeds) * self.per

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._still(i // self.per)[i % self.per]

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self.seeds)):
            yield from self._still(k)


def _fits(path: Path, size: tuple[int, int], seconds: int) -> bool:
    """An H.264 clip of this size, 30 fps and length (in frames) already on disk?"""
    if not path.exists():
        return False
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return (s.codec_context.name == "h264" and (s.width, s.height) == size
                    and s.average_rate == Fraction(FPS) and s.frames == seconds * FPS)  # fmt: skip
    except av.FFmpegError:
        return False


def clip(name: str, seconds: int) -> Path:
    """The cached clip, generated (and written atomically) when missing."""
    size = CLIPS[name]
    if name == "1080p" and _fits(LEGACY_1080, size, seconds):
        return LEGACY_1080
    path = DATA / f"video-{name}-{seconds}s.mp4"
    if _fits(path, size, seconds):
        return path
    DATA.mkdir(exist_ok=True)
    n = math.ceil(seconds / SECONDS_PER_STILL)
    t0 = time.perf_counter()
    print(f"encoding {path.name}: {n} stills x {SECONDS_PER_STILL:g} s at {size[0]}x{size[1]}",
          file=sys.stderr, flush=True)  # fmt: skip
    data = videos.encode(_LazyFrames(range(n), size), fps=FPS, gop=GOPS.get(name))
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    print(f"  {len(data) / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


# --- pipelines ------------------------------------------------------------------------


def _ours(fast: bool, seconds_per_hash: float = 1.0) -> Callable[[Path], Result]:
    def run(path: Path) -> Result:
        # collapse=False keeps every sampled frame so frame numbers line up with vpdq's;
        # collapsing is one pass over ~60 frames, nothing next to decoding
        h = hash_video(path.read_bytes(), seconds_per_hash=seconds_per_hash, fast=fast,
                       collapse=False)  # fmt: skip
        return {f.number: (f.quality, int(f.pdq.hex, 16)) for f in h.frames}, h.decoded_frames

    return run


def _vpdq(seconds_per_hash: float = 1.0) -> Callable[[Path], Result]:
    def run(path: Path) -> Result:
        feats = vpdq.computeHash(str(path), seconds_per_hash=seconds_per_hash, thread_count=1)
        return {f.frame_number: (int(f.quality), int(f.hex, 16)) for f in feats}, None

    return run


def _decode_only(fast: bool) -> Callable[[Path], Result]:
    """PyAV decoding as hashsvc.video sets it up (BytesIO, mov demuxer), nothing else;
    fast: its options and only the packets its samples need (video._SampleDecoder)."""

    def run(path: Path) -> Result:
        n = 0
        with av.open(io.BytesIO(path.read_bytes()), mode="r", format="mov") as c:
            s = c.streams.video[0]
            if not fast:
                for _ in c.decode(s):
                    n += 1
                return {}, n
            s.codec_context.skip_frame = "NONREF"
            s.codec_context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
            fps = float(s.average_rate)
            step, tb = round(fps), float(s.time_base)
            gops = video._SampleDecoder(c, s, fps, step, video.VideoLimits())
            for frame in gops.frames():
                n += 1
                gops.sample_of(round((frame.pts - (s.start_time or 0)) * tb * fps))
        return {}, n

    return run


PIPELINE_FLOOR_REF = "decode only, every frame (floor of reference)"
PIPELINE_FLOOR_FAST = "decode only, fast path packets and options (floor of fast)"
BASELINE = "vpdq.computeHash (baseline)"
REFERENCE = "hashsvc reference"
FAST = "hashsvc fast (matching)"
PIPELINES: dict[str, Callable[[Path], Result]] = {
    BASELINE: _vpdq(),
    REFERENCE: _ours(fast=False),
    FAST: _ours(fast=True),
    PIPELINE_FLOOR_REF: _decode_only(fast=False),
    PIPELINE_FLOOR_FAST: _decode_only(fast=True),
}


def peak_threads(fn: Callable[[], object]) -> int:
    """Most threads the process had while fn ran (polled every 5 ms)."""
    me = psutil.Process()
    peak = [me.num_threads()]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], me.num_threads())

    t = threading.Thread(target=poll)
    t.start()
    base = me.num_threads()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0] - base + 1  # the calling thread + what fn started


# --- measuring ------------------------------------------------------------------------


@dataclass
class Runs:
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    frames: Frames | None = None
    decoded: int | None = None
    stable: bool = True  # the same hashes on every run


def timed(fn: Callable[[Path], Result], path: Path, runs: Runs) -> None:
    c0, w0 = time.process_time(), time.perf_counter()
    got, runs.decoded = fn(path)
    runs.wall.append(time.perf_counter() - w0)
    runs.cpu.append(time.process_time() - c0)
    if runs.frames is None:
        runs.frames = got
    elif got != runs.frames:
        runs.stable = False


@dataclass
class Drift:
    compared: int
    only_a: int
    only_b: int
    dist: np.ndarray
    qdiff: np.ndarray
    qside: int  # frames on different sides of the quality bar
    far_good: int  # frames over the match threshold with quality >= 50 on both sides

    @property
    def far(self) -> int:
        return int((self.dist > PDQ_THRESHOLD).sum())

    def cells(self) -> str:
        d, q = self.dist, self.qdiff
        if not d.size:
            return "- | - | - | - | -"
        return (f"{np.median(d):.0f} / {np.percentile(d, 99):.0f} / {d.max()} | "
                f"{self.far} ({self.far_good}) | {np.median(q):.0f} / {q.max()} | "
                f"{self.qside}")  # fmt: skip


def drift(a: Frames, b: Frames) -> Drift:
    common = sorted(a.keys() & b.keys())
    dist = np.array([(a[n][1] ^ b[n][1]).bit_count() for n in common], dtype=int)
    qdiff = np.array([abs(a[n][0] - b[n][0]) for n in common], dtype=int)
    qside = sum((a[n][0] >= MIN_QUALITY) != (b[n][0] >= MIN_QUALITY) for n in common)
    return Drift(len(common), len(a.keys() - b.keys()), len(b.keys() - a.keys()), dist, qdiff,
                 qside, sum(int(d > PDQ_THRESHOLD and min(a[n][0], b[n][0]) >= MIN_QUALITY)
                            for n, d in zip(common, dist, strict=True)))  # fmt: skip


def meta_sample_hashes(name: str) -> Frames:
    """Meta's published every-frame hashes for one sample video."""
    out: Frames = {}
    for line in (SAMPLES / "sample-hashes" / f"{name}.txt").read_text().splitlines():
        if line.strip():
            n, q, h = line.split(",")[:3]
            out[int(n)] = (int(q), int(h, 16))
    return out


# --- report ---------------------------------------------------------------------------


def fmt_s(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def speed_table(seconds: int, results: dict[str, dict[str, Runs]]) -> list[str]:
    rows = [
        "| clip | pipeline | frames decoded / hashed | CPU s median | CPU s max | wall s median "
        "| video s per CPU-s (median) | vs vpdq (CPU, median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clip_name, per in results.items():
        base = float(np.median(per[BASELINE].cpu))
        for name, r in per.items():
            cpu = float(np.median(r.cpu))
            hashed = "-" if r.frames is None or not r.frames else str(len(r.frames))
            frames = f"{'-' if r.decoded is None else r.decoded} / {hashed}"
            rows.append(
                f"| {clip_name} {seconds} s | {name} | {frames} | {fmt_s(cpu)} | "
                f"{fmt_s(max(r.cpu))} | {fmt_s(float(np.median(r.wall)))} | "
                f"{seconds / cpu:.1f} | {base / cpu:.2f}x |"
            )
    return rows


def meaning_paragraph(
    results: dict[str, dict[str, Runs]],
    clip_drift: dict[tuple[str, str], Drift],
    sample_frames: int,
    sample_max: int,
    meta_far: int,
    meta_far_good: int,
    seconds: int,
) -> str:
    """One paragraph reading the numbers (generated, so it stays true on a re-run)."""

    def med(clip_name: str, name: str) -> float:
        return float(np.median(results[clip_name][name].cpu))

    big = "1080p" if "1080p" in results else next(iter(results))
    ref, fast, base = med(big, REFERENCE), med(big, FAST), med(big, BASELINE)
    floor_ref, floor_fast = med(big, PIPELINE_FLOOR_REF), med(big, PIPELINE_FLOOR_FAST)
    same = [d for (_, label), d in clip_drift.items() if label == "hashsvc reference vs vpdq"]
    fast_d = [d for (_, label), d in clip_drift.items() if label.startswith("hashsvc fast vs h")]
    same_max = max(int(d.dist.max()) for d in same)
    fast_all = np.concatenate([d.dist for d in fast_d])
    decoded = results[big][FAST].decoded
    total = results[big][REFERENCE].decoded
    text = (
        f"Decoding is the cost: on the {big} clip PyAV's decoding alone takes "
        f"{floor_ref / ref:.0%} of the reference path's CPU time and {floor_fast / fast:.0%} of "
        "the fast path's (the rest is 60 RGB conversions + PDQ, MD5 and SHA-256). The "
        f"reference path gives vpdq's frame hashes (largest distance {same_max} bits on the "
        f"generated clips"
        + (
            f", {sample_max} bits over the {sample_frames} frames of Meta's samples"
            if sample_frames
            else ""
        )  # fmt: skip
        + f") at {base / ref:.2f}x vpdq's speed on {big}, so what we enrol and export is "
        "interchangeable with vpdq's output. The fast path decodes only the reference frames "
        f"of the groups of pictures a sample needs ({decoded} of {total}) without deblocking: "
        f"{base / fast:.2f}x vpdq, at a drift of "
        f"median {np.median(fast_all):.0f}, max {fast_all.max()} bits from the reference "
        f"frames, far under vPDQ's {PDQ_THRESHOLD}-bit frame match threshold (on a slow zoom, "
        "where a neighbouring frame looks alike; fast motion would drift more). "
    )
    if big == "1080p":
        scale = 60 / seconds
        if fast * scale < TARGET_1080_SECONDS:
            text += (f"The fast path meets the {TARGET_1080_SECONDS:g} s target for a 1-minute "
                     f"1080p clip ({fast * scale:.2f} CPU s). ")  # fmt: skip
        else:
            text += (
                f"The {TARGET_1080_SECONDS:g} s target for a 1-minute 1080p clip is missed "
                f"({fast * scale:.2f} CPU s on the fast path), and decoding what the fast path "
                f"decodes alone takes {floor_fast * scale:.2f} CPU s. "
            )  # fmt: skip
        if "1080p-gop250" in results:
            long_fast = med("1080p-gop250", FAST) * scale
            text += (
                "How much the fast path saves depends on the keyframe spacing: on the same "
                "frames with one keyframe every 250 frames and no scene cuts (the worst case: "
                f"little lies between a sample and the next keyframe) it decodes "
                f"{results['1080p-gop250'][FAST].decoded} frames and takes {long_fast:.2f} CPU s, "
                + ("also under the target. " if long_fast < TARGET_1080_SECONDS
                   else "over the target. ")
            )  # fmt: skip
    if sample_frames:
        text += (
            f"Meta's published sample hashes differ from the vpdq package's own output on "
            f"{meta_far} frames by more than {PDQ_THRESHOLD} bits, {meta_far_good} of them with "
            f"quality >= {MIN_QUALITY}: "
            + ("all are near-flat frames (a fade) whose PDQ bits are noise that matching "
               "ignores. " if meta_far_good == 0 else "look at those frames. ")
        )  # fmt: skip
    text += (
        "CPU seconds on this shared VM grow with the load (the same call varies by up to "
        f"{max(max(r.cpu) / min(r.cpu) for per in results.values() for r in per.values()):.1f}x "
        "between runs here), so absolute times are pessimistic; the side-by-side ratios hold "
        "better."
    )
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="clip length (default 60)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per pipeline and clip")
    ap.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)),
                    help="CPU to pin the process to")  # fmt: skip
    ap.add_argument("--clips", default=",".join(CLIPS), help=f"comma-separated: {','.join(CLIPS)}")
    ap.add_argument("--no-samples", action="store_true",
                    help="skip the drift check on Meta's vPDQ sample videos")  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-video.md")
    args = ap.parse_args()

    clip_names = [c for c in args.clips.split(",") if c]
    paths = {name: clip(name, args.seconds) for name in clip_names}

    load_start = os.getloadavg()
    steal0 = psutil.cpu_times()
    # does hashsvc.video let FFmpeg start decoder threads? (it leaves thread_count at
    # PyAV's default, 0 = FFmpeg decides from the CPUs it may use)
    small = paths[clip_names[0]]
    threads_free = peak_threads(lambda: hash_video(small.read_bytes(), seconds_per_hash=1.0))
    os.sched_setaffinity(0, {args.core})
    threads_pinned = peak_threads(lambda: hash_video(small.read_bytes(), seconds_per_hash=1.0))
    threads_vpdq = peak_threads(lambda: _vpdq()(small))  # these three calls are the warm-up

    results: dict[str, dict[str, Runs]] = {n: {p: Runs() for p in PIPELINES} for n in paths}
    names = list(PIPELINES)
    for rnd in range(args.repeat):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for clip_name, path in paths.items():
            for name in order:
                timed(PIPELINES[name], path, results[clip_name][name])
                r = results[clip_name][name]
                print(f"round {rnd + 1} {clip_name} {name}: cpu {r.cpu[-1]:.2f} s, "
                      f"wall {r.wall[-1]:.2f} s, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)  # fmt: skip
    load_mid = os.getloadavg()

    # drift on the synthetic clips, 1 hash per second
    drift_rows = [
        "| clip | pair | frames compared (only in first / second) | Hamming median / p99 / max "
        f"| frames > {PDQ_THRESHOLD} bits (with quality >= {MIN_QUALITY} on both) "
        "| quality diff median / max "
        f"| frames on different sides of quality {MIN_QUALITY} |",
        "|---|---|---|---|---|---|---|",
    ]
    unstable = [f"{c} / {p}" for c, per in results.items() for p, r in per.items()
                if not r.stable]  # fmt: skip
    clip_drift: dict[tuple[str, str], Drift] = {}
    for clip_name, per in results.items():
        ref, fast, base = per[REFERENCE].frames, per[FAST].frames, per[BASELINE].frames
        assert ref is not None and fast is not None and base is not None
        for label, a, b in (("hashsvc reference vs vpdq", ref, base),
                            ("hashsvc fast vs hashsvc reference", fast, ref),
                            ("hashsvc fast vs vpdq", fast, base)):  # fmt: skip
            d = clip_drift[clip_name, label] = drift(a, b)
            drift_rows.append(f"| {clip_name} {args.seconds} s | {label} | {d.compared} "
                              f"({d.only_a} / {d.only_b}) | {d.cells()} |")  # fmt: skip

    # drift on Meta's sample videos: every frame
    sample_rows: list[str] = []
    sample_cpu = {"ours": 0.0, "vpdq": 0.0}
    sample_frames = 0
    sample_max = 0  # ours vs vpdq, most bits apart on any frame
    meta_far = meta_far_good = 0
    if not args.no_samples:
        sample_rows = [
            "| video | size, frames | frames compared (only ours / only vpdq) | hashsvc "
            f"reference vs vpdq: Hamming median / p99 / max | frames > {PDQ_THRESHOLD} bits "
            f"(with quality >= {MIN_QUALITY} on both) | "
            f"quality diff median / max | frames on different sides of quality {MIN_QUALITY} "
            "| vpdq package vs Meta's sample-hashes: median / max / frames > 31 bits (with "
            f"quality >= {MIN_QUALITY} on both) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for path in sorted((SAMPLES / "videos").glob("*.mp4")):
            ours_runs, base_runs = Runs(), Runs()
            timed(_ours(fast=False, seconds_per_hash=0), path, ours_runs)
            timed(_vpdq(seconds_per_hash=0), path, base_runs)
            sample_cpu["ours"] += ours_runs.cpu[0]
            sample_cpu["vpdq"] += base_runs.cpu[0]
            assert ours_runs.frames is not None and base_runs.frames is not None
            sample_frames += len(base_runs.frames)
            d = drift(ours_runs.frames, base_runs.frames)
            meta = drift(base_runs.frames, meta_sample_hashes(path.stem))
            sample_max = max(sample_max, int(d.dist.max()))
            meta_far += meta.far
            meta_far_good += meta.far_good
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                size = f"{s.width}x{s.height}, {s.frames}"
            sample_rows.append(
                f"| {path.stem} | {size} | {d.compared} ({d.only_a} / {d.only_b}) | "
                f"{d.cells()} | {np.median(meta.dist):.0f} / {meta.dist.max()} / "
                f"{meta.far} ({meta.far_good}) |"
            )
            print(f"sample {path.stem}: {d.cells()}", file=sys.stderr, flush=True)

    load_end = os.getloadavg()
    steal1 = psutil.cpu_times()
    busy = sum(steal1) - sum(steal0)
    steal = 100 * (getattr(steal1, "steal", 0.0) - getattr(steal0, "steal", 0.0)) / max(busy, 1e-9)

    # targets
    targets: list[str] = []
    for clip_name, per in results.items():
        base = float(np.median(per[BASELINE].cpu))
        for name in (REFERENCE, FAST):
            cpu = float(np.median(per[name].cpu))
            worst = max(per[name].cpu)
            verdict = "met" if cpu <= base else "NOT met"
            if cpu <= base and worst > min(per[BASELINE].cpu):
                verdict = "met on the median, within run-to-run noise"
            targets.append(f"- Not slower than vpdq, {clip_name}, {name}: {verdict} "
                           f"({cpu:.2f} vs {base:.2f} CPU s median, {base / cpu:.2f}x; "
                           f"slowest run {worst:.2f} vs {min(per[BASELINE].cpu):.2f} for "
                           "vpdq's fastest).")  # fmt: skip
    for big in (c for c in results if c.startswith("1080p")):
        per = results[big]
        scale = 60 / args.seconds
        for name in (FAST, REFERENCE):
            cpu = float(np.median(per[name].cpu)) * scale
            wall = float(np.median(per[name].wall)) * scale
            verdict = "met" if cpu < TARGET_1080_SECONDS else "NOT met"
            targets.append(
                f"- 1-minute {big} clip in under {TARGET_1080_SECONDS:g} s on one core, {name}: "
                f"{verdict} by CPU time ({cpu:.2f} CPU s median"
                + (f", scaled from {args.seconds} s" if args.seconds != 60 else "")
                + f"; {wall:.2f} s wall under this load)."
            )

    meaning = ["### What it means", "", meaning_paragraph(results, clip_drift, sample_frames,
               sample_max, meta_far, meta_far_good, args.seconds)]  # fmt: skip

    cmd = ".venv/bin/python bench/video.py"
    if args.seconds != 60 or args.repeat != 3:
        cmd += f" --seconds {args.seconds} --repeat {args.repeat}"
    sections = [
        "## Video: vPDQ hashing, one core (hashsvc.video vs Meta's vpdq)",
        "",
        f"Machine: {machine()}; the process pinned to core {args.core} "
        "(`os.sched_setaffinity`). Load average (1 min) at start "
        f"{load_start[0]:.1f}, after the timed runs {load_mid[0]:.1f}, at the end "
        f"{load_end[0]:.1f} (2 = both cores busy); CPU steal during the run {steal:.1f}%.",
        f"Command: `{cmd}`",
        f"Clips: H.264 (libx264 crf 23, veryfast, yuv420p), {FPS} fps, {args.seconds} s, "
        + ", ".join(
            f"{n} {w}x{h} (`{p.relative_to(ROOT)}`, {p.stat().st_size / 1e6:.1f} MB)"
            for n, (w, h), p in ((n, CLIPS[n], paths[n]) for n in paths)
        )
        + f"; made by tests/videos.py: a slow zoom over generated smooth stills, one "
        f"{SECONDS_PER_STILL:g} s scene per seed (0, 1, ...); x264 puts a keyframe at each "
        "scene cut, except in the -gop250 clip (one every 250 frames, scene cuts off).",
        f"Method: 1 hash per second (`seconds_per_hash=1.0`) on every path: "
        "`hash_video(data, seconds_per_hash=1.0[, fast=True], collapse=False)` on the file's "
        "bytes (read inside the timing) and `vpdq.computeHash(path, seconds_per_hash=1.0, "
        f"thread_count=1)`. {args.repeat} interleaved runs per pipeline and clip, order "
        "rotated each round; CPU = `time.process_time()` of the process (all its threads). "
        "With a few runs the max is shown instead of a p99. Decoder threads: hashsvc.video "
        "leaves PyAV's thread_count at 0 (FFmpeg's choice): the process peaked at "
        f"{threads_free} threads during `hash_video` unpinned, {threads_pinned} pinned to one "
        f"core; vpdq with thread_count=1: {threads_vpdq}.",
        "",
        "### Speed",
        "",
        *speed_table(args.seconds, results),
        "",
        "### Drift on the generated clips (same frame numbers)",
        "",
        *drift_rows,
        "",
    ]
    if unstable:
        sections += [f"Not the same hashes on every run: {', '.join(unstable)}.", ""]
    if sample_rows:
        sections += [
            "### Drift on Meta's vPDQ sample videos, every frame (`seconds_per_hash=0`)",
            "",
            f"{SAMPLES}/videos/*.mp4: `hash_video(data, seconds_per_hash=0, collapse=False)` vs "
            "`vpdq.computeHash(path, seconds_per_hash=0, thread_count=1)`, and vpdq vs the "
            "hashes Meta published for the same files (sample-hashes/NAME.txt). CPU for all "
            f"{sample_frames} frames: hashsvc {sample_cpu['ours']:.1f} s, vpdq "
            f"{sample_cpu['vpdq']:.1f} s "
            f"({sample_cpu['vpdq'] / max(sample_cpu['ours'], 1e-9):.2f}x vpdq's CPU / ours).",
            "",
            *sample_rows,
            "",
        ]
    sections += ["### Targets (issue 7)", "", *targets, "", *meaning]
    text = "\n".join(sections)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
