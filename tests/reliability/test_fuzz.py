"""Malformed input: the media decoder under mutated files and crafted bombs, and the API
under schema-driven requests on a real server.

Property (tests/reliability/media_seeds.py `check`): `hash_media` on both decode paths
returns complete hashes or raises `MediaRejected` (nothing else escapes), and each input
finishes within TIME_BOUND_S and raises the process's peak RSS by at most MEMORY_BOUND_MB.
Seeds are valid files of every accepted format, made at run time; hypothesis mutates
them (bit flips, byte edits, truncation, insertion, deletion, header width/height edits,
splicing two files, PNG CRC repair so edits get past the checksum).

Short under `make test` (derandomized, so CI is reproducible); `make fuzz`
(HASHSVC_LONG=1) runs many more random examples, then the coverage-guided atheris
script fuzz_media.py. Figures are printed in the terminal summary line of each test.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hashsvc import media
from hashsvc.config import Settings
from hashsvc.errors import MediaRejected
from tests.reliability import media_seeds as ms
from tests.reliability.conftest import LONG, scaled

# --- the decoder ------------------------------------------------------------------------


@functools.cache
def _seeds() -> dict[str, bytes]:
    return ms.seeds()


@dataclass
class Stats:
    """Figures over every input one test ran (for the report and RELIABILITY.md)."""

    n: int = 0
    hashed: int = 0
    rejected: int = 0
    max_cpu_s: float = 0.0
    max_wall_s: float = 0.0
    max_mb: float = 0.0
    worst: dict[str, str] = field(default_factory=dict)

    def add(self, o: ms.Outcome, label: str = "") -> None:
        self.n += 1
        self.hashed += o.result == "hashed"
        self.rejected += o.result == "rejected"
        if o.cpu_s > self.max_cpu_s:
            self.max_cpu_s, self.worst["time"] = o.cpu_s, label
        self.max_wall_s = max(self.max_wall_s, o.wall_s)
        if o.peak_mb > self.max_mb:
            self.max_mb, self.worst["memory"] = o.peak_mb, label

    def line(self, what: str) -> str:
        return (
            f"{what}: {self.n} inputs ({self.hashed} hashed, {self.rejected} rejected), "
            f"max {self.max_cpu_s * 1000:.0f} ms CPU ({self.max_wall_s * 1000:.0f} ms wall), "
            f"max peak-RSS rise {self.max_mb:.1f} MB"
        )


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Print a figure past pytest's capture (make fuzz runs without -s)."""
    with capsys.disabled():
        print(f"\n[fuzz] {text}")


def _warm() -> None:
    """Load the numba kernels once, so the first measured input does not pay for them."""
    ms.check(_seeds()["gen-png"])


def test_every_seed_is_valid_and_every_format_is_seeded() -> None:
    """The seeds are real files of each accepted format: mutations start from valid input
    (a seed that does not decode would make the fuzzing below shallow)."""
    seen = set()
    for name, data in _seeds().items():
        seen.add(media.decode(data).format)
        assert ms.check(data).result == "hashed", name
    assert seen == set(media.allowed_formats())
    assert any(n.startswith("bridge-") for n in _seeds()), "the bridge photos are missing"


