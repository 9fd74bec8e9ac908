"""Bulk scan throughput: `hashsvc scan` over 2,000 mixed 1024x768 JPEGs, with 1 and 2
worker processes and on a local Dask cluster of 2 workers, against the single-core rate.

    .venv/bin/python bench/scan.py [--files 2000] [--repeat 3]

The corpus (benign photo tiles from bench/corpus.py, plus re-encoded and edited copies:
JPEG quality 55-95, baseline and progressive, 4:2:0 and 4:4:4, crops, rescales, mirror
and rotated copies) is
written once to bench/_data/scan-corpus/ (git-ignored), with a list `bench-known` of 25
of its originals enrolled in bench/_data/scan-index/ so that matches happen too.

Each configuration runs the real CLI in a subprocess; "wall" is the whole command
(interpreter, worker or cluster start-up, scan, shutdown), "scan" is the scan's own
clock from its summary line (from the first file listed to the last result), "CPU" the
user+system time of all its processes. Runs are interleaved across configurations, and
with the in-process single-core baseline (measured again in every round), so that
background load hits them alike; the tables show medians. Writes bench/RESULTS-scan.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402
from machine import machine  # noqa: E402

from hashsvc.config import Settings  # noqa: E402

DATA = HERE / "_data"
CORPUS = DATA / "scan-corpus"
INDEX = DATA / "scan-index"
SIZE = (1024, 768)
KNOWN = 25
HASHSVC = str(Path(sys.executable).parent / "hashsvc")
#: The environment of every `hashsvc scan` run here: this process's, taken before the
#: warm cluster starts. A Dask nanny adds MALLOC_TRIM_THRESHOLD_=65536 and *_NUM_THREADS=1
#: to the os.environ of the process that hosts it, for good; inherited, the malloc
#: setting once halved the pool's files per CPU-second (see hashsvc.scan's
#: `_keep_buffers_on_heap`). A user's scan does not start with it.
SCAN_ENV = dict(os.environ)


def _jpeg(img: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **params)
    return buf.getvalue()


KINDS = 8


def _variant(tile: Image.Image, i: int, round_: int) -> bytes:
    """The original tile (round 0) or an edited copy, so the mix resembles a real drive.
    Rounds past KINDS repeat the edits at other JPEG qualities (distinct files)."""
    w, h = tile.size
    kind, shift = round_ % KINDS, 3 * (round_ // KINDS)
    if kind == 0:
        return _jpeg(tile, quality=90 - shift)
    if kind == 1:
        return _jpeg(tile, quality=60 + (i + shift) % 30, progressive=True)
    if kind == 2:
        return _jpeg(tile, quality=95 - shift, subsampling=0)  # 4:4:4
    if kind == 3:
        crop = tile.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize(SIZE)
        return _jpeg(crop, quality=75 - shift)
    if kind == 4:
        return _jpeg(tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=55 + shift)
    if kind == 5:
        return _jpeg(tile.resize((800, 600)).resize(SIZE), quality=80 - shift)
    if kind == 6:
        return _jpeg(tile.crop((0, 0, w * 85 // 100, h * 85 // 100)).resize(SIZE), quality=85)
    return _jpeg(tile.transpose(Image.Transpose.ROTATE_180), quality=70 + shift)


def build_corpus(n: int) -> list[Path]:
    """Write (once) n JPEGs and the list of known originals; returns the files."""
    files = sorted(CORPUS.glob("*/*.jpg"))
    if len(files) == n and (INDEX / "hashsvc.db").exists():
        return files
    import shutil

    shutil.rmtree(CORPUS, ignore_errors=True)
    shutil.rmtree(INDEX, ignore_errors=True)
    tiles = list(corpus.tiles(SIZE))
    CORPUS.mkdir(parents=True)
    (CORPUS / "tiles.txt").write_text(f"{len(tiles)}\n")
    originals: list[bytes] = []
    count = 0
    round_ = 0
    while count < n:
        for i, tile in enumerate(tiles):
            if count >= n:
                break
            data = _variant(tile, i, round_)
            path = CORPUS / f"d{count % 20:02d}" / f"img{count:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if round_ == 0 and i < KNOWN:
                originals.append(data)
            count += 1
        round_ += 1
    _enroll(originals)
    return sorted(CORPUS.glob("*/*.jpg"))


def _tiles_used() -> str:
    try:
        return (CORPUS / "tiles.txt").read_text().strip()
    except OSError:
        return "?"


def _enroll(originals: list[bytes]) -> None:
    from hashsvc import enrollment
    from hashsvc.index_sync import IndexSet
    from hashsvc.store import Store

    with Store.open(INDEX / "hashsvc.db") as store:
        store.create_list("bench-known", "block")
        enrollment.enroll(store, "bench-known", [(str(i), d) for i, d in enumerate(originals)])
        IndexSet.open(store, INDEX).save()


def single_core_rates(files: list[Path], sample: int) -> dict[str, tuple[float, float]]:
    """(files/s, files per CPU-second) of one core, in this process, warm, on a sample
    of the corpus: bench/hashing.py's fast path (decode + PDQ + pHash), the same with the
    8 dihedral PDQ variants, and everything the scan does per file (read + all hashes +
    search). The CPU-second rate hardly depends on other people's load; files/s does."""
    from hashsvc.hashing import PIXEL_SIGNALS, HashPath, hash_media
    from hashsvc.matcher import Matcher

    paths = files[:: max(1, len(files) // sample)][:sample]
    datas = [p.read_bytes() for p in paths]
    matcher = Matcher.open(Settings(data_dir=INDEX))
    runs: dict[str, Callable[[int], object]] = {
        "hashing.py fast path (PDQ + pHash)": lambda i: hash_media(
            datas[i], PIXEL_SIGNALS, path=HashPath.FAST
        ),
        "fast path + 8 dihedral PDQ": lambda i: hash_media(
            datas[i], PIXEL_SIGNALS, path=HashPath.FAST, dihedral=True
        ),
        "scan's per-file work (read + match_media)": lambda i: matcher.match_media(
            paths[i].read_bytes()
        ),
    }
    # warm on the whole sample, not one file: a kernel that only some files need (the
    # RGB check of a rotated or mirrored match) loads on its first use, ~0.3-1 s that
    # once showed up as ~2 ms per file in a 200-file baseline
    for fn in runs.values():
        for i in range(len(paths)):
            fn(i)
    # the pipelines take turns file by file, so a drift of the box's speed during the
    # measurement hits all three alike
    wall = dict.fromkeys(runs, 0.0)
    cpu = dict.fromkeys(runs, 0.0)
    for i in range(len(paths)):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(i)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    matcher.close()
    return {name: (len(paths) / wall[name], len(paths) / cpu[name]) for name in runs}


def isolated_single_core_rates(n_files: int, sample: int) -> dict[str, tuple[float, float]]:
    """`single_core_rates` in a fresh process: run between the scans of each round, and
    apart from this process, whose CPU clock also counts the warm cluster's scheduler
    threads."""
    out = subprocess.run(
        [sys.executable, __file__, "--baseline-only", "--files", str(n_files),
         "--sample", str(sample)],
        capture_output=True, text=True, check=True, env=SCAN_ENV,
    )  # fmt: skip
    rates = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: (float(v[0]), float(v[1])) for k, v in rates.items()}


CONFIGS = {
    "1 worker process": ["--workers", "1"],
    "2 worker processes": ["--workers", "2"],
    "Dask, --dask-local 2": ["--dask-local", "2"],
    # a cluster that is already up (the --scheduler case): no start-up in the run
    "Dask, --scheduler (warm cluster of 2)": ["--scheduler", "{scheduler}"],
}


Run = tuple[float, float, int, float, float]


class _CpuMeter:
    """CPU seconds of a process and all its descendants, sampled every 0.2 s.

    RUSAGE_CHILDREN is not enough: pool workers are children of the forkserver, which
    nobody waits for. A descendant's last <0.2 s before it exits can be missed."""

    def __init__(self, pid: int) -> None:
        self.seen: dict[int, float] = {}
        self.pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                procs = [psutil.Process(self.pid)]
                procs += procs[0].children(recursive=True)
            except psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.seen[p.pid] = t.user + t.system
                except psutil.Error:
                    pass

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def run_once(args: list[str]) -> Run:
    """(wall s, scan s, exit code, 1-min load average before the run, CPU s).

    CPU s is the user+system time of the scan and all its processes (workers, the
    forkserver, Dask's scheduler and nannies). CPU s / wall s is the share of the
    machine the scan got, which tells scaling apart from other people's load on a
    shared machine."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [HASHSVC, "scan", str(CORPUS), "--out", f"{tmp}/r.jsonl", *args,
               "--data-dir", str(INDEX)]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=SCAN_ENV)  # fmt: skip
        meter = _CpuMeter(proc.pid)
        _, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        cpu = meter.stop()
        # "scan finished: 2000 files in 1m25s (23.4 files/s; ..."
        m = re.search(r"scan finished: (\d+) files in [^(]*\(([\d.]+) files/s", stderr)
        if m is None or proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr}")
        lines = Path(f"{tmp}/r.jsonl").read_text().count("\n")
    assert lines == int(m.group(1)), "every file must have its line"
    return wall, int(m.group(1)) / float(m.group(2)), proc.returncode, load, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sample", type=int, default=200, help="files for the single-core rate")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-scan.md")
    ap.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    files = build_corpus(args.files)
    if args.baseline_only:  # isolated_single_core_rates' child: one JSON line
        print(json.dumps(single_core_rates(files, args.sample)))
        return
    loads = [os.getloadavg()[0]]
    rounds: list[dict[str, tuple[float, float]]] = []
    runs: dict[str, list[Run]] = {k: [] for k in CONFIGS}
    steady: dict[str, list[float]] = {k: [] for k in STEADY}
    with _warm_cluster(files) as scheduler:
        for r in range(args.repeat):
            # the baseline too in every round, between the scans: the box's speed drifts
            # by up to 1.4x within minutes, and a baseline measured once before all the
            # scans once put the same scan rates at 1.03x or 1.44x of it
            rounds.append(isolated_single_core_rates(args.files, args.sample))
            for name, extra in CONFIGS.items():
                runs[name].append(run_once([a.format(scheduler=scheduler) for a in extra]))
                wall, scan_s, code, load, cpu = runs[name][-1]
                print(f"[{r + 1}/{args.repeat}] {name}: wall {wall:.1f} s, "
                      f"scan {scan_s:.1f} s, CPU {cpu:.1f} s, exit {code}, load {load:.2f}",
                      file=sys.stderr)  # fmt: skip
        for name, rate in steady_rates(scheduler, args.repeat).items():
            steady[name] = rate
    loads.append(os.getloadavg()[0])
    single = {
        k: (statistics.median(r[k][0] for r in rounds), statistics.median(r[k][1] for r in rounds))
        for k in rounds[0]
    }
    text = report(args, len(files), single, runs, loads, steady)
    print(text)
    args.out.write_text(text + "\n")


STEADY = ("1 worker process", "2 worker processes", "Dask, 2 workers")


def steady_rates(scheduler: str, repeat: int) -> dict[str, list[float]]:
    """files/s of warm workers (kernels loaded, Matcher open) through the engine API in
    this process: the scan's throughput once start-up is paid, which is what a long
    scan sees. Each backend is warmed on one directory, then timed on the rest."""
    from distributed import Client

    from hashsvc import scan

    settings = Settings(data_dir=INDEX)
    dirs = sorted(d for d in CORPUS.iterdir() if d.is_dir())

    def timed(backend: scan.Backend) -> float:
        list(scan.Scan([str(dirs[0])], backend))  # warm-up
        t0 = time.perf_counter()
        n = sum(1 for _ in scan.Scan([str(d) for d in dirs[1:]], backend))
        return n / (time.perf_counter() - t0)

    out: dict[str, list[float]] = {k: [] for k in STEADY}
    with Client(scheduler) as client:
        for r in range(repeat):
            for name in STEADY:
                if name.startswith("Dask"):
                    backend: scan.Backend = scan.DaskBackend(client, settings)
                else:
                    backend = scan.ProcessBackend(settings, workers=int(name[0]))
                try:
                    out[name].append(timed(backend))
                finally:
                    backend.close()
                print(
                    f"[{r + 1}/{repeat}] steady {name}: {out[name][-1]:.1f} files/s",
                    file=sys.stderr,
                )
    return out


@contextmanager
def _warm_cluster(files: list[Path]) -> Iterator[str]:
    """A LocalCluster of 2 single-threaded worker processes, warmed by one small scan.
    Its CPU time is not in the runs' CPU column (it is not a child of the scan)."""
    import logging

    import dask
    from distributed import LocalCluster

    from hashsvc.scan import SCAN_WORKER_CONFIG

    # configured as the README tells cluster operators to (worker profiler off)
    with dask.config.set(SCAN_WORKER_CONFIG), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        dashboard_address=":0", silence_logs=logging.ERROR,
    ) as cluster:  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([HASHSVC, "scan", str(files[0].parent), "--out", f"{tmp}/w.jsonl",
                            "--scheduler", cluster.scheduler_address, "--quiet",
                            "--data-dir", str(INDEX)], check=False, env=SCAN_ENV)  # fmt: skip
        yield cluster.scheduler_address


