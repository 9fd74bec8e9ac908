"""Load soak (issue 8): a real `hashsvc serve --workers 2` under sustained load at 80% of
its measured capacity, then a burst far over it.

    make soak   # 10 minutes of load (HASHSVC_LONG=1)
    make test   # the same at 30 s

The load comes from tests/reliability/loadgen.py in its own process (no shared GIL),
open-loop at a fixed rate, mixing the traffic the service sees: JPEG uploads to
`POST /v1/match`, single-hash lookups on `POST /v1/match/hashes`, and list updates with
the admin key (`POST /v1/lists/soak/entries`, `PATCH .../entries/{id}`). The rate is 80%
of the capacity a short closed-loop ramp measures first, on this box, at this moment
(the box is shared: a fixed figure would be an overload on a busy day and idle on a
quiet one). Promises checked:

- steady load: every request answered 2xx: no 5xx, no timeout, no refused connection;
- memory: the server's RSS (supervisor + workers) sampled each second does not grow
  from the first third of the soak to the last beyond a small bound;
- latency: the p99 of the last window is not much worse than the first's;
- privacy: TMPDIR never holds anything but the Prometheus sample files (no upload bytes);
- overload: a burst at 3x capacity is answered 503 + Retry-After within milliseconds for
  what does not fit (overload shedding, limits.py), what is accepted waits a bounded time
  (latency levels off instead of climbing through the burst), and the server serves
  normally right after.

A shared box: each second the test also measures the CPU that *other* tenants use. When
they use more than CONTENDED_CORES, capacity measured a minute earlier no longer holds,
so the promises stated against it (no 503 at 80%, p99 stability, absolute shed latency)
are reported but not judged, and the test says so (pytest skip with the figures); the
others (no error but 503, memory, TMPDIR, shedding happens, latency levels off,
recovery) are judged on any box.

All figures are printed (`-s`) and written to soak-report.json beside the server log.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from hashsvc import hashing
from hashsvc.hashlist import ListEntry
from hashsvc.signals import Hash, SignalType
from hashsvc.store import Store
from tests.api.conftest import Env, build_env, enrolled_bytes, upload_bytes
from tests.api.live import LiveServer, live_server
from tests.conftest import encode, smooth_image
from tests.reliability.conftest import LONG, scaled

SOAK_S = scaled(30, 600)
WINDOW_S = scaled(5, 60)  # p99 per window: 6 windows short, 10 long
RAMP_LEVELS = (16, 48)  # closed-loop connections (< the shed bound of 2 x 64); both saturate
RAMP_LEVEL_S = scaled(2.5, 8)
LOAD_FRACTION = 0.8
BURST_FACTOR = 3
BURST_S = scaled(3, 10)
RECOVERY_S = scaled(2, 10)
MAX_IN_FLIGHT = 64  # per worker, the shipped default; the ramp stays below WORKERS x this
WORKERS = 2
# other tenants' mean CPU (cores) above which latency and shedding figures measure the
# neighbours as much as the server (see _not_ours); a dedicated CI runner is near 0
CONTENDED_CORES = 0.3
# share of requests by kind: list updates are rare in production but every one is a
# durable write plus an index refresh in both workers, so they are here at a few percent
MIX = {"upload": 0.30, "lookup": 0.66, "add": 0.02, "patch": 0.02}
GENERATOR = Path(__file__).with_name("loadgen.py")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(scaled(240, 1500)))]


# -- the server and the requests ------------------------------------------------------


@dataclass
class Soak:
    """The running server, the prebuilt requests, and what the tests measured so far
    (tests run in file order: the capacity the first measures sets the later rates)."""

    server: LiveServer
    env: Env
    root: Path
    kinds: dict[str, list[Path]]
    capacity: float = 0.0
    ramp_sampler: Sampler | None = None
    report: dict[str, Any] = field(default_factory=dict)


def _raw(method: str, path: str, token: str, ctype: str, body: bytes) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _random_pdq(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def _build_requests(env: Env, root: Path, patch_ids: Sequence[int]) -> dict[str, list[Path]]:
    """Raw requests by kind, one file each. Uploads are generated images, a few of them
    re-encodings of listed ones (block/report verdicts write reports); lookups are
    random PDQ hashes (allow) plus a listed one; adds draw from a fixed pool of new
    hashes (the first add of each writes an entry, later ones count duplicates), so
    the index stays about the same size however long the soak runs."""
    rng = random.Random(8)
    match, admin = env.tokens["match"], env.tokens["admin"]
    listed = hashing.hash_media(enrolled_bytes(1)).pdq
    assert listed is not None
    bodies: dict[str, list[bytes]] = {
        "upload": [
            _raw("POST", "/v1/match", match, "image/jpeg", encode(smooth_image(s, (640, 480))))
            for s in range(100, 140)
        ]
        + [_raw("POST", "/v1/match", match, "image/jpeg", upload_bytes(s)) for s in (1, 2, 3)],
        "lookup": [
            _raw("POST", "/v1/match/hashes", match, "application/json", _json({"pdq": h}))
            for h in [_random_pdq(rng) for _ in range(200)] + [listed.hex]
        ],
        "add": [
            _raw(
                "POST",
                "/v1/lists/soak/entries",
                admin,
                "application/json",
                _json({"entries": [{"signal_type": "pdq", "hash": _random_pdq(rng)}]}),
            )
            for _ in range(400)
        ],
        "patch": [
            _raw(
                "PATCH",
                f"/v1/lists/soak/entries/{i}",
                admin,
                "application/json",
                _json({"enabled": enabled}),
            )
            for i in patch_ids
            for enabled in (False, True)
        ],
    }
    kinds: dict[str, list[Path]] = {}
    for kind, raws in bodies.items():
        folder = root / "requests" / kind
        folder.mkdir(parents=True)
        kinds[kind] = []
        for n, raw in enumerate(raws):
            path = folder / f"{n}.http"
            path.write_bytes(raw)
            kinds[kind].append(path)
    return kinds


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    root = tmp_path_factory.mktemp("soak")
    env = build_env(root / "data")
    rng = random.Random(9)
    with Store.open(env.data_dir / "hashsvc.db") as store:  # the list admin traffic edits
        store.create_list("soak", "report", description="soak test: random hashes")
        store.import_entries(
            "soak",
            [ListEntry(Hash(SignalType.PDQ, rng.randbytes(32))) for _ in range(50)],
            source_name="soak",
            file_sha256="",
        )
        patch_ids = [e.id for e in store.entries("soak")]
    kinds = _build_requests(env, root, patch_ids)
    settings = {
        "HASHSVC_RATE_LIMIT_PER_MINUTE": "0",  # capacity, not the per-key limit, is tested
        "HASHSVC_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        # as bench/api.py: 2 workers x 2 hashing threads for 2 cores (the default 4 makes
        # 8 threads contend for 2 cores and for each worker's GIL with its event loop)
        "HASHSVC_HASH_CONCURRENCY": "2",
    }
    with live_server(root, env.data_dir, workers=WORKERS, env=settings) as server:
        yield Soak(server, env, root, kinds)


# -- running the generator --------------------------------------------------------------


@dataclass
class Run:
    """One generator run: rows of [scheduled offset s, kind, status, latency ms, level]."""

    kinds: list[str]
    rows: list[list[float]]
    peak_conns: int
    errors: dict[str, int]

    def statuses(self) -> Counter[int]:
        return Counter(int(r[2]) for r in self.rows)

    def by_kind(self) -> dict[str, int]:
        counts = Counter(int(r[1]) for r in self.rows)
        return {k: counts.get(i, 0) for i, k in enumerate(self.kinds)}


def _generate(soak: Soak, name: str, timeout_s: float, **cfg: Any) -> Run:
    """Run loadgen.py to completion (bounded: it stops by itself; killed past the bound)."""
    config = {
        "port": soak.server.port,
        "kinds": {k: {"files": [str(p) for p in soak.kinds[k]], "weight": MIX[k]} for k in MIX},
        "timeout": 30,
        **cfg,
    }
    cfg_path, out = soak.root / f"{name}.json", soak.root / f"{name}.out.json"
    cfg_path.write_text(json.dumps(config))
    subprocess.run(
        [sys.executable, str(GENERATOR), str(cfg_path), str(out)], check=True, timeout=timeout_s
    )
    data = json.loads(out.read_text())
    return Run(data["kinds"], data["rows"], data["peak_conns"], data["errors"])


def _pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- memory and TMPDIR, sampled each second -------------------------------------------


class Sampler(threading.Thread):
    """Each second: the RSS of the server's process tree; any file in its TMPDIR that is
    not a Prometheus sample file (an upload spooled to disk would be one); and the CPU
    the box spent on *other* tenants' work (busy cores minus this test's process tree:
    the server, the generator and pytest), since the box is shared and a neighbour's job
    takes capacity from the server mid-run."""

    def __init__(self, server: LiveServer, limit_s: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.server = server
        self.limit_s = limit_s  # bounded even if the test forgets to stop it
        self.stop = threading.Event()
        self.rss_mib: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.other_cores: list[tuple[float, float]] = []  # (seconds since start, cores)
        self.stray: set[str] = set()

    def run(self) -> None:
        start = time.monotonic()
        root, me = psutil.Process(self.server.proc.pid), psutil.Process()
        prev_ours: dict[int, float] = {}
        prev_busy, prev_t = _busy_seconds(), time.monotonic()
        while not self.stop.is_set() and time.monotonic() - start < self.limit_s:
            total = 0
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
            now = time.monotonic()
            self.rss_mib.append((now - start, total / 2**20))
            ours: dict[int, float] = {}
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    ours[p.pid] = t.user + t.system
            busy = _busy_seconds()
            spent = sum(v - prev_ours.get(pid, 0.0) for pid, v in ours.items())
            if prev_ours and now > prev_t:
                other = max(0.0, (busy - prev_busy - spent) / (now - prev_t))
                self.other_cores.append((now - start, other))
            prev_ours, prev_busy, prev_t = ours, busy, now
            for f in self.server.tmpdir.rglob("*"):
                rel = f.relative_to(self.server.tmpdir)
                if f.is_file() and not (
                    rel.parts[0].startswith("hashsvc-metrics-") and f.suffix == ".db"
                ):
                    self.stray.add(str(rel))
            self.stop.wait(1.0)

    def other_mean(self, since: float = 0.0, until: float = float("inf")) -> float:
        """Mean cores used by other tenants between two offsets (s) from the start."""
        values = [c for t, c in self.other_cores if since <= t < until]
        return round(statistics.fmean(values), 2) if values else 0.0


@contextmanager
def sampled(server: LiveServer, limit_s: float) -> Iterator[Sampler]:
    sampler = Sampler(server, limit_s)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        sampler.join(5)


def _busy_seconds() -> float:
    """CPU seconds spent in processes (and stolen by the hypervisor) since boot. Interrupt
    time is left out: loopback TCP runs there on behalf of the server and the generator."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "steal", 0.0))