_POS = st.one_of(st.integers(0, 80), st.integers(0, 1 << 16))  # headers are at the front
_DIMS = st.one_of(
    st.sampled_from([0, 1, 2, 8, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 2**31 - 1, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
_BLOBS = st.one_of(
    st.binary(max_size=48),
    st.sampled_from([b"\xff" * 16, b"\x00" * 64, b"\xff\xd8\xff\xe1", b"IDAT", b"\x2c" * 9]),
)
MUTATIONS = st.one_of(
    st.builds(ms.Mutation, st.just("flip"), _POS, st.integers(0, 7)),
    st.builds(ms.Mutation, st.just("set"), _POS, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF])),
    st.builds(ms.Mutation, st.just("set"), _POS, st.integers(0, 255)),
    st.builds(ms.Mutation, st.just("truncate"), st.integers(0, 1 << 16)),
    st.builds(ms.Mutation, st.just("insert"), _POS, st.just(0), _BLOBS),
    st.builds(ms.Mutation, st.just("delete"), _POS, st.integers(0, 63)),
    st.builds(ms.Mutation, st.just("dims"), _DIMS, _DIMS),
    st.builds(ms.Mutation, st.just("splice"), st.integers(0, 1 << 16), st.integers(0, 99)),
    st.builds(ms.Mutation, st.just("fix_crc")),
)


def test_mutated_media_is_hashed_or_rejected_within_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = _seeds()
    names = sorted(seeds)
    others = [seeds[n] for n in names]
    stats = Stats()
    failures: list[str] = []
    _warm()

    @settings(
        max_examples=int(scaled(400, 15000)),
        deadline=None,
        database=None,  # no .hypothesis/ in the repo
        derandomize=not LONG,  # make test: the same inputs every run
        suppress_health_check=list(HealthCheck),
    )
    @given(name=st.sampled_from(names), edits=st.lists(MUTATIONS, min_size=1, max_size=4))
    def one(name: str, edits: list[ms.Mutation]) -> None:
        data = ms.mutate(seeds[name], edits, others)
        label = f"{name} {edits!r}"[:300]
        try:
            outcome = ms.check(data)
        except Exception as e:  # anything but MediaRejected escaped: a bug
            failures.append(f"{label}: {type(e).__name__}: {e}")
            raise
        stats.add(outcome, label)
        assert outcome.cpu_s < ms.TIME_BOUND_S, (label, outcome)
        assert outcome.wall_s < ms.WALL_BOUND_S, (label, outcome)
        assert outcome.peak_mb < ms.MEMORY_BOUND_MB, (label, outcome)

    start = time.perf_counter()
    try:
        one()
    finally:
        took = time.perf_counter() - start
        _report(capsys, stats.line("mutations") + f", {stats.n / took:.0f} inputs/s")
    assert failures == []
    # the property is exercised on both sides: mutants that still decode, and rejections
    assert stats.hashed > stats.n // 20 and stats.rejected > stats.n // 5, stats


def test_bombs_are_rejected_from_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    """Small files declaring a canvas beyond Settings.max_pixels are refused before any
    pixel is decoded; streams that inflate to 256 MB cost no memory and stay within the
    per-input time bound (zlib still inflates a 256 MB IDAT: 0.3-0.6 s of CPU here)."""
    cap = Settings().max_pixels
    stats = Stats()
    _warm()
    built = ms.bombs(cap)
    assert len(built) >= 14
    for name, data in built.items():
        assert len(data) < 300_000, name  # each bomb is a small file
        outcome = ms.check(data, cap)
        stats.add(outcome, name)
        if name.startswith("over-cap-"):
            assert outcome.result == "rejected", name
            if not name.startswith(("over-cap-webp-vp8x", "over-cap-avif")):
                assert "too many pixels" in outcome.reason, (name, outcome.reason)
        assert outcome.cpu_s < ms.TIME_BOUND_S and outcome.wall_s < 5, (name, outcome)
        assert outcome.peak_mb < 32, (name, outcome)
    _report(capsys, stats.line("bombs"))


def test_cost_at_the_real_cap_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """The most one input can cost: a ~50 KB file that decodes to just under the pixel
    cap. This is what Settings.max_pixels buys (x hash_concurrency per worker)."""
    cap = Settings().max_pixels
    side = int(cap**0.5) - 1
    img = Image.new("L", (side, side), 0)
    stats = Stats()
    _warm()
    for fmt in ("PNG", "GIF") if LONG else ("PNG",):
        data = ms.encode(img, fmt, optimize=True)
        assert len(data) < 100_000
        outcome = ms.check(data, cap)
        stats.add(outcome, fmt)
        assert outcome.result == "hashed"
        assert outcome.cpu_s < 10 and outcome.wall_s < 60, outcome  # measured 1.7-3.2 s
        if ms.PEAK_RSS_RESETTABLE:
            assert outcome.peak_mb < 1200, outcome  # measured ~840 MB: ~17 B per pixel
    # one pixel more is refused from the header
    with pytest.raises(MediaRejected, match="too many pixels"):
        media.decode(ms.with_dimensions(data, side + 2, side + 2), max_pixels=cap)
    _report(capsys, stats.line(f"at the cap ({side}x{side})"))


# --- the API on a real server -------------------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")

from tests.api.conftest import Env, build_env  # noqa: E402
from tests.api.live import LiveServer, live_server  # noqa: E402
from tests.api.test_schema import CHECKS  # noqa: E402  (the same checks as the TestClient run)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Env]]:
    root = tmp_path_factory.mktemp("schema-live")
    env = build_env(root / "data")
    settings = {"HASHSVC_RATE_LIMIT_PER_MINUTE": "0", "HASHSVC_MAX_BODY_BYTES": "1000000"}
    with live_server(root, env.data_dir, workers=1, env=settings) as srv:
        yield srv, env


def test_openapi_on_a_real_server(
    server: tuple[LiveServer, Env], capsys: pytest.CaptureFixture[str]
) -> None:
    """Schemathesis over HTTP against `hashsvc serve` (uvicorn, httptools, uvloop): what
    the TestClient run in tests/api/test_schema.py cannot see (the real HTTP parser,
    headers on the wire). Every operation, with a full-scope key: no 5xx, and every
    response conforms to the schema."""
    live, env = server
    auth = env.auth("all")
    raw = httpx.get(f"{live.url}/openapi.json", headers=auth, timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15
    failures: list[str] = []
    sent = 0

    with httpx.Client(base_url=live.url, timeout=30) as client:
        for op in ops:

            @settings(
                max_examples=int(scaled(5, 60)),
                deadline=None,
                database=None,
                derandomize=not LONG,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy())
            def check(case) -> None:  # type: ignore[no-untyped-def]
                nonlocal sent
                kw = case.as_transport_kwargs(headers=auth)
                if kw.get("files") is not None:
                    return  # requests-style file tuples: multipart is covered in test_match.py
                if isinstance(kw.get("data"), bytes | str):  # requests-style raw body
                    kw["content"] = kw.pop("data")
                response = client.request(
                    kw["method"],
                    kw["url"].replace("http://localhost", ""),
                    **{
                        k: kw[k]
                        for k in ("headers", "params", "json", "content", "data")
                        if kw.get(k) is not None
                    },
                )
                sent += 1
                if response.status_code >= 500:
                    failures.append(f"{kw['method']} {kw['url']}: {response.status_code}")
                try:
                    case.validate_response(response, headers=auth, checks=CHECKS)
                except BaseException as e:  # every operation's problems, then fail once
                    failures.append(f"{kw['method']} {kw['url']}: {str(e)[:400]}")

            check()
    _report(capsys, f"schemathesis on a live server: {sent} requests over {len(ops)} operations")
    assert sent >= len(ops)
    assert failures == [], "\n".join(failures[:20])
    assert live.proc.poll() is None, "the server died"
    assert "Traceback" not in live.log_text()
