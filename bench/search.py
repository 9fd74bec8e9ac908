"""Benchmark of the search core against FAISS, side by side, in one run.

    .venv/bin/python bench/search.py                               # quick: N = 100,000
    .venv/bin/python bench/search.py --sizes 1000000,10000000      # the real thing

For every N x data set (uniform, clustered) x code kind (PDQ-256 r=31, pHash-64 r=10):

* ``ours``        hashsvc.search.BinaryIndex with the default ``auto`` rule (MIH at these N;
                  the inline bucket layout where it fits its memory bound, see mih.py)
* ``ours-rows``   the same with ``layout="rows"`` (the MIH layout ``auto`` used before the
                  inline one; run where ``auto`` picks inline, to show the trade side by side)
* ``ours-flat``   the same with ``strategy="flat"`` (pure scan; pHash only by default: the
                  check that our scan runs at the memory-bandwidth floor)
* ``faiss-flat``  faiss.IndexBinaryFlat range_search (radius + 1: FAISS's radius is strict)
* ``faiss-mh``    faiss.IndexBinaryMultiHash(256, 16, 16) nflip=1 (python-threatexchange's
                  setting; exact for r <= 31), and (64, 4, 16) nflip=2 for pHash (exact r <= 11)

Each engine runs in its own subprocess, so its peak RSS (VmHWM) is its own. Ours is
built in one process, saved, and then loaded and queried in a fresh process (load time and
RSS are those of a serving process). Every engine's results on the query set are digested
and compared with FAISS flat's: a mismatch aborts the run (exactness is asserted while
benchmarking). Data sets are generated once into bench/_data/ (git-ignored).

Queries: 200 by default, half of them planted near-duplicates (a stored code with 0..r
flipped bits), half fresh codes from the same distribution. Single-query latency runs one
query at a time on one thread (FAISS: omp_set_num_threads(1)); batch throughput runs all
queries of a second set (1,000 by default: an API batch, the size our table-major sweep
serves) in one call with 1 and 2 threads: the median of 3 calls after a warm-up call, or
the first call alone when it takes 2 s or more (`_timed_batch`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss is ever imported

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "_data"
RESULTS = ROOT / "bench" / "RESULTS-search.md"
RADIUS = {256: 31, 64: 10}
SEED = 20241128


# ----------------------------------------------------------------------------- data


def _gen_clustered(n: int, bits: int, seed: int):  # type: ignore[no-untyped-def]
    """Codes around n/2000 centres (at least 50) with 10-40 flipped bits (numba: 10M in ~1 s)."""
    import numpy as np
    from numba import njit

    @njit(cache=False)
    def gen(centres, which, nflip, pos, out):  # type: ignore[no-untyped-def]
        k = 0
        for i in range(out.shape[0]):
            out[i] = centres[which[i]]
            for _ in range(nflip[i]):
                p = pos[k]
                k += 1
                out[i, p >> 3] ^= np.uint8(1 << (p & 7))
        return out

    rng = np.random.default_rng(seed)
    nb = bits // 8
    nc = max(50, n // 2000)
    centres = rng.integers(0, 256, size=(nc, nb), dtype=np.uint8)
    which = rng.integers(0, nc, size=n)
    lo, hi = (10, 40) if bits == 256 else (2, 10)
    nflip = rng.integers(lo, hi + 1, size=n)
    pos = rng.integers(0, bits, size=int(nflip.sum()))  # repeats may cancel: fine
    return gen(centres, which, nflip, pos, np.empty((n, nb), np.uint8))


def _flip(code, k, rng):  # type: ignore[no-untyped-def]
    import numpy as np

    b = np.unpackbits(code)
    p = rng.choice(b.size, size=k, replace=False)
    b[p] ^= 1
    return np.packbits(b)


def data_paths(n: int, bits: int, kind: str) -> tuple[Path, Path]:
    stem = f"{kind}-{bits}-{n}"
    return DATA / f"{stem}.codes.npy", DATA / f"{stem}.queries.npy"


def batch_path(n: int, bits: int, kind: str) -> Path:
    """The batch-throughput query set (another draw of the same mix)."""
    return DATA / f"{kind}-{bits}-{n}.batch-queries.npy"


def _make_queries(codes, kind: str, nq: int, rng):  # type: ignore[no-untyped-def]
    """``nq`` queries: even rows a stored code with 0..r bits flipped, odd rows fresh codes
    from the same distribution (clustered: other members of the same clusters)."""
    import numpy as np

    n, nb = codes.shape
    bits = nb * 8
    if kind == "uniform":
        fresh = rng.integers(0, 256, size=(nq - nq // 2, nb), dtype=np.uint8)
    else:
        fresh = _gen_clustered(n, bits, SEED + n + bits)[rng.integers(0, n, nq - nq // 2)]
        fresh = np.array([_flip(c, 3, rng) for c in fresh], np.uint8)
    r = RADIUS[bits]
    near = [_flip(codes[rng.integers(n)], int(rng.integers(0, r + 1)), rng) for _ in range(nq // 2)]
    queries = np.empty((nq, nb), np.uint8)
    queries[0::2][: len(near)] = near
    queries[1::2][: len(fresh)] = fresh
    return queries


def ensure_data(n: int, bits: int, kind: str, nq: int, nbatch: int) -> None:
    import numpy as np

    cpath, qpath = data_paths(n, bits, kind)
    bpath = batch_path(n, bits, kind)
    have = cpath.exists() and qpath.exists() and len(np.load(qpath, mmap_mode="r")) == nq
    if have and bpath.exists() and len(np.load(bpath, mmap_mode="r")) == nbatch:
        return
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + n + bits + (kind == "clustered"))
    if have:
        codes = np.load(cpath)
    else:
        if kind == "uniform":
            codes = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
        else:
            codes = _gen_clustered(n, bits, SEED + n + bits)
        np.save(cpath, codes)
        np.save(qpath, _make_queries(codes, kind, nq, rng))
    batch_rng = np.random.default_rng(SEED + 7 * n + bits + (kind == "clustered"))
    np.save(bpath, _make_queries(codes, kind, nbatch, batch_rng))


# ----------------------------------------------------------------------------- workers


def _peak_rss_mb() -> float:
    """Peak RSS of this process's own address space (VmHWM).

    Not ``ru_maxrss``: Linux carries it over fork+exec, so a worker would inherit the
    driver's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _digest(lims, ids, dists) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    import numpy as np

    h = hashlib.sha256()
    for j in range(len(lims) - 1):
        a, b = int(lims[j]), int(lims[j + 1])
        pairs = sorted(
            zip(
                np.asarray(ids[a:b], np.int64).tolist(),
                np.asarray(dists[a:b]).astype(np.int64).tolist(),
                strict=True,
            )
        )
        h.update(repr(pairs).encode())
    return h.hexdigest(), int(lims[-1])


