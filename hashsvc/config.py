"""The one settings class. Read once (from `HASHSVC_*` environment variables), passed down.

No other module reads the environment: adapters build a `Settings` and hand it to the
core, tests build one directly. Outside `env=dev` the class refuses unsafe choices
(interactive docs on a public bind, no rate limit, etc.) instead of running with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hashsvc.errors import ConfigError

if TYPE_CHECKING:
    from hashsvc.video import VideoLimits

_PREFIX = "HASHSVC_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service, with its default. Env: HASHSVC_<FIELD_NAME>."""

    env: str = "dev"  # dev | prod; prod refuses unsafe settings
    data_dir: Path = field(default_factory=lambda: Path("index"))

    # media safety
    max_pixels: int = 50_000_000  # decompression-bomb cap, checked from the header
    max_body_bytes: int = 20 * 1024 * 1024
    fast_decode: bool = True  # reduced-size JPEG decode for *matching* (never for exports)

    # matching
    pdq_min_quality: int = 50  # PDQ below this quality is not used to decide
    dihedral: bool = True  # search the 8 rotations/flips of a PDQ query
    trim_borders: bool = True  # also search the query's content inside added borders
    enroll_crops: bool = True  # enrollment also indexes centre/corner crops
    # corroboration: a PDQ beyond the threshold but <= corroborate_pdq still matches when
    # the same item's pHash is <= corroborate_phash (matcher.py; bench/robustness.py)
    corroborate: bool = True  # for media (uploads, scans, `hashsvc match FILE`)
    corroborate_lookups: bool = False  # for precomputed hashes (costs a wider pHash search)
    corroborate_pdq: int = 52
    corroborate_phash: int = 16
    corroborate_min_quality: int = 20  # PDQ quality floor of the query for corroboration

    # video (vPDQ; see hashsvc/video.py and hashsvc/vpdq.py)
    video_max_seconds: float = 3600.0  # from the container before decoding, and while
    video_max_frames: int = 250_000
    video_max_pixels: int = 4096 * 2304  # per frame
    video_max_body_bytes: int = 512 * 1024 * 1024  # API bodies sent as video/*
    vpdq_seconds_per_hash: float = 1.0  # one frame PDQ per second (0: every frame)
    vpdq_query_percent: float = 80.0  # share of the upload's unique frames that must match
    vpdq_compared_percent: float = 0.0  # share of the list video's frames that must be hit
    video_fast_decode: bool = True  # matching only: skip non-reference frames + deblocking

    # API
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    docs_enabled: bool = False
    rate_limit_per_minute: int = 6000  # per key; 0 disables (refused in prod)
    hash_concurrency: int = 4  # concurrent decode+hash jobs off the event loop
    max_in_flight: int = 64  # per worker; more at once get 503 + Retry-After; 0 disables
    webhook_url: str = ""
    index_refresh_seconds: float = 0.5
    # FastAPI's native OpenTelemetry (a span, metrics and logs per request, once a tracer,
    # meter or logger provider is configured, e.g. by `opentelemetry-instrument`). Off by
    # default: even with no provider its per-request check costs ~10 us (~3% of a lookup);
    # Prometheus /metrics is always on
    opentelemetry: bool = False
    # Search: memory bound of the inline MIH layout per index (hashsvc/search/mih.py): up to
    # it, ~2x faster lookups at 1M PDQ for ~3x the table memory (320 MB there, per worker);
    # 0 keeps every index on the rows layout
    index_inline_max_mb: int = 512

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from HASHSVC_* variables (explicit overrides win)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def with_(self, **changes: object) -> Settings:
        s = replace(self, **changes)  # type: ignore[arg-type]
        s.validate()
        return s

    def validate(self) -> None:
        if self.env not in ("dev", "prod"):
            raise ConfigError(f"HASHSVC_ENV must be dev or prod, got {self.env!r}")
        for name in ("max_pixels", "max_body_bytes", "workers", "hash_concurrency",
                     "video_max_seconds", "video_max_frames", "video_max_pixels",
                     "video_max_body_bytes"):  # fmt: skip
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"HASHSVC_{name.upper()} must be positive")
        if self.index_inline_max_mb < 0:
            raise ConfigError("HASHSVC_INDEX_INLINE_MAX_MB must be >= 0 (0: rows layout only)")
        if self.max_in_flight < 0:
            raise ConfigError("HASHSVC_MAX_IN_FLIGHT must be 0 (no shedding) or positive")
        if self.vpdq_seconds_per_hash < 0:
            raise ConfigError("HASHSVC_VPDQ_SECONDS_PER_HASH must be >= 0 (0: every frame)")
        for name in ("vpdq_query_percent", "vpdq_compared_percent"):
            if not 0 <= float(getattr(self, name)) <= 100:
                raise ConfigError(f"HASHSVC_{name.upper()} must be within 0..100")
        if not 0 <= self.pdq_min_quality <= 100:
            raise ConfigError("HASHSVC_PDQ_MIN_QUALITY must be within 0..100")
        if self.env == "prod":
            if self.docs_enabled and self.host not in ("127.0.0.1", "::1", "localhost"):
                raise ConfigError("interactive /docs on a non-loopback bind is refused in prod")
            if self.rate_limit_per_minute <= 0:
                raise ConfigError("a per-key rate limit is required in prod")

    @property
    def video_limits(self) -> VideoLimits:
        from hashsvc.video import VideoLimits

        return VideoLimits(self.video_max_seconds, self.video_max_frames, self.video_max_pixels)

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "hashsvc.db"

    @property
    def index_inline_max_bytes(self) -> int:
        """`index_inline_max_mb` in bytes, as `IndexSet.open` / `BinaryIndex` take it."""
        return self.index_inline_max_mb << 20


def _coerce(name: str, type_name: object, raw: str) -> object:
    t = str(type_name)
    try:
        if t == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t == "Path":
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"HASHSVC_{name.upper()}={raw!r} is not a valid {t}") from None