def _not_ours(*samplers: Sampler | None) -> str | None:
    """Why the box was not the server's during these runs (other tenants above
    CONTENDED_CORES on average), or None. On a shared box a neighbour's job takes
    capacity mid-run, so a promise stated against capacity measured a minute earlier
    cannot be judged; it is reported, and the test says it was not checked."""
    used = [s.other_mean() for s in samplers if s is not None]
    if max(used, default=0.0) <= CONTENDED_CORES:
        return None
    return f"other tenants used {used} of {psutil.cpu_count()} cores during the runs"


def _thirds(samples: Sequence[float]) -> tuple[list[float], list[float]]:
    n = max(1, len(samples) // 3)
    return list(samples[:n]), list(samples[-n:])


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope in MiB per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# -- the tests ------------------------------------------------------------------------


def test_capacity_ramp(soak: Soak) -> None:
    """Closed loop at 16 and 48 connections: capacity = the lower level's 2xx/s. Even at
    its limit the server answers every request 2xx (48 < the shed bound of 2 x 64)."""
    with sampled(soak.server, RAMP_LEVEL_S * len(RAMP_LEVELS) + 60) as sampler:
        run = _generate(
            soak,
            "ramp",
            timeout_s=RAMP_LEVEL_S * len(RAMP_LEVELS) + 60,
            mode="ramp",
            levels=list(RAMP_LEVELS),
            level_seconds=RAMP_LEVEL_S,
        )
    per_level = {}
    for level in RAMP_LEVELS:
        rows = [r for r in run.rows if r[4] == level]
        # completed inside the level's window: the last requests of a level end after it
        ok = sum(1 for r in rows if 200 <= r[2] < 300 and r[0] + r[3] / 1000 <= RAMP_LEVEL_S)
        per_level[level] = {
            "rps": round(ok / RAMP_LEVEL_S, 1),
            "p50_ms": round(_pct([r[3] for r in rows], 0.5), 1),
            "p99_ms": round(_pct([r[3] for r in rows], 0.99), 1),
        }
    # both levels are past the knee (closed loop, 16+ connections), so each measures the
    # saturated rate; they differ by noise (a few seconds each on a shared box), and the
    # higher is the luckier: capacity is the lower, so 80% of it is 80% of what holds
    soak.capacity = min(v["rps"] for v in per_level.values())
    soak.ramp_sampler = sampler
    soak.report["ramp"] = {
        "levels": per_level,
        "capacity_rps": soak.capacity,
        "other_tenants_cores": sampler.other_mean(),
    }
    print(f"\nsoak: ramp {json.dumps(soak.report['ramp'])}")
    assert run.statuses().keys() <= set(range(200, 300)), run.statuses()
    assert soak.capacity >= 20, f"capacity {soak.capacity} req/s: the server is not serving"


def test_soak_at_80_percent_of_capacity(soak: Soak) -> None:
    assert soak.capacity > 0, "needs test_capacity_ramp first"
    rate = LOAD_FRACTION * soak.capacity
    with sampled(soak.server, SOAK_S + 120) as sampler:
        run = _generate(
            soak,
            "soak",
            timeout_s=SOAK_S + 90,
            mode="open",
            rate=rate,
            duration=SOAK_S,
            max_conns=256,
            warm_conns=32,
        )

    statuses = run.statuses()
    windows = []
    for w in range(int(SOAK_S // WINDOW_S)):
        lat = [r[3] for r in run.rows if w * WINDOW_S <= r[0] < (w + 1) * WINDOW_S]
        windows.append(
            {
                "t": w * WINDOW_S,
                "n": len(lat),
                "p50_ms": round(_pct(lat, 0.5), 1),
                "p99_ms": round(_pct(lat, 0.99), 1),
                "non_2xx": sum(
                    1
                    for r in run.rows
                    if w * WINDOW_S <= r[0] < (w + 1) * WINDOW_S and not 200 <= r[2] < 300
                ),
                "other_tenants_cores": sampler.other_mean(w * WINDOW_S, (w + 1) * WINDOW_S),
            }
        )
    rss = [m for _, m in sampler.rss_mib]
    first, last = _thirds(rss)
    growth = statistics.median(last) - statistics.median(first)
    tail = sampler.rss_mib[len(sampler.rss_mib) // 3 :]
    report = {
        "seconds": SOAK_S,
        "offered_rps": round(rate, 1),
        "sent": len(run.rows),
        "by_kind": run.by_kind(),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "peak_connections": run.peak_conns,
        "transport_errors": run.errors,
        "windows": windows,
        "rss_mib": {
            "start": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "max": round(max(rss), 1),
            "median_first_third": round(statistics.median(first), 1),
            "median_last_third": round(statistics.median(last), 1),
            "growth": round(growth, 1),
            "slope_last_two_thirds_mib_per_min": round(_slope_per_min(tail), 2),
            "samples": len(rss),
        },
        "tmpdir_stray_files": sorted(sampler.stray),
        "other_tenants_cores": sampler.other_mean(),
    }
    soak.report["soak"] = report
    print(f"\nsoak: {json.dumps(report, indent=1)}")

    assert len(run.rows) == int(rate * SOAK_S)
    assert statuses.keys() <= {*range(200, 300), 503}, f"errors under load: {statuses}"
    assert not sampler.stray, f"files in TMPDIR during the soak: {sorted(sampler.stray)}"
    assert len(rss) >= SOAK_S * 0.8, "the sampler missed most seconds"
    # a leak of a few KiB per request would be tens of MiB over 10 minutes; the allowance
    # covers allocator noise and caches that fill once (SQLite pages, numba, buffers)
    bound = max(24.0, 0.10 * statistics.median(first))
    assert growth <= bound, f"RSS grew {growth:.1f} MiB from the first third to the last"
    p99_first, p99_last = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    contended = _not_ours(soak.ramp_sampler, sampler)
    if contended is not None:
        pytest.skip(
            f"memory, TMPDIR and errors passed; 'no 503 at 80%' and p99 stability not "
            f"judged: {contended} (statuses {dict(statuses)}, p99 {p99_first} -> {p99_last})"
        )
    # the 30 s variant's capacity comes from a few seconds per ramp level, so its 80% can
    # be a few percent optimistic: it tolerates shedding 1% of requests; 10 minutes, none
    shed = statuses.get(503, 0)
    allowed = int(scaled(0.01, 0.0) * len(run.rows))
    assert shed <= allowed, f"shed {shed} of {len(run.rows)} at 80% of capacity: {statuses}"
    # p99 over one short window is a few hundred requests: in the 30 s variant it is
    # reported (above), not judged (seen in CI on an idle box: 37 -> 164 ms while every
    # other figure held); the 10-minute variant judges it over 60 s windows
    if LONG:
        assert p99_last <= 2 * p99_first + 50, f"p99 drifted: {p99_first} -> {p99_last} ms"


def test_burst_over_capacity_is_shed_fast(soak: Soak) -> None:
    """3x capacity for a few seconds: what exceeds the per-worker bound gets 503 +
    Retry-After at once, and what is accepted waits a bounded time: its latency levels
    off instead of climbing through the burst, as an unbounded queue's would (to about
    (3 - 1) x the burst length by its end). Then the server serves normally again."""
    assert soak.capacity > 0, "needs test_capacity_ramp first"
    rate = BURST_FACTOR * soak.capacity
    with sampled(soak.server, BURST_S + 120) as sampler:
        run = _generate(
            soak,
            "burst",
            timeout_s=BURST_S + 90,
            mode="open",
            rate=rate,
            duration=BURST_S,
            max_conns=2048,
            warm_conns=256,
        )
    statuses = run.statuses()
    shed = [r for r in run.rows if r[2] in (429, 503)]
    served = [r for r in run.rows if 200 <= r[2] < 300]
    first_shed_at = min((r[0] + r[3] / 1000 for r in shed), default=float("inf"))
    thirds = [
        [r[3] for r in served if k * BURST_S / 3 <= r[0] < (k + 1) * BURST_S / 3] for k in range(3)
    ]
    unbounded_ms = 1000 * (BURST_FACTOR - 1) * BURST_S
    shed_ms, served_ms = _summary(r[3] for r in shed), _summary(r[3] for r in served)

    time.sleep(1.0)  # the Retry-After the shed responses asked for
    after = _generate(
        soak,
        "recovery",
        timeout_s=RECOVERY_S + 60,
        mode="open",
        rate=0.5 * soak.capacity,
        duration=RECOVERY_S,
        max_conns=256,
        warm_conns=32,
    )
    after_lat = [r[3] for r in after.rows]
    report = {
        "offered_rps": round(rate, 1),
        "seconds": BURST_S,
        "sent": len(run.rows),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": run.errors,
        "first_shed_after_s": round(first_shed_at, 3),
        "shed_latency_ms": shed_ms,
        "served_latency_ms": served_ms,
        "served_p99_ms_by_third": [round(_pct(t, 0.99), 1) for t in thirds],
        "served_rps": round(len(served) / BURST_S, 1),
        "unbounded_queue_would_reach_ms": unbounded_ms,
        "peak_connections": run.peak_conns,
        "other_tenants_cores": sampler.other_mean(),
        "rss_mib_max": round(max((m for _, m in sampler.rss_mib), default=0.0), 1),
        "recovery": {
            "offered_rps": round(0.5 * soak.capacity, 1),
            "statuses": {str(k): v for k, v in sorted(after.statuses().items())},
            "p50_ms": round(_pct(after_lat, 0.5), 1),
            "p99_ms": round(_pct(after_lat, 0.99), 1),
        },
    }
    soak.report["burst"] = report
    print(f"\nsoak: burst {json.dumps(report, indent=1)}")
    _write_report(soak)

    # judged on any box: the kinds of answer, that shedding happens and starts early, that
    # accepted latency levels off rather than climbing, and the recovery
    assert statuses.keys() <= {*range(200, 300), 429, 503}, f"burst statuses: {statuses}"
    assert shed, "a burst at 3x capacity was never shed: the queue is unbounded"
    assert served, "nothing was served during the burst"
    assert first_shed_at < 2.0, f"the first 503 came {first_shed_at:.2f} s into the burst"
    assert served_ms["max"] < unbounded_ms, "accepted requests queued"
    assert after.statuses().keys() <= set(range(200, 300)), "the server did not recover"
    if not LONG:
        # the 30 s variant's burst is a few seconds: its latency thirds and shed
        # percentiles are a few hundred samples, reported above, judged by `make soak`
        return
    p99_mid, p99_last = (_pct(t, 0.99) for t in thirds[1:])
    assert p99_last <= 1.5 * p99_mid + 250, f"accepted latency still climbing: {thirds}"
    # absolute speed: only when the server had the box
    contended = _not_ours(sampler)
    if contended is not None:
        pytest.skip(f"burst shed and bounded; absolute shed latency not judged: {contended}")
    assert shed_ms["p50"] < 250, "shedding is not fast"
    assert shed_ms["p99"] < 1000, "shedding is not fast"
    assert served_ms["max"] < unbounded_ms / 2, "accepted requests queued"


def _summary(latencies: Iterable[float]) -> dict[str, float]:
    values = list(latencies)
    return {
        "p50": round(_pct(values, 0.5), 1),
        "p99": round(_pct(values, 0.99), 1),
        "max": round(max(values, default=0.0), 1),
    }


def _write_report(soak: Soak) -> None:
    soak.report["long"] = LONG
    path = soak.root / "soak-report.json"
    path.write_text(json.dumps(soak.report, indent=1))
    print(f"soak: report in {path}")