def _lat(times: list[float]) -> tuple[float, float]:
    import numpy as np

    t = np.array(times) * 1e3
    return float(np.percentile(t, 50)), float(np.percentile(t, 99))


def _single_loop(fn, queries) -> tuple[list[float], list]:  # type: ignore[no-untyped-def]
    times, res = [], []
    for q in queries:
        t0 = time.perf_counter()
        r = fn(q)
        times.append(time.perf_counter() - t0)
        res.append(r)
    return times, res


def _to_csr(res):  # type: ignore[no-untyped-def]
    import numpy as np

    lims = np.zeros(len(res) + 1, np.int64)
    lims[1:] = np.cumsum([len(r[0]) for r in res])
    ids = np.concatenate([np.asarray(r[0], np.int64) for r in res]) if res else np.empty(0)
    d = np.concatenate([np.asarray(r[1], np.int64) for r in res]) if res else np.empty(0)
    return lims, ids, d


def worker_build(args: argparse.Namespace) -> dict:
    import numpy as np

    from hashsvc.search import BinaryIndex, warmup

    warmup()
    cpath, _ = data_paths(args.n, args.bits, args.kind)
    codes = np.load(cpath)
    ids = np.arange(len(codes), dtype=np.int64)
    t0 = time.perf_counter()
    idx = BinaryIndex(args.bits, strategy=args.strategy, layout=args.layout)
    idx.add(ids, codes)
    build = time.perf_counter() - t0
    del codes
    t0 = time.perf_counter()
    idx.save(Path(args.index_dir), store_version="bench")
    save = time.perf_counter() - t0
    return {
        "build_s": build,
        "save_s": save,
        "build_peak_rss_mb": _peak_rss_mb(),
        "index_mb": idx.memory_bytes() / 2**20,
        "path": idx.path_for(RADIUS[args.bits]),
        "num_tables": idx._state.main.tables.num_tables if idx.uses_mih else 0,
        "layout": idx._state.main.tables.layout if idx.uses_mih else "",
    }


