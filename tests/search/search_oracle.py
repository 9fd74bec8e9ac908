"""Helpers for the search-core tests: data generators and the brute-force oracle.

A plain module (not conftest) so tests can import it; named uniquely because pytest puts
this directory on sys.path (rootdir-style test layout without __init__.py).
"""

from __future__ import annotations

import numpy as np


def oracle(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, radius: int) -> set[tuple[int, int]]:
    """Obviously-correct range search: unpack every bit, XOR, sum. Returns {(id, dist)}."""
    if len(codes) == 0:
        return set()
    d = np.unpackbits(np.bitwise_xor(codes, q[None, :]), axis=1).sum(axis=1)
    hit = np.flatnonzero(d <= radius)
    return {(int(ids[i]), int(d[i])) for i in hit}


def as_set(ids: np.ndarray, dists: np.ndarray) -> set[tuple[int, int]]:
    pairs = list(zip(ids.tolist(), dists.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)), "an entry was returned twice"
    return set(pairs)


def flip(code: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``code`` with exactly ``k`` distinct bits flipped."""
    bits = np.unpackbits(code)
    pos = rng.choice(bits.size, size=k, replace=False)
    bits[pos] ^= 1
    return np.packbits(bits)


def uniform_codes(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def clustered_codes(
    n: int, bits: int, rng: np.random.Generator, centres: int = 50, lo: int = 10, hi: int = 40
) -> np.ndarray:
    """Codes around a few centres with ``lo..hi`` flipped bits, like real hash lists
    (many near-duplicate variants of the same media)."""
    c = uniform_codes(centres, bits, rng)
    which = rng.integers(0, centres, size=n)
    out = np.empty((n, bits // 8), np.uint8)
    hi = min(hi, bits)
    lo = min(lo, hi)
    for i in range(n):
        out[i] = flip(c[which[i]], int(rng.integers(lo, hi + 1)), rng)
    return out


def planted_queries(
    codes: np.ndarray, radius: int, nq: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Queries plus extra codes planted at distances r-1, r, r+1 from each query.

    Returns (queries, planted codes). Boundary distances are where off-by-one errors
    (FAISS's strict ``<``, MIH radius splits) would show.
    """
    bits = codes.shape[1] * 8
    qs = []
    planted = []
    for j in range(nq):
        base = (
            codes[rng.integers(len(codes))]
            if (j % 2 and len(codes))
            else uniform_codes(1, bits, rng)[0]
        )
        q = flip(base, int(rng.integers(0, 4)), rng)
        qs.append(q)
        for k in (radius - 1, radius, radius + 1):
            if 0 <= k <= bits:
                planted.append(flip(q, k, rng))
    return np.array(qs, np.uint8), np.array(planted, np.uint8).reshape(-1, codes.shape[1])


# --------------------------------------------------------------------------- MIH corner cases


def kernel_bits(code: np.ndarray) -> np.ndarray:
    """Bits of a packbits code in the kernels' numbering: bit ``b`` is bit ``b % 64`` of the
    little-endian uint64 word ``b // 64``, i.e. ``unpackbits(bitorder="little")``."""
    return np.unpackbits(code, bitorder="little")


def from_kernel_bits(b: np.ndarray) -> np.ndarray:
    return np.packbits(b, bitorder="little")


def mih_plan(
    n: int, bits: int, m: int | None, inline: bool, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lens, rad)`` the index will use for ``n`` rows (public mih functions)."""
    from hashsvc.search import mih

    m = m or mih.choose_num_tables(n, bits, inline)
    starts, lens = mih.split_bits(bits, m)
    return starts, lens, mih.allocate_radii(lens, radius, n, inline)


def classify(
    code: np.ndarray,
    q: np.ndarray,
    plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    radius: int,
    prefix_bits: int,
    tail_from: int,
) -> set[str]:
    """What a planted code exercises, computed from the code itself:

    * ``tail_only``: a hit that only tables starting at or after ``tail_from`` find;
    * ``multi``: a hit found by two or more tables (the first-table dedupe);
    * ``prefix_at_radius``: a hit whose prefix distance (first ``prefix_bits``) is exactly
      ``radius`` (an off-by-one in the partial filter drops it);
    * ``tail_reject``: a candidate (some table finds it) whose prefix distance is within
      ``radius`` but whose full distance is not (only the words past the prefix reject it).
    """
    starts, lens, rad = plan
    x = kernel_bits(code) ^ kernel_bits(q)
    full = int(x.sum())
    partial = int(x[:prefix_bits].sum())
    found = [
        t
        for t in range(len(lens))
        if rad[t] >= 0 and int(x[starts[t] : starts[t] + lens[t]].sum()) <= rad[t]
    ]
    kinds = set()
    if full <= radius and found:
        if all(starts[t] >= tail_from for t in found):
            kinds.add("tail_only")
        if len(found) >= 2:
            kinds.add("multi")
        if partial == radius:
            kinds.add("prefix_at_radius")
    if found and partial <= radius < full:
        kinds.add("tail_reject")
    return kinds


KINDS = ("tail_only", "multi", "prefix_at_radius", "tail_reject")


def corner_plants(
    q: np.ndarray,
    plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    radius: int,
    prefix_bits: int,
    tail_from: int,
    per_query: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Exactly ``per_query`` codes near ``q`` aimed at the MIH corner cases of ``classify``.

    Every table that starts before ``tail_from`` and is probed gets ``rad + 1`` flipped
    bits (so it cannot find the code), placed in the first ``prefix_bits`` bits where the
    table has room; the tables from ``tail_from`` on get few flips, so only they find it.
    Extra flips then bring the code to distance ``radius`` (all in the prefix), or past it
    through the bits after the prefix while one tail table still finds it. One code in
    five is instead a few random flips away (found by most tables).
    """
    starts, lens, rad = plan
    bits = q.size * 8
    m = len(lens)
    tail = [t for t in range(m) if starts[t] >= tail_from]
    finders = [t for t in tail if rad[t] >= 0]
    out: list[np.ndarray] = []

    def table_bits(t: int, in_prefix: bool) -> np.ndarray:
        b = np.arange(starts[t], starts[t] + lens[t])
        return b[b < prefix_bits] if in_prefix else b

    for j in range(per_query):
        x = np.zeros(bits, np.uint8)
        aim = j % 5
        if aim == 4:
            x[rng.choice(bits, int(rng.integers(0, radius // 3 + 1)), replace=False)] = 1
            out.append(from_kernel_bits(kernel_bits(q) ^ x))
            continue
        ok = bool(finders)
        for t in range(m):
            if starts[t] >= tail_from or rad[t] < 0:
                continue
            need = int(rad[t]) + 1
            pool = table_bits(t, True)
            if len(pool) < need:
                pool = table_bits(t, False)
            if len(pool) < need:  # the table enumerates every key: it finds everything
                ok = False
                break
            x[rng.choice(pool, need, replace=False)] = 1
        if ok and int(x.sum()) <= radius:
            f = int(rng.choice(finders))
            others = [t for t in tail if t != f]
            if aim == 0:  # tail-only hit, a few flips in the other tail tables
                for t in others:
                    k = int(rng.integers(0, int(rad[t]) + 2)) if rad[t] >= 0 else 1
                    room = radius - int(x.sum())
                    k = min(k, room, int(lens[t]))
                    x[rng.choice(table_bits(t, False), k, replace=False)] = 1
            elif aim == 3:  # past the radius through the bits after the prefix only
                after = np.concatenate(
                    [table_bits(t, False) for t in others] + [np.empty(0, np.int64)]
                )
                after = after[after >= prefix_bits]
                k = radius + 1 + int(rng.integers(0, 2)) - int(x.sum())
                if 0 < k <= len(after):
                    x[rng.choice(after, k, replace=False)] = 1
                else:
                    aim = 2
            if aim in (1, 2):  # fill the prefix up to the radius (1) or a bit below (2)
                target = radius if aim == 1 else radius - int(rng.integers(1, 4))
                free = np.flatnonzero(x[:prefix_bits] == 0)
                free = free[[not _in_tail(b, starts, lens, tail_from) for b in free]]
                k = max(0, min(target - int(x.sum()), len(free)))
                x[rng.choice(free, k, replace=False)] = 1
        else:  # no tail-only hit possible with this plan: a random code near the radius
            x[:] = 0
            x[rng.choice(bits, radius + int(rng.integers(-2, 2)), replace=False)] = 1
        out.append(from_kernel_bits(kernel_bits(q) ^ x))
    return out


def _in_tail(b: int, starts: np.ndarray, lens: np.ndarray, tail_from: int) -> bool:
    t = int(np.searchsorted(starts, b, side="right")) - 1
    return bool(starts[t] >= tail_from)
