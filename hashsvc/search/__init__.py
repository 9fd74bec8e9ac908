"""Search core: exact Hamming range search of PDQ-256 / pHash-64 codes (``BinaryIndex``).

Importing this package is cheap on purpose (numpy is not even imported): ``BinaryIndex``
and the errors are resolved on first attribute access, and numba kernels / faiss are
imported on first use, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    ChecksumMismatchError,
    DuplicateIdError,
    IndexCorruptError,
    InvalidInputError,
    ManifestError,
    SearchError,
)

if TYPE_CHECKING:
    from .index import BinaryIndex

__all__ = [
    "BinaryIndex",
    "ChecksumMismatchError",
    "DuplicateIdError",
    "IndexCorruptError",
    "InvalidInputError",
    "ManifestError",
    "SearchError",
    "warmup",
]


def __getattr__(name: str) -> Any:
    if name == "BinaryIndex":
        from .index import BinaryIndex

        return BinaryIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def warmup() -> None:
    """Load (or on first run compile) every numba kernel now rather than on the first query.

    A service calls this at startup so the first request does not pay seconds of JIT; the
    compiled code is cached on disk, so later processes load it in well under a second.
    """
    import numpy as np

    from .index import BinaryIndex

    rng = np.random.default_rng(0)
    configs: tuple[tuple[int, Literal["mih", "flat"]], ...] = (
        (256, "mih"),
        (256, "flat"),
        (64, "flat"),
        (64, "mih"),
    )
    for bits, strategy in configs:
        idx = BinaryIndex(bits, strategy=strategy, build_threads=1)
        codes = rng.integers(0, 256, size=(64, bits // 8), dtype=np.uint8)
        idx.add(np.arange(64), codes)
        idx.add(np.array([1000]), codes[:1])
        idx.search(codes[0], 8)
        idx.search_batch(codes[:4], 8)
    # the table-major sweep (sweep.py) serves only batches of SWEEP_MIN_QUERIES or more on
    # inline PDQ tables: without this a fresh install's first 1,000-hash batch compiled it
    # inside the request (a 5 s stall per worker, seen in bench/api.py's 20:23 run)
    from . import mih

    idx = BinaryIndex(256, strategy="mih", layout="inline", build_threads=1)
    idx.add(np.arange(4096), rng.integers(0, 256, size=(4096, 32), dtype=np.uint8))
    idx.search_batch(rng.integers(0, 256, size=(mih.SWEEP_MIN_QUERIES, 32), dtype=np.uint8), 31)