def _timed_batch(call):  # type: ignore[no-untyped-def]
    """(seconds, result) of one batch call: the first call if it took 2 s or more (its
    first-touch costs are then noise: FAISS at 10M runs 1,000 queries in 20-80 s), else
    the median of 3 more calls. A single call after a 50-query warm-up, which takes the
    query-by-query path, paid the sweep's first touch of the mmapped tables: 74 us per
    query at 1M PDQ (the 21:19 run) against 23 us warm in one process."""
    t0 = time.perf_counter()
    result = call()
    first = time.perf_counter() - t0
    if first >= 2.0:
        return first, result
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = call()
        rounds.append(time.perf_counter() - t0)
    return statistics.median(rounds), result


def worker_ours(args: argparse.Namespace) -> dict:
    import numpy as np

    from hashsvc.search import BinaryIndex, warmup
    from hashsvc.search import kernels as K

    t0 = time.perf_counter()
    warmup()
    jit = time.perf_counter() - t0
    _, qpath = data_paths(args.n, args.bits, args.kind)
    queries = np.load(qpath)
    r = RADIUS[args.bits]
    t0 = time.perf_counter()
    idx = BinaryIndex.load(
        Path(args.index_dir), args.bits, strategy=args.strategy, layout=args.layout
    )
    load = time.perf_counter() - t0
    for q in queries[:10]:
        idx.search(q, r)
    times, res = _single_loop(lambda q: idx.search(q, r), queries)
    p50, p99 = _lat(times)
    digest, hits = _digest(*_to_csr(res))
    # batch throughput: another query set in one call (1,000 by default, an API batch:
    # the size that takes the table-major sweep), timed by `_timed_batch`
    batch = np.load(batch_path(args.n, args.bits, args.kind))
    qps = {}
    batch_digest = ""
    for th in (1, 2):
        seconds, (lims, bi, bd) = _timed_batch(lambda th=th: idx.search_batch(batch, r, threads=th))
        qps[th] = len(batch) / seconds
        got = _digest(lims, bi, bd)[0]
        assert batch_digest in ("", got), "batch results differ by thread count"
        batch_digest = got
    single_lims, single_ids, single_d = idx.search_batch(queries, r)
    assert _digest(single_lims, single_ids, single_d)[0] == digest, "batch != single"
    # memory-bandwidth floor: one streaming pass over the main segment's codes
    codes = idx._state.main.codes.reshape(-1)
    floor = []
    for _ in range(5):
        t0 = time.perf_counter()
        K.flat_batch(
            codes,
            idx.words,
            len(idx),
            idx._state.main.ids,
            idx._state.main.dead,
            np.zeros((1, idx.words), np.uint64),
            -1,
        )  # radius -1: pure scan, no hits
        floor.append(time.perf_counter() - t0)
    return {
        "load_s": load,
        "jit_s": jit,
        "p50_ms": p50,
        "p99_ms": p99,
        "qps1": qps[1],
        "qps2": qps[2],
        "peak_rss_mb": _peak_rss_mb(),
        "digest": digest + batch_digest,
        "hits": hits,
        "scan_floor_ms": min(floor) * 1e3,
        "path": idx.path_for(r),
    }


