"""Searches may run on several threads while another thread mutates the index."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
from search_oracle import uniform_codes

from hashsvc.search import BinaryIndex


def test_concurrent_search_during_mutations(rng: np.random.Generator) -> None:
    n = 9000
    codes = uniform_codes(n + 3000, 256, rng)
    ids = np.arange(n + 3000, dtype=np.int64)
    idx = BinaryIndex(256, max_delta=500)
    idx.add(ids[:n], codes[:n])
    stable = ids[:2000]  # never removed: must always be found at distance 0
    errors: list[str] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            i = int(r.integers(0, 2000))
            got, d = idx.search(codes[i], 0)
            if stable[i] not in got.tolist():
                errors.append(f"lost id {i}")
            if len(set(got.tolist())) != len(got):
                errors.append("duplicate hit")
            lims, bi, _ = idx.search_batch(codes[i : i + 3], 0, threads=2)
            if stable[i] not in bi[lims[0] : lims[1]].tolist():
                errors.append(f"batch lost id {i}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        for s in range(n, n + 3000, 200):  # adds (with auto-compaction), removes, compacts
            idx.add(ids[s : s + 200], codes[s : s + 200])
            idx.remove(ids[s : s + 50])
            idx.remove(ids[2000 + s - n : 2000 + s - n + 20])
            if s % 1000 == 0:
                idx.compact()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert len(idx) == n + 3000 - 15 * 50 - 15 * 20


def test_warmup_loads_every_search_kernel_a_request_can_reach() -> None:
    """In a fresh process (this one may have run them already): after `warmup()` the
    query-by-query, scan and sweep kernels hold a compiled signature."""
    code = (
        "import hashsvc.search as s\n"
        "from hashsvc.search import kernels, sweep\n"
        "s.warmup()\n"
        "print(sorted(k.__name__ for k in (kernels.mih_batch, kernels.flat_batch,"
        " sweep.mih_sweep) if not k.signatures))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    assert out.stdout.strip() == "[]", f"not compiled by warmup(): {out.stdout}"


def test_warmup_and_introspection() -> None:
    import hashsvc.search as s

    s.warmup()
    idx = BinaryIndex(256)
    assert idx.path_for(31) == "flat" and not idx.uses_mih
    idx.add(np.arange(10000), np.zeros((10000, 32), np.uint8))
    assert idx.uses_mih and idx.path_for(31) == "mih" and idx.path_for(256) == "flat"
    assert idx.memory_bytes() > 10000 * 32