def report(
    args: argparse.Namespace,
    n: int,
    single: dict[str, tuple[float, float]],
    runs: dict[str, list[Run]],
    loads: list[float],
    steady: dict[str, list[float]],
) -> str:
    # ratios use the single-core rate per CPU-second: what one core does when it is not
    # shared; the wall rate of one measurement moment on a busy machine is not a baseline
    _, hashing_cpu_rate = single["hashing.py fast path (PDQ + pHash)"]
    hashing_rate = hashing_cpu_rate
    _, per_file_cpu_rate = single["scan's per-file work (read + match_media)"]
    all_loads = [x[3] for v in runs.values() for x in v] + loads
    rows = [
        "## Bulk scan: `hashsvc scan`, files/s",
        "",
        f"Machine: {machine()}; **shared with other engineers' jobs while measured**: 1-min "
        f"load average {min(all_loads):.2f}..{max(all_loads):.2f} on 2 cores, so wall-clock "
        "numbers are noisy and the multi-worker ones pessimistic: read them with the CPU "
        "columns (how much of the machine the scan got, and what a file cost).",
        f"Command: `.venv/bin/python bench/scan.py --files {args.files} --repeat {args.repeat}`; "
        "each run is `hashsvc scan bench/_data/scan-corpus --out <tmp>/r.jsonl <option> "
        "--data-dir bench/_data/scan-index`.",
        f"Corpus: {n} JPEG 1024x768 made from {_tiles_used()} distinct tiles of benign photos "
        f"({corpus.describe()}): originals plus progressive, 4:4:4, cropped, rescaled, "
        "mirrored and rotated re-encodes at quality 55-95; "
        f"{KNOWN} originals enrolled in a `block` list. Median of {args.repeat} interleaved runs.",
        "",
        f"### Single core, in process, warm ({args.sample} files; the baseline, measured in "
        f"every round between the scans: median of {args.repeat})",
        "",
        "| pipeline | files/s (wall) | files per CPU-second |",
        "|---|---|---|",
        *(f"| {k} | {w:.1f} | {c:.1f} |" for k, (w, c) in single.items()),
        "",
        "### The scan",
        "",
        "wall = the whole command (start-up, scan, shut-down); scan = the scan's own clock "
        "(first file listed to last result written); CPU = user+system time of the scan's "
        "processes (the warm cluster's workers are not its children: no CPU figure).",
        "",
        "| configuration | wall s | files/s (wall) | scan s | files/s (scan) | best run: "
        "files/s (scan) | files/s (scan) / hashing.py fast path (1 core) | CPU s "
        "| cores obtained (CPU s / wall s) | files per CPU-second | load avg before runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rate: dict[str, float] = {}
    best: dict[str, float] = {}
    for name, v in runs.items():
        wall = statistics.median(x[0] for x in v)
        scan_s = statistics.median(x[1] for x in v)
        rate[name] = n / scan_s
        cpu = statistics.median(x[4] for x in v)
        ld = [x[3] for x in v]
        cpu_cols = (f"{cpu:.1f} | {cpu / wall:.2f} | {n / cpu:.1f}" if "warm" not in name
                    else "- | - | -")  # fmt: skip
        best[name] = n / min(x[1] for x in v)
        rows.append(
            f"| {name} | {wall:.1f} | {n / wall:.1f} | {scan_s:.1f} | {rate[name]:.1f} | "
            f"{best[name]:.1f} | {rate[name] / hashing_rate:.2f}x | {cpu_cols} | "
            f"{min(ld):.1f}..{max(ld):.1f} |"
        )
    rows += [
        "",
        "### Steady state: warm workers (engine API, start-up excluded)",
        "",
        "The same corpus less one warm-up directory, through `hashsvc.scan.Scan` with a "
        "process pool (`ProcessBackend`) or the warm Dask cluster (`DaskBackend`) whose "
        "workers already loaded the kernels and the lists: what a long scan sees once "
        "start-up is paid.",
        "",
        "| configuration | files/s (median) | files/s (best) "
        "| / hashing.py fast path, 1 core (best) "
        "| / scan's per-file work on 1 core, in process (best) |",
        "|---|---|---|---|---|",
    ]
    per_file_rate = per_file_cpu_rate
    for name, v in steady.items():
        rows.append(
            f"| {name} | {statistics.median(v):.1f} | {max(v):.1f} | "
            f"{max(v) / hashing_rate:.2f}x | {max(v) / per_file_rate:.2f}x |"
        )
    local2 = rate["2 worker processes"]
    dask_local, dask_warm = "Dask, --dask-local 2", "Dask, --scheduler (warm cluster of 2)"
    one = statistics.median(n / x[4] for x in runs["1 worker process"])
    rows += [
        "",
        "Targets (issue 5): with 2 workers >= 1.8x the single-core hashing rate; the Dask "
        "path within 80% of the local path.",
        "",
        f"- Medians: 2 workers = {local2 / hashing_rate:.2f}x the single-core hashing.py "
        f"fast path and {local2 / rate['1 worker process']:.2f}x 1 worker; Dask = "
        f"{rate[dask_local] / local2:.0%} (`--dask-local 2`, start-up included) and "
        f"{rate[dask_warm] / local2:.0%} (warm cluster) of 2 local workers.",
        f"- Best runs (least disturbed): 2 workers = "
        f"{best['2 worker processes'] / hashing_rate:.2f}x the hashing.py fast path and "
        f"{best['2 worker processes'] / best['1 worker process']:.2f}x 1 worker; Dask = "
        f"{best[dask_local] / best['2 worker processes']:.0%} (`--dask-local 2`) and "
        f"{best[dask_warm] / best['2 worker processes']:.0%} (warm cluster) of 2 local workers.",
        f"- Steady state (best): 2 workers = "
        f"{max(steady['2 worker processes']) / max(steady['1 worker process']):.2f}x 1 worker "
        f"and {max(steady['2 worker processes']) / hashing_rate:.2f}x the hashing.py fast "
        f"path; Dask = {max(steady['Dask, 2 workers']) / max(steady['2 worker processes']):.0%}"
        " of the local pool.",
        f"- Per file, the scan does more than hashing.py's fast path: 8 dihedral PDQ "
        "variants, MD5 + SHA-256, reading the file and the index searches. One core does "
        f"{hashing_cpu_rate:.0f} files per CPU-second of the fast path alone and "
        f"{per_file_cpu_rate:.0f} of the scan's full per-file work, so 2 workers can reach "
        f"at most {2 * per_file_cpu_rate / hashing_cpu_rate:.2f}x the fast path's rate: the "
        "1.8x target is out of reach by construction, whatever the machine. The 1-worker "
        f"scan got {one:.0f} files per CPU-second, start-up included.",
        "- CPU seconds per file rise ~10% when both cores are busy. (Earlier runs, whose "
        "1-worker scan cost 18-41 CPU-s, had inherited a Dask nanny's "
        "MALLOC_TRIM_THRESHOLD_ from the warm cluster: every image buffer a fresh mmap. "
        "Each scan now runs with the environment from before that cluster started.)",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
