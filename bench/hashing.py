"""Hashing speed and PDQ drift: hashsvc's decode paths vs the naive pipeline, one core.

The naive pipeline is what a user would otherwise write:
`Image.open().convert("RGB")` + `pdqhash.compute` + `imagehash.phash`. It is also the
oracle for drift: Hamming distance of each path's PDQ (and pHash) to the naive one.

    .venv/bin/python bench/hashing.py [--n-small 100] [--n-large 20] [--repeat 3]

Writes a markdown table to stdout and to bench/RESULTS-hashing.md.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
import pdqhash  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import corpus  # noqa: E402
from machine import machine  # noqa: E402

from hashsvc.hashing import HashPath, hash_media  # noqa: E402
from hashsvc.signals import Hash, SignalType  # noqa: E402

PERCEPTUAL = {SignalType.PDQ, SignalType.PHASH}


def naive_quality(data: bytes) -> int:
    return int(pdqhash.compute(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))[1])


def naive(data: bytes) -> tuple[Hash, Hash]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    bits, _ = pdqhash.compute(np.asarray(img))
    ph = imagehash.phash(img)
    return (Hash.from_bits(SignalType.PDQ, bits),
            Hash.from_bits(SignalType.PHASH, np.asarray(ph.hash).ravel()))  # fmt: skip


def ours(path: HashPath, dihedral: bool = False) -> Callable[[bytes], tuple[Hash, Hash]]:
    def run(data: bytes) -> tuple[Hash, Hash]:
        h = hash_media(data, PERCEPTUAL, path=path, dihedral=dihedral)
        assert h.pdq is not None and h.phash is not None
        return h.pdq, h.phash

    return run


PIPELINES: dict[str, Callable[[bytes], tuple[Hash, Hash]]] = {
    "naive (Pillow RGB + pdqhash + imagehash)": naive,
    "hashsvc reference (hash, enroll, export)": ours(HashPath.REFERENCE),
    "hashsvc fast (matching)": ours(HashPath.FAST),
    "hashsvc fast + 8 dihedral PDQ (matching)": ours(HashPath.FAST, dihedral=True),
}


def measure(
    images: list[bytes], repeat: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    times: dict[str, list[float]] = {k: [] for k in PIPELINES}
    drift: dict[str, dict[str, list[int]]] = {k: {"pdq": [], "phash": []} for k in PIPELINES}
    for fn in PIPELINES.values():  # warm up: numba cache load, imports
        fn(images[0])
    for data in images:
        ref = naive(data)
        per: dict[str, list[float]] = {k: [] for k in PIPELINES}
        for _ in range(repeat):
            for name, fn in PIPELINES.items():  # round robin: noise hits all alike
                t0 = time.perf_counter()
                got = fn(data)
                per[name].append(time.perf_counter() - t0)
        for name, fn in PIPELINES.items():
            times[name].append(float(np.median(per[name])) * 1e3)
            got = fn(data)
            drift[name]["pdq"].append(got[0] - ref[0])
            drift[name]["phash"].append(got[1] - ref[1])
    return ({k: np.array(v) for k, v in times.items()},
            {k: {s: np.array(d) for s, d in v.items()} for k, v in drift.items()})  # fmt: skip


def table(title: str, times: dict[str, np.ndarray], drift: dict[str, dict[str, np.ndarray]]) -> str:
    base = float(np.median(next(iter(times.values()))))
    rows = [f"### {title}", "",
            "| pipeline | median ms | p99 ms | speed-up vs naive (median) "
            "| PDQ drift median / p95 / p99 / max | pHash drift median / max |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, t in times.items():
        d = drift[name]["pdq"]
        p = drift[name]["phash"]
        rows.append(
            f"| {name} | {np.median(t):.2f} | {np.percentile(t, 99):.2f} | "
            f"{base / np.median(t):.1f}x | {np.median(d):.0f} / {np.percentile(d, 95):.0f} / "
            f"{np.percentile(d, 99):.0f} / {d.max()} | {np.median(p):.0f} / {p.max()} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-small", type=int, default=100)
    ap.add_argument("--n-large", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-hashing.md"))
    args = ap.parse_args()

    small = [corpus.jpeg(t) for t in corpus.tiles((1024, 768), limit=args.n_small)]
    large = [
        corpus.jpeg(t) for _, t in zip(range(args.n_large), corpus.large_photos(), strict=False)
    ]
    # PDQ of a flat image (quality < 50) is rounding noise, in every implementation, and
    # is not used for matching: drift is measured on photos PDQ can describe
    flat_small = [d for d in small if naive_quality(d) < 50]
    flat_large = [d for d in large if naive_quality(d) < 50]
    small = [d for d in small if d not in flat_small]
    large = [d for d in large if d not in flat_large]
    sections = [
        "## Hashing: PDQ + pHash per image, one core",
        "",
        f"Machine: {machine()}, one core used. Load average at start: "
        f"{os.getloadavg()[0]:.1f} (2 = both "
        "cores busy; other jobs inflate absolute times, the ratios hold better).",
        f"Command: `.venv/bin/python bench/hashing.py --n-small {args.n_small} "
        f"--n-large {args.n_large} --repeat {args.repeat}`",
        f"Corpus: {len(small)} 1024x768 and {len(large)} 3264x2448 (8 MP) JPEG q90 tiles/crops "
        f"of benign photos ({corpus.describe()}). Time per image = median of {args.repeat} "
        "round-robin runs; drift = Hamming distance to the naive pipeline's hash. "
        f"Left out: {len(flat_small)} + {len(flat_large)} flat tiles whose PDQ quality is "
        "below 50 (their PDQ bits are rounding noise in any implementation, and matching "
        "ignores them).",
        "",
    ]
    for title, images in (("1024x768 JPEG", small), ("3264x2448 (8 MP) JPEG", large)):
        if images:
            t, d = measure(images, args.repeat)
            sections += [table(title, t, d), ""]
    text = "\n".join(sections)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
