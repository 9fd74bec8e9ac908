"""Atomic save/load of an index: a FAISS binary index file plus a JSON manifest.

Layout of a saved directory::

    manifest.json            {"format", "bits", "count", "index_file", "sha256",
                              "store_version", "created"}
    codes-<token>.faissbin   faiss.IndexBinaryIDMap2(IndexBinaryFlat(bits)), written by
                             faiss.write_index_binary

Crash safety: the index file gets a fresh name each save and is fsynced and renamed into
place before the manifest is; the manifest's ``os.replace`` is the commit point, followed
by an fsync of the directory. A crash at any moment leaves either the old manifest with its
old index file or the new pair, never a manifest pointing at a half-written file. Stale
index files are removed only after the commit, and so are the temp files of a killed save
(once an hour old, so a concurrent save's are left alone). Files are mode 0600: hash lists
of abusive media are sensitive.

Why FAISS for storage at all: it is the interchange format other tooling (e.g. HMA) reads.
Why our own reader on load: ``faiss.read_index_binary`` rebuilds IDMap2's
``unordered_map`` reverse map (seconds and ~0.5 GB at 10M) and then we would copy the codes
out again. The IDMap2/IBxF layout is simple and stable, so we parse it with ``readinto``
straight into aligned numpy arrays (hashing as we go), and fall back to FAISS's reader for
any layout we do not recognise. A test checks both readers agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ChecksumMismatchError, IndexCorruptError, InvalidInputError, ManifestError

MANIFEST = "manifest.json"
FORMAT = "hashsvc-binary-index/1"
_HDR = struct.Struct("<iiqBi")  # d, code_size, ntotal, is_trained, metric_type (21 bytes)
_CHUNK = 1 << 24
#: A temp file this old is a killed save's leftover (a 10M-entry save takes seconds).
STALE_TMP_SECONDS = 3600


@dataclass
class Loaded:
    """What ``load_arrays`` returns: live entries plus the manifest."""

    ids: np.ndarray  # int64 (n,)
    codes: np.ndarray  # uint64 (n, bits // 64), 64-byte aligned
    manifest: dict[str, Any]


def _fsync(path: Path) -> None:
    """fsync a file's data, or a directory's entries (so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 before anything writes data into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(mv[:k])
    return h.hexdigest()


def faiss_module() -> Any:
    """Import faiss the safe way for this process (see the notes on OpenMP vs numba).

    FAISS's bundled OpenMP busy-waits between parallel regions and fights numba's threads
    (a 0.8 ms query became 140 ms), so the wait policy is set before the first import and
    FAISS is kept single-threaded: we only use it for I/O and as a benchmark baseline.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss  # noqa: PLC0415  (deliberately lazy: importing hashsvc.search stays cheap)

    return faiss


def write_faiss_file(path: Path, ids: np.ndarray, codes_u8: np.ndarray, bits: int) -> None:
    """Write ``IndexBinaryIDMap2(IndexBinaryFlat(bits))`` holding ``codes_u8`` with ``ids``.

    Builds the IDMap2 without ``add_with_ids`` (which would fill the reverse hash map we never
    use): codes go into the flat index, ids are copied into ``id_map`` directly.
    """
    faiss = faiss_module()
    flat = faiss.IndexBinaryFlat(bits)
    idmap = faiss.IndexBinaryIDMap2(flat)
    if len(ids):
        flat.add(np.ascontiguousarray(codes_u8))
        faiss.copy_array_to_vector(np.ascontiguousarray(ids, dtype=np.int64), idmap.id_map)
    idmap.ntotal = len(ids)
    faiss.write_index_binary(idmap, str(path))
    del idmap, flat


def save_arrays(
    directory: Path,
    ids: np.ndarray,
    codes: np.ndarray,
    bits: int,
    store_version: str | int | None = None,
) -> dict[str, Any]:
    """Atomically (re)write ``directory`` with these entries; returns the manifest."""
    directory = Path(directory)
    # `mode` applies to the last directory only; the index root above it (search/) would
    # get the umask's 0755 and let anyone list the index
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.mkdir(exist_ok=True, mode=0o700)
    with _save_lock(directory):
        return _save_locked(directory, ids, codes, bits, store_version)


@contextlib.contextmanager
def _save_lock(directory: Path) -> Iterator[None]:
    """One save at a time per index directory, across processes: without it, a save
    (`lists import`) racing another (`serve` starting) deletes the file the other's
    manifest has just committed to. Readers need no lock: they see a whole manifest."""
    fd = os.open(directory / ".save.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _save_locked(
    directory: Path, ids: np.ndarray, codes: np.ndarray, bits: int, store_version: str | int | None
) -> dict[str, Any]:
    token = f"{time.time_ns():x}-{secrets.token_hex(4)}"
    name = f"codes-{token}.faissbin"
    final = directory / name
    tmp = directory / f".{name}.tmp"
    codes_u8 = codes.view(np.uint8).reshape(len(ids), bits // 8)
    try:
        _create_private(tmp)
        write_faiss_file(tmp, ids, codes_u8, bits)
        _fsync(tmp)
        digest = _sha256_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest = {
        "format": FORMAT,
        "bits": bits,
        "count": int(len(ids)),
        "index_file": name,
        "sha256": digest,
        "store_version": store_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mtmp = directory / f".{MANIFEST}.{token}.tmp"
    try:
        _create_private(mtmp)
        with open(mtmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync(directory)  # the new index file's name is durable before the commit
        os.replace(mtmp, directory / MANIFEST)  # commit point
    except BaseException:
        mtmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    _fsync(directory)
    for old in directory.glob("codes-*.faissbin"):
        if old.name != name:
            old.unlink(missing_ok=True)
    # a save killed mid-write (SIGKILL, OOM) leaves its temp files, each as big as the
    # index; nothing else removes them. Only old ones go: a concurrent save's are fresh.
    for tmp in directory.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
    return manifest


def read_manifest(directory: Path, bits: int | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError as e:
        raise ManifestError(f"no {MANIFEST} in {directory}") from e
    except (OSError, ValueError) as e:
        raise ManifestError(f"unreadable manifest {path}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a {FORMAT} manifest")
    for key in ("bits", "count", "index_file", "sha256"):
        if key not in manifest:
            raise ManifestError(f"{path}: missing {key!r}")
    if bits is not None and manifest["bits"] != bits:
        raise ManifestError(f"{path}: index has {manifest['bits']} bits, caller expects {bits}")
    name = manifest["index_file"]
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise ManifestError(f"{path}: bad index_file {name!r}")
    return manifest


def _aligned_empty(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes]


def _read_exact(f: Any, mv: memoryview, h: Any, what: str) -> None:
    pos = 0
    total = len(mv)
    while pos < total:
        k = f.readinto(mv[pos : min(total, pos + _CHUNK)])
        if not k:
            raise IndexCorruptError(f"index file truncated while reading {what}")
        h.update(mv[pos : pos + k])
        pos += k


def load_arrays(directory: Path, bits: int) -> Loaded:
    """Read and verify a saved index; raise ``IndexCorruptError`` subclasses on any problem."""
    if bits not in (64, 256):
        raise InvalidInputError(f"bits must be 64 or 256, got {bits}")
    directory = Path(directory)
    manifest = read_manifest(directory, bits)
    path = directory / manifest["index_file"]
    if not path.is_file():
        raise IndexCorruptError(f"index file {path} named by the manifest is missing")
    try:
        ids, codes, digest = _parse_idmap2(path, bits)
    except IndexCorruptError:
        digest = _sha256_file(path)
        if digest != manifest["sha256"]:
            raise ChecksumMismatchError(
                f"{path}: sha256 {digest} != manifest {manifest['sha256']}"
            ) from None
        ids, codes = _read_with_faiss(path, bits)  # valid file in a layout we don't parse
    if digest != manifest["sha256"]:
        raise ChecksumMismatchError(f"{path}: sha256 {digest} != manifest {manifest['sha256']}")
    if len(ids) != manifest["count"]:
        raise IndexCorruptError(f"{path}: {len(ids)} entries, manifest says {manifest['count']}")
    return Loaded(ids=ids, codes=codes, manifest=manifest)


def _parse_idmap2(path: Path, bits: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Parse ``IBM2`` + ``IBxF`` directly into aligned arrays, hashing every byte."""
    h = hashlib.sha256()
    code_size = bits // 8
    with open(path, "rb", buffering=0) as f:
        head = f.read(4 + _HDR.size + 4 + _HDR.size + 8)
        h.update(head)
        if len(head) < 58 or head[:4] != b"IBM2" or head[25:29] != b"IBxF":
            raise IndexCorruptError(f"{path}: not an IndexBinaryIDMap2(IndexBinaryFlat) file")
        d1, cs1, n1, _, _ = _HDR.unpack_from(head, 4)
        d2, cs2, n2, _, _ = _HDR.unpack_from(head, 29)
        (nbytes,) = struct.unpack_from("<Q", head, 50)
        if (d1, cs1, d2, cs2) != (bits, code_size, bits, code_size) or n1 != n2 or n1 < 0:
            raise IndexCorruptError(f"{path}: header d={d1}/{d2} n={n1}/{n2}, expected {bits}")
        if nbytes != n1 * code_size:
            raise IndexCorruptError(f"{path}: {nbytes} code bytes for {n1} entries")
        n = n1
        cbuf = _aligned_empty(max(nbytes, 8))[:nbytes]
        _read_exact(f, cbuf.data, h, "codes")
        tail = f.read(8)
        h.update(tail)
        if len(tail) != 8 or struct.unpack("<Q", tail)[0] != n:
            raise IndexCorruptError(f"{path}: id map length does not match {n} entries")
        ids = np.empty(n, dtype=np.int64)
        _read_exact(f, ids.data.cast("B"), h, "ids")
        if f.read(1):
            raise IndexCorruptError(f"{path}: trailing bytes after the id map")
    codes = cbuf.view(np.uint64).reshape(n, bits // 64)
    return ids, codes, h.hexdigest()


def _read_with_faiss(path: Path, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow path: FAISS's own reader, for layouts ``_parse_idmap2`` does not know."""
    faiss = faiss_module()
    try:
        idx = faiss.read_index_binary(str(path))
    except Exception as e:  # faiss raises RuntimeError with its own message
        raise IndexCorruptError(f"{path}: FAISS cannot read it: {e}") from e
    if idx.d != bits:
        raise IndexCorruptError(f"{path}: FAISS index has d={idx.d}, expected {bits}")
    try:
        # keep ``idx`` alive: the downcast wrappers do not own the C++ objects
        idmap = faiss.downcast_IndexBinary(idx)
        ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
        flat = faiss.downcast_IndexBinary(idmap.index)
        raw = faiss.vector_to_array(flat.xb)
    except Exception as e:
        raise IndexCorruptError(f"{path}: not an IDMap2 over a flat binary index: {e}") from e
    buf = _aligned_empty(max(raw.nbytes, 8))[: raw.nbytes]
    buf[:] = raw
    return ids, buf.view(np.uint64).reshape(len(ids), bits // 64)
