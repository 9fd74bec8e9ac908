"""Load benchmark of the REST API: a real `hashsvc serve` (uvicorn, 2 workers) on
loopback, wrk as the load generator in its own process, an index of 1M PDQ + 1M pHash.

Scenarios, each at 1, 8, 32 and 128 concurrent connections:
  (a) single-hash lookups   POST /v1/match/hashes {"pdq": ...}       (random, ~all allow)
  (b) 1,000-hash batches    POST /v1/match/hashes {"items": [1000]}  (PDQ only)
  (c) 1024x768 JPEG uploads POST /v1/match (image/jpeg, q90 photos of bench/corpus)
and (c) again at 8 and 32 connections on a "paired" index: the same sizes, each PDQ
sharing an external id with a pHash (enrolled media), so corroboration runs too.
plus the references the targets compare against: hashing throughput on 2 processes for
(c), the search core's batch throughput for (b), and for (a) the HTTP floor: the same load
on the same uvicorn settings against a do-nothing app (bench/noop_app.py).

    .venv/bin/python bench/api.py [--duration 8] [--entries 1000000]

The data dir (bench/_data/api-<n>/, git-ignored) is built once and reused. Requests go
only to 127.0.0.1. Writes bench/RESULTS-api.md and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hashsvc import keys  # noqa: E402
from hashsvc.hashlist import ListEntry  # noqa: E402
from hashsvc.signals import Hash, SignalType  # noqa: E402
from hashsvc.store import Store  # noqa: E402

CLIENTS = (1, 8, 32, 128)
#: Scenario (a) again at the target's rate rather than flat out: 32 connections, each
#: waiting this long after every response (wrk's `delay()`): a little over 2,000 req/s here.
PACED_DELAY_MS = 13
#: Scenario (c) on the paired list (`build_data(paired=True)`), at fewer client counts.
PAIRED = "jpeg1024x768, paired list"
PAIRED_CLIENTS = (8, 32)
RESULTS = ROOT / "bench" / "RESULTS-api.md"
LAST = ROOT / "bench" / "_data" / "api-last-run.json"  # raw numbers of the last run
HEADER = "# API load benchmark (bench/api.py)\n\nNewest run first.\n"


def build_data(data_dir: Path, n: int, *, paired: bool = False) -> None:
    """1 list, n random PDQ + n random pHash entries, index saved. Reused when present.

    `paired`: PDQ i and pHash i share external id i (n enrolled media items), so every
    pHash entry has a PDQ sibling and uploads pay corroboration's wide pHash search;
    without ids (the issue's index) no list can corroborate and that search is skipped."""
    marker = data_dir / "built.json"
    if marker.exists():
        return
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    with Store.open(data_dir / "hashsvc.db", cache_mib=512) as store:
        store.create_list("bench", "block")
        for signal in (SignalType.PDQ, SignalType.PHASH):
            width = signal.bits // 8
            for start in range(0, n, 250_000):
                k = min(250_000, n - start)
                codes = rng.integers(0, 256, (k, width), dtype=np.uint8)
                entries = [
                    ListEntry(Hash(signal, c.tobytes()), external_id=f"item-{start + i}")
                    if paired
                    else ListEntry(Hash(signal, c.tobytes()))
                    for i, c in enumerate(codes)
                ]
                store.import_entries("bench", entries, source_name="bench", file_sha256="")
        from hashsvc.index_sync import IndexSet

        IndexSet.open(store, data_dir).save()
    marker.write_text(json.dumps({"entries": n, "seconds": round(time.perf_counter() - t, 1)}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HASHSVC_RATE_LIMIT_PER_MINUTE": "0", "HASHSVC_HASH_CONCURRENCY": "2"}
    cmd = [
        sys.executable,
        "-c",
        "from hashsvc.cli import main; main()",
        "serve",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(proc, port, 300)
    return proc


@contextlib.contextmanager
def serving(data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`start_server` for the duration of a block; the process group is killed after."""
    proc = start_server(data_dir, port)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def wait_ready(proc: subprocess.Popen[bytes], port: int, seconds: float) -> None:
    """Until 8 fresh connections in a row get 200 from /readyz: both workers serving."""
    import httpx

    deadline = time.monotonic() + seconds
    streak = 0
    while streak < 8:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        time.sleep(0.05 if ok else 0.5)


def http_floor(script: Path, clients: int = 32, duration: int = 8) -> dict[str, float]:
    """Scenario (a)'s load against bench/noop_app.py served as `hashsvc serve` serves the
    app (serve.uvicorn_config / run_uvicorn: 2 workers, httptools over the coalescing
    transport, uvloop, TCP_NODELAY): what the HTTP stack and the load generator cost on
    this box before hashsvc does anything."""
    port = free_port()
    code = (
        "from hashsvc.cli.serve import run_uvicorn, uvicorn_config; "
        f"run_uvicorn(uvicorn_config('noop_app:app', host='127.0.0.1', port={port}, workers=2))"
    )
    cmd = [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(proc, port, 60)  # the do-nothing app answers /readyz 200 like any path
        run_wrk(port, script, 8, 2, proc)  # warm-up
        return run_wrk(port, script, clients, duration, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def wrk_script(
    tmp: Path,
    name: str,
    token: str,
    path: str,
    ctype: str,
    bodies: list[bytes],
    delay_ms: int | None = None,
) -> Path:
    """wrk's Lua script for one scenario (its bodies written under `tmp`); `delay_ms`:
    each connection waits that long after a response before its next request."""
    listing = write_bodies(tmp, name, bodies)
    script = tmp / f"{name}.lua"
    lua = LUA % {"ctype": ctype, "token": token, "path": path, "listing": listing}
    if delay_ms is not None:
        lua += f"function delay()\n  return {int(delay_ms)}\nend\n"
    script.write_text(lua)
    return script


LUA = r"""
-- every request is formatted once, in init: building one per call (wrk.format) and a
-- response() hook (wrk then hands each response's headers and body to Lua) cost wrk
-- ~16 us more CPU per request on the 2 cores it shares with the server (measured)
local reqs = {}
local n = 0
local i = 0
function init(args)
  for line in io.lines("%(listing)s") do
    local f = io.open(line, "rb")
    n = n + 1
    reqs[n] = wrk.format("POST", "%(path)s", {["Content-Type"] = "%(ctype)s",
                         ["Authorization"] = "Bearer %(token)s"}, f:read("*all"))
    f:close()
  end
  i = math.random(n)
end
function request()
  i = i %% n + 1
  return reqs[i]
end
"""


def write_bodies(tmp: Path, name: str, bodies: list[bytes]) -> Path:
    d = tmp / name
    d.mkdir()
    paths = []
    for i, b in enumerate(bodies):
        p = d / f"{i}.bin"
        p.write_bytes(b)
        paths.append(str(p))
    listing = tmp / f"{name}.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def server_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds used so far by the server's processes (parent and workers)."""
    import psutil

    root = psutil.Process(proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_wrk(
    port: int, script: Path, clients: int, duration: int, proc: subprocess.Popen[bytes]
) -> dict[str, float]:
    threads = min(clients, 2)
    cpu0 = server_cpu(proc)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(clients),
            "-d",
            f"{duration}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = server_cpu(proc) - cpu0
    text = out.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+\w+)", text)}
    # wrk counts answers with status >= 400 (every route here answers 200 or an error)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    failed = int(non2xx.group(1)) if non2xx else 0
    ok = max(0, total - failed)
    # only answered requests count: a shed request (503, HASHSVC_MAX_IN_FLIGHT) is fast
    # and would otherwise inflate req/s and deflate CPU per request
    return {
        "rps": rps * ok / total if total else 0.0,
        "p50": lat["50"],
        "p99": lat["99"],
        "errors": failed,
        "cpu_ms": 1000 * cpu / ok if ok else float("nan"),
        "load": os.getloadavg()[0],
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _hash_worker(blobs: list[bytes]) -> tuple[int, float]:
    """`Matcher.hash_upload` on each blob (it reads only the settings); (count, CPU s)."""
    from typing import cast

    from hashsvc.config import Settings
    from hashsvc.index_sync import IndexSet
    from hashsvc.matcher import Matcher

    hasher = Matcher(cast(Store, None), cast(IndexSet, None), Settings())
    cpu = time.process_time()
    for b in blobs:
        hasher.hash_upload(b)
    return len(blobs), time.process_time() - cpu


def hashing_reference(jpegs: list[bytes], seconds: float = 8.0) -> tuple[float, float]:
    """(uploads/s on 2 processes, CPU ms per upload) of the upload path's hashing alone."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_hash_worker, [jpegs[:2], jpegs[:2]])  # warm (numba cache, imports)
        done, cpu, start = 0, 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for n, c in pool.map(_hash_worker, [jpegs, jpegs]):
                done, cpu = done + n, cpu + c
        return done / (time.perf_counter() - start), 1000 * cpu / done


def match_reference(data_dir: Path, jpegs: list[bytes], uploads: int = 200) -> float:
    """CPU ms per upload of `Matcher.match_media` in process (hashing + every search at
    this index size): what the API adds on top of it is the HTTP layer's cost. One warm
    pass first: a cold pass over a few photos measured the index's page faults."""
    from hashsvc.api.runtime import open_matcher
    from hashsvc.config import Settings

    matcher = open_matcher(Settings(data_dir=data_dir))
    try:
        for b in jpegs:
            matcher.match_media(b)
        cpu = time.process_time()
        for i in range(uploads):
            matcher.match_media(jpegs[i % len(jpegs)])
        return 1000 * (time.process_time() - cpu) / uploads
    finally:
        matcher.close()
        matcher.indexes.store.close()


def search_reference(data_dir: Path, queries: np.ndarray) -> tuple[float, float]:
    """(PDQ hashes/s, CPU ms per hash) of `BinaryIndex.search_batch`, 1 thread, r=31, in
    batches of 1,000 as scenario (b) sends them (its path: sweep.py); the median of 3
    rounds over `queries`."""
    from hashsvc.search import BinaryIndex

    index = BinaryIndex.load(data_dir / "search" / "pdq", 256)
    index.search_batch(queries[:1000], 31)
    rounds = []
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(queries), 1000):
            index.search_batch(queries[i : i + 1000], 31)
        rounds.append((time.perf_counter() - start, time.process_time() - cpu))
    wall, cpu = sorted(rounds)[1]
    return len(queries) / wall, 1000 * cpu / len(queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--entries", type=int, default=1_000_000, help="PDQ and pHash entries each")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the report from the last run's raw numbers",
    )
    args = ap.parse_args()
    if args.render_only:
        last = json.loads(LAST.read_text())
        results = {k: {int(c): r for c, r in v.items()} for k, v in last["results"].items()}
        report = render(args, results, last["refs"], last["photos"])
        save(report)
        print(report)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    load_start = os.getloadavg()[0]
    data_dir = ROOT / "bench" / "_data" / f"api-{args.entries}"
    paired_dir = ROOT / "bench" / "_data" / f"api-paired-{args.entries}"
    build_data(data_dir, args.entries)
    build_data(paired_dir, args.entries, paired=True)
    tokens = []
    for d in (data_dir, paired_dir):
        with Store.open(d / "hashsvc.db") as store:
            tokens.append(keys.create_key(store, f"bench-{time.time_ns()}", "match")[1])
    token, paired_token = tokens

    import corpus

    photos = [corpus.jpeg(img) for img in corpus.tiles((1024, 768), limit=40, max_side=1600)]
    rng = np.random.default_rng(2)
    singles = [
        json.dumps({"pdq": rng.integers(0, 256, 32, np.uint8).tobytes().hex()}).encode()
        for _ in range(2000)
    ]
    batch_codes = rng.integers(0, 256, (8 * 1000, 32), dtype=np.uint8)
    batches = [
        json.dumps({"items": [{"pdq": c.tobytes().hex()} for c in batch_codes[i::8]]}).encode()
        for i in range(8)
    ]

    port = free_port()
    scenarios = {
        "single": ("/v1/match/hashes", "application/json", singles),
        "batch1000": ("/v1/match/hashes", "application/json", batches),
        "jpeg1024x768": ("/v1/match", "image/jpeg", photos),
    }
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hashsvc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with serving(data_dir, port) as proc:
            for name, (path, ctype, bodies) in scenarios.items():
                script = wrk_script(tmp, name, token, path, ctype, bodies)
                run_wrk(port, script, 8, 2, proc)  # warm-up
                results[name] = {}
                for c in CLIENTS:
                    results[name][c] = run_wrk(port, script, c, args.duration, proc)
                    print(name, c, results[name][c], flush=True)
            path, ctype, bodies = scenarios["single"]
            script = wrk_script(tmp, "paced", token, path, ctype, bodies, PACED_DELAY_MS)
            paced = run_wrk(port, script, 32, args.duration, proc)
            print("single paced 32", paced, flush=True)
        # (c) again on the paired list: every upload also pays corroboration's pHash scan
        with serving(paired_dir, port) as proc:
            path, ctype, bodies = scenarios["jpeg1024x768"]
            script = wrk_script(tmp, "paired", paired_token, path, ctype, bodies)
            run_wrk(port, script, 8, 2, proc)  # warm-up
            results[PAIRED] = {}
            for c in PAIRED_CLIENTS:
                results[PAIRED][c] = run_wrk(port, script, c, args.duration, proc)
                print(PAIRED, c, results[PAIRED][c], flush=True)

    with tempfile.TemporaryDirectory(prefix="hashsvc-floor-") as floor_tmp:
        path, ctype, _ = scenarios["single"]  # the same requests as scenario (a)
        floor = http_floor(wrk_script(Path(floor_tmp), "floor", token, path, ctype, singles))
    refs = {
        "http_floor": floor,
        "hash": hashing_reference(photos),
        "match_cpu": match_reference(data_dir, photos),
        "match_cpu_paired": match_reference(paired_dir, photos),
        "search": search_reference(data_dir, batch_codes[:2000]),
        "load_start": load_start,
        "paced": {**paced, "delay_ms": PACED_DELAY_MS},
    }
    LAST.write_text(
        json.dumps(
            {"results": results, "refs": refs, "photos": len(photos), "load": os.getloadavg()[0]}
        )
    )
    report = render(args, results, refs, len(photos))
    save(report)
    print(report)


def save(report: str) -> None:
    """Newest run first, earlier runs kept below it: on a shared box one run says little,
    the spread across runs says more."""
    marker = "\n## Run of "
    earlier = ""
    if RESULTS.exists():
        text = RESULTS.read_text()
        if marker in text:
            earlier = text[text.index(marker) :]
    RESULTS.write_text(HEADER + report + earlier)


def render(args, results, refs, n_photos: int) -> str:  # type: ignore[no-untyped-def]
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    load = refs.get("load_start", os.getloadavg()[0])
    lines = [
        "",
        f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average at the start {load:.1f} (the box is shared).",
        "Server: `hashsvc serve --workers 2` (uvicorn + httptools, one send per response "
        "+ uvloop) on 127.0.0.1, index of "
        f"{args.entries:,} PDQ + {args.entries:,} pHash random entries in one list; "
        "client: wrk (-t min(c,2)) on the same 2 cores, "
        f"{args.duration} s per cell, keep-alive connections.",
        "",
        f"Command: `.venv/bin/python bench/api.py --duration {args.duration} "
        f"--entries {args.entries}`",
        "",
        "Server CPU ms/req is the CPU time of the server's processes per completed request:",
        "it does not depend on how busy the shared box is, unlike req/s and latency. Load is",
        "the 1-minute load average at the end of each cell (2 means both cores busy).",
        "",
        "| scenario | clients | req/s (2xx) | hashes/s | p50 ms | p99 ms | server CPU ms/req |"
        " load | non-2xx (503 = shed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_req = {"single": 1, "batch1000": 1000, "jpeg1024x768": 1, PAIRED: 1}
    for name, cells in results.items():
        for c, r in cells.items():
            lines.append(
                f"| {name} | {c} | {r['rps']:,.0f} | {r['rps'] * per_req[name]:,.0f} | "
                f"{r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_ms']:.2f} | {r['load']:.1f} | "
                f"{int(r['errors'])} |"
            )
    best_jpeg = max(r["rps"] for r in results["jpeg1024x768"].values())
    jpeg_cpu = min(r["cpu_ms"] for r in results["jpeg1024x768"].values())
    single_cpu = min(r["cpu_ms"] for r in results["single"].values())
    hash_rps, hash_cpu = refs["hash"]
    search_rps, search_cpu = refs["search"]
    lines += [
        "",
        "References measured by the same script (same box, same load):",
        f"- hashing alone (`Matcher.hash_upload`: fast decode, 8 dihedral PDQ, border trim,"
        f" pHash, MD5, SHA-256; {n_photos} 1024x768 JPEGs q90) on 2 processes, no HTTP:"
        f" {hash_rps:,.0f} uploads/s, {hash_cpu:.1f} CPU ms per upload. The API's best:"
        f" {best_jpeg:,.0f} uploads/s ({best_jpeg / hash_rps:.0%}), {jpeg_cpu:.1f} CPU ms per"
        f" upload ({hash_cpu / jpeg_cpu:.0%} of the hashing-only rate by CPU).",
        f"- hashing + matching in process (`Matcher.match_media`, 1M + 1M index, 1 thread):"
        f" {refs['match_cpu']:.1f} CPU ms per upload, against the API's {jpeg_cpu:.1f} (the"
        " difference is HTTP, threads and the server's other work, plus run-to-run noise)"
        + (
            f"; on the paired list {refs['match_cpu_paired']:.1f}."
            if "match_cpu_paired" in refs
            else "."
        ),
        f"- search core, `BinaryIndex.search_batch` at 1M PDQ, r=31, 1 thread: "
        f"{search_rps:,.0f} hashes/s ({search_cpu:.3f} CPU ms per hash); 2 cores cap scenario"
        f" (b) near {2 * 1000 / search_cpu:,.0f} hashes/s whatever the API does.",
        f"- single lookups: {single_cpu:.2f} server CPU ms per request: on 2 idle cores"
        f" (wrk needs some) at most ~{2000 / single_cpu:,.0f} req/s.",
    ]
    floor = refs.get("http_floor")
    if floor:
        lines.append(
            f"- HTTP floor: scenario (a)'s load at 32 clients against a do-nothing ASGI app"
            f" (bench/noop_app.py) on the same uvicorn settings: {floor['rps']:,.0f} req/s,"
            f" p50 {floor['p50']:.2f} ms, p99 {floor['p99']:.2f} ms, {floor['cpu_ms']:.3f}"
            f" server CPU ms per request. A lookup's own work is what (a) adds to this."
        )
    a32 = results["single"][32]
    paced = refs.get("paced")  # absent in runs before it was measured
    best_b = max(r["rps"] for r in results["batch1000"].values()) * 1000
    lines += [
        "",
        "Against the issue's targets:",
        f"- (a) >= 2,000 req/s with p99 <= 15 ms at 32 clients: {a32['rps']:,.0f} req/s,"
        f" p99 {a32['p99']:.1f} ms flat out."
        + (
            f" Paced instead (each of the 32 connections waits {paced['delay_ms']} ms after"
            f" every response): {paced['rps']:,.0f} req/s, p50 {paced['p50']:.2f} ms, p99"
            f" {paced['p99']:.2f} ms, {paced['cpu_ms']:.2f} server CPU ms/req. wrk paces"
            " in a closed loop, so a stalled response also delays the next request rather"
            " than being counted late (coordinated omission): a lower bound of the tail at"
            " that rate."
            if paced
            else ""
        ),
        f"- (b) >= 50,000 hashes/s: best {best_b:,.0f} hashes/s; the search core alone caps"
        f" 2 cores near {2 * 1000 / search_cpu:,.0f}.",
        f"- (c) within 80% of the 2-core hashing throughput: best {best_jpeg:,.0f} uploads/s vs"
        f" {hash_rps:,.0f} ({best_jpeg / hash_rps:.0%}); by CPU per upload"
        f" {hash_cpu / jpeg_cpu:.0%}.",
    ]
    if PAIRED in results:
        paired_best = max(r["rps"] for r in results[PAIRED].values())
        paired_cpu = min(r["cpu_ms"] for r in results[PAIRED].values())
        lines.append(
            f"  On the paired list (every pHash entry has a PDQ sibling, so every upload also"
            f" runs corroboration's pHash scan): best {paired_best:,.0f} uploads/s"
            f" ({paired_best / hash_rps:.0%}); by CPU per upload {hash_cpu / paired_cpu:.0%}."
        )
    lines += [
        "",
        "How to read it:",
        "- The box is shared with other engineers' benchmarks: with the load average above 2",
        "  the server gets a fraction of the 2 cores, so req/s and latency understate what an",
        "  idle box gives; server CPU ms/req does not (but contention inflates it too, by",
        "  cache and frequency effects). Ideal req/s on an idle box ~= 2 cores / CPU per req.",
        "- (a) is one PDQ lookup per request (1M-entry MIH search ~0.04-0.1 ms on inline",
        "  tables, auth, audit buffer, metrics, access log, JSON): run on the event loop. The",
        "  HTTP floor line is what uvicorn and wrk cost with no work at all. Flat out, p50 is",
        "  32 / req/s (a closed loop); the paced line is the latency at the target's rate.",
        "- (b) is bounded by the search core: a 1,000-hash batch is searched table by table",
        "  in one sorted sweep (search/sweep.py; the reference line runs the same path), and",
        "  hashes with nothing near are answered column-wise (`Matcher.match_pdq_codes`), so",
        "  JSON, pydantic and HTTP are the rest of the server's CPU per batch.",
        "- (c) matches each upload with its 8 rotations/flips and border-trimmed variants",
        "  (9+ searches at 1M) on top of hashing, so it cannot reach the hashing-only",
        "  reference. The issue's index has no external ids, so no list can corroborate",
        "  (`Store.corroborable_lists`) and pHash is searched at the list's threshold. The",
        "  paired list is n enrolled items (PDQ and pHash sharing an id): there each upload",
        "  also scans every pHash code at corroboration's radius (16 bits) and looks up the",
        "  PDQ siblings of the ~50 random pHash entries that close (SQLite).",
        "- With 128 connections and slow requests, cells can show few completions within the",
        "  window: wrk counts only requests that finish inside it.",
        "- 128 connections exceed the overload bound (`HASHSVC_MAX_IN_FLIGHT`, 64 per worker):",
        "  the excess is answered 503 at once (RELIABILITY.md); req/s and CPU per request",
        "  count answered (2xx) requests only, latencies are wrk's over all of them.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