def worker_faiss(args: argparse.Namespace) -> dict:
    import faiss
    import numpy as np

    cpath, qpath = data_paths(args.n, args.bits, args.kind)
    codes = np.load(cpath)
    queries = np.load(qpath)
    r = RADIUS[args.bits]
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    if args.engine == "faiss-flat":
        index = faiss.IndexBinaryFlat(args.bits)
    elif args.bits == 256:
        index = faiss.IndexBinaryMultiHash(256, 16, 16)
        index.nflip = 1
    else:
        index = faiss.IndexBinaryMultiHash(64, 4, 16)
        index.nflip = 2
    index.add(codes)
    build = time.perf_counter() - t0
    del codes

    def one(q):  # type: ignore[no-untyped-def]
        lims, D, labels = index.range_search(q[None, :], r + 1)
        return labels, D

    for q in queries[:5]:
        one(q)
    times, res = _single_loop(one, queries)
    p50, p99 = _lat(times)
    digest, hits = _digest(*_to_csr(res))
    lims, D, labels = index.range_search(queries, r + 1)
    assert _digest(lims, labels, D)[0] == digest, "batch != single"
    batch = np.load(batch_path(args.n, args.bits, args.kind))
    qps = {}
    batch_digest = ""
    for th in (1, 2):
        faiss.omp_set_num_threads(th)
        seconds, (lims, D, labels) = _timed_batch(lambda: index.range_search(batch, r + 1))
        qps[th] = len(batch) / seconds
        got = _digest(lims, labels, D)[0]
        assert batch_digest in ("", got), "batch results differ by thread count"
        batch_digest = got
    return {
        "build_s": build,
        "p50_ms": p50,
        "p99_ms": p99,
        "qps1": qps[1],
        "qps2": qps[2],
        "peak_rss_mb": _peak_rss_mb(),
        "digest": digest + batch_digest,
        "hits": hits,
    }


# ----------------------------------------------------------------------------- driver


def run_worker(argv: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *argv]
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.python_version()}"


def fmt(v: object, spec: str = ".2f") -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--kinds", default="uniform,clustered")
    ap.add_argument("--bits", default="256,64")
    ap.add_argument("--engines", default="ours,ours-rows,ours-flat,faiss-flat,faiss-mh")
    ap.add_argument("--flat-bits", default="64", help="code sizes ours-flat runs for")
    ap.add_argument("--queries", type=int, default=200, help="single-query latency set")
    ap.add_argument(
        "--batch-queries", type=int, default=1000, help="batch throughput set (one call)"
    )
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--index-dir", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.bits = int(args.bits)
        if args.engine == "data":
            ensure_data(args.n, args.bits, args.kind, args.queries, args.batch_queries)
            print(json.dumps({}))
            return
        fn = {"build": worker_build, "ours": worker_ours}.get(args.engine, worker_faiss)
        print(json.dumps(fn(args)))
        return

    command = "bench/search.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load_before = os.getloadavg()
    rows = []
    raw = []
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    for n in sizes:
        for kind in args.kinds.split(","):
            for bits in (int(b) for b in args.bits.split(",")):
                base = ["--n", str(n), "--kind", kind, "--bits", str(bits)]
                sets = ["--queries", str(args.queries), "--batch-queries", str(args.batch_queries)]
                gen = run_worker(["--engine", "data", *sets, *base], args.timeout)
                if "error" in gen:
                    raise SystemExit(f"data generation failed: {gen['error']}")
                res: dict[str, dict] = {}
                flat_bits = [int(b) for b in args.flat_bits.split(",") if b]
                these = [e for e in engines if e != "ours-flat" or bits in flat_bits]
                for eng in these:
                    t0 = time.perf_counter()
                    if eng in ("ours", "ours-flat", "ours-rows"):
                        if eng == "ours-rows" and res.get("ours", {}).get("layout") == "rows":
                            continue  # auto already built the rows layout: same engine twice
                        strat = "flat" if eng == "ours-flat" else "auto"
                        layout = "rows" if eng == "ours-rows" else "auto"
                        d = DATA / f"index-{kind}-{bits}-{n}-{strat}-{layout}"
                        extra = ["--index-dir", str(d), "--strategy", strat, "--layout", layout]
                        extra += base
                        b = run_worker(["--engine", "build", *extra], args.timeout)
                        o = (
                            run_worker(["--engine", "ours", *extra], args.timeout)
                            if "error" not in b
                            else b
                        )
                        res[eng] = {**b, **o}
                    else:
                        res[eng] = run_worker(["--engine", eng, *base], args.timeout)
                    res[eng]["wall_s"] = time.perf_counter() - t0
                    print(
                        f"# {n} {kind} {bits} {eng}: {json.dumps(res[eng])}",
                        file=sys.stderr,
                        flush=True,
                    )
                ref = res.get("faiss-flat", {})
                these = [e for e in these if e in res]
                for eng in these:
                    r = res[eng]
                    exact = "-"
                    if "digest" in r and "digest" in ref:
                        exact = "yes" if r["digest"] == ref["digest"] else "NO"
                    ratio = (
                        (r["p50_ms"] / ref["p50_ms"]) if "p50_ms" in r and "p50_ms" in ref else None
                    )
                    raw.append({"n": n, "kind": kind, "bits": bits, "engine": eng, **r})
                    rows.append(
                        [
                            f"{n:,}",
                            kind,
                            f"{bits} r<={RADIUS[bits]}",
                            eng
                            + (
                                f" ({r['path']}"
                                + (f", {r['layout']}" if r.get("layout") else "")
                                + (f", m={r['num_tables']}" if r.get("num_tables") else "")
                                + ")"
                                if eng.startswith("ours") and "path" in r
                                else ""
                            ),
                            fmt(r.get("build_s")),
                            fmt(r.get("load_s")),
                            fmt(r.get("p50_ms"), ".3f"),
                            fmt(r.get("p99_ms"), ".3f"),
                            fmt(r.get("qps1"), ",.0f"),
                            fmt(r.get("qps2"), ",.0f"),
                            fmt(r.get("peak_rss_mb"), ",.0f"),
                            fmt(ratio, ".3f"),
                            fmt(r.get("scan_floor_ms"), ".2f"),
                            fmt(r.get("hits"), "d"),
                            exact,
                            r.get("error", ""),
                        ]
                    )
                    if exact == "NO":
                        raise SystemExit(
                            f"EXACTNESS FAILURE: {eng} != faiss-flat at {n} {kind} {bits}"
                        )
    head = [
        "N",
        "data",
        "code",
        "engine",
        "build s",
        "load s",
        "p50 ms",
        "p99 ms",
        "batch q/s 1T",
        "batch q/s 2T",
        "peak RSS MB",
        "p50 / FAISS flat",
        "scan floor ms",
        "hits",
        "exact",
        "note",
    ]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(
        [
            "# Search core benchmark (bench/search.py)",
            "",
            f"Machine: {machine()}. "
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average (1 min) "
            f"at start / end: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
            "(other work on the box inflates absolute times; ratios hold better).",
            f"Command: `.venv/bin/python {command}`",
            "",
            " ".join(
                [
                    f"{args.queries} queries per row for single-query latency (one thread),",
                    f"and another {args.batch_queries} for batch throughput (all in one call,",
                    "1 and 2 threads, median of 3 calls after a warm-up call, or the first",
                    "call alone when it took 2 s or more); each set half",
                    "planted near-duplicates. `exact` covers",
                    "both sets.",
                    "`build s` for ours = bulk add incl. MIH tables; `load s` = BinaryIndex.load",
                    "in a fresh process (checksum + parse + tables, JIT cache already warm).",
                    "Peak RSS = VmHWM of that engine's own process (ours: the serving process",
                    "that loaded the saved index; FAISS: the process that built it from the raw",
                    "codes, which it also held). `scan floor ms` = one pass of our scan kernel",
                    "over the code array with no possible hit (the memory-bandwidth floor of a",
                    "brute-force scan, measured in the same process). `exact` = result digest",
                    "equal to FAISS flat's.",
                ]
            ),
            "",
            *table,
            "",
        ]
    )
    print(text)
    out = Path(args.out)
    # Only the block between the markers is regenerated; hand-written analysis around it
    # in the results file survives re-runs.
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    block = f"{start}\n{text}{end}\n"
    old = out.read_text() if out.exists() else ""
    if start in old and end in old:
        pre, rest = old.split(start, 1)
        post = rest.split(end, 1)[1].lstrip("\n")
        out.write_text(pre + block + post)
    else:
        out.write_text(block + old)
    (DATA / "last-search-bench.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
