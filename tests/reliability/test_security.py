"""Security promises, beyond what tests/api/test_auth.py and test_privacy.py check.

Already covered there (not repeated here): 401 with no key / "nope" / a revoked key /
Basic auth on each declared route, one wrong scope -> 403 per route, docs off in a
TestClient app, revocation and new keys taking effect, the rate limit per key on one
route, and no list hash in the bodies of the usual non-admin requests.

Added here:
- the key check comes first: a malformed or non-UTF-8 body, an invalid path parameter or
  an entry that does not exist still gets 401 (or 403) without a good key, never the
  400/404/422 that would tell the caller how its request was parsed (a bug, fixed in
  hashsvc/api/errors.py); near-miss tokens and keys sent anywhere but the Authorization
  header are refused;
- every scope set against every route: exactly the routes its scopes grant;
- no trusted-list hash, crop variants included (read from the store itself), in any body
  *or header* a non-admin key receives, over every route, with exact, perceptual,
  rotated and cropped hits;
- keys stored hashed: no token (nor its secret part) in the SQLite file, WAL or SHM;
- data files 0600 and directories 0700 even under umask 000, index files included;
- on a real server: docs off by default, the rate limit per key across routes, no
  upload byte in TMPDIR (watched while the upload streams in, including unnamed
  O_TMPFILE files) or in the data dir, and no token in the server's log.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import shutil
import signal
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hashsvc import hashing, keys
from hashsvc.config import Settings
from hashsvc.enrollment import enrolled_media
from hashsvc.errors import ConfigError
from hashsvc.index_sync import IndexSet
from hashsvc.robust import crop_boxes
from hashsvc.store import Store
from tests.api.conftest import (
    SCOPE_SETS,
    Env,
    build_env,
    enrolled_bytes,
    image,
    make_app,
    running,
    upload_bytes,
)
from tests.api.live import LiveServer, live_server
from tests.api.test_auth import PUBLIC, _routes

CROP_SEED = 5  # enrolled with its crop variants into `known`


def _scopes(who: str) -> set[str]:
    granted = set(SCOPE_SETS[who].split(","))
    return granted | ({"metrics"} if "admin" in granted else set())  # admin implies metrics


def _build(data_dir: Path) -> Env:
    """build_env's lists and keys, plus an image enrolled with its crop variants."""
    env = build_env(data_dir)
    media = enrolled_media(enrolled_bytes(CROP_SEED), category="cat-crops", crops=True)
    assert media.variants, "no crop variants to check"
    with Store.open(data_dir / "hashsvc.db") as store:
        store.import_entries(
            "known", media.entries, source_name="t", file_sha256="", variants=media.variants
        )
    return env


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return _build(tmp_path_factory.mktemp("security") / "data")


@pytest.fixture
def env(template: Env, tmp_path: Path) -> Env:
    data = tmp_path / "data"
    shutil.copytree(template.data_dir, data)
    return Env(data, dict(template.tokens), dict(template.key_ids), set(template.list_hashes))


@pytest.fixture
def client(env: Env) -> Iterator[TestClient]:
    with running(make_app(env)) as c:
        yield c


def _list_hashes(db: Path) -> set[str]:
    """Every hash the store holds for the lists, entries and their variants (lower hex)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT hex(hash) FROM entries UNION SELECT hex(hash) FROM entry_variants"
        ).fetchall()
    return {h.lower() for (h,) in rows}


# --- the key check comes first ---------------------------------------------------------


def _near_misses(token: str) -> list[dict[str, str]]:
    """Header sets that carry something close to a valid key, but no valid key."""
    prefix = token[: len("hsk_") + 8]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [
        {"Authorization": f"Bearer {flipped}"},  # one character off: the digest compare
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {prefix}"},  # the public prefix alone
        {"Authorization": f"Bearer {token.upper()}"},
        {"Authorization": "Bearer "},
        {"Authorization": token},  # no scheme
        {"Authorization": f"Token {token}"},
        {"X-API-Key": token},  # a key anywhere but Authorization counts for nothing
        {"Cookie": f"api_key={token}; token={token}"},
    ]


def test_near_miss_tokens_and_keys_outside_the_header_are_401(client: TestClient, env: Env) -> None:
    token = env.tokens["all"]
    for method, path, _ in _routes(client.app):
        if path in PUBLIC:
            continue
        for headers in _near_misses(token):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
        r = client.request(method, path, params={"api_key": token, "token": token})
        assert r.status_code == 401, (method, path, "query")
    # the control: the same token in the header is accepted
    r = client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=env.auth("all"))
    assert r.status_code == 200


def _bad_requests(method: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Requests that are malformed in the ways a server might answer before auth."""
    bad_path = path.replace("/known", "/no-such-list").replace("/1", "/999999")
    invalid_param = path.replace("/known", "/not%20a%20name").replace("/1", "/0")
    out: list[tuple[str, dict[str, Any]]] = [
        (bad_path, {}),
        (invalid_param, {}),
        (path, {"params": {"limit": "-1", "after_id": "x", "status": "bogus"}}),
    ]
    if method in ("POST", "PATCH", "PUT"):
        for body in (b"{not json", b"\xff\xfe\x00{", b'{"entries": [', b"[]"):
            out.append((path, {"content": body, "headers": {"Content-Type": "application/json"}}))
        out.append(
            (path, {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}})
        )
        out.append((path, {"content": b"x", "headers": {"Content-Type": "application/x-evil"}}))
    return out


def test_no_key_means_401_before_the_request_is_parsed(client: TestClient, env: Env) -> None:
    """Regression (fixed in hashsvc/api/errors.py): FastAPI decodes a JSON body before it
    runs the key check, so `POST /v1/match/hashes` with a malformed body and no key got
    422 "JSON decode error" (and a non-UTF-8 one 400) instead of 401."""
    match_token = env.tokens["match"]
    seen: set[int] = set()
    for method, path, scopes in _routes(client.app):
        if path in PUBLIC:
            continue
        for url, kw in _bad_requests(method, path):
            headers = kw.pop("headers", {})
            for auth in ({}, {"Authorization": "Bearer nope"}, env.auth("revoked")):
                r = client.request(method, url, headers={**headers, **auth}, **kw)
                assert r.status_code == 401, (method, url, kw, auth, r.status_code, r.text)
                assert r.json()["error"] == "unauthorized"
            # a valid key without the route's scope: 403 before any parsing, too
            if scopes and "match" not in scopes and not scopes <= {"metrics"}:
                h = {**headers, "Authorization": f"Bearer {match_token}"}
                r = client.request(method, url, headers=h, **kw)
                assert r.status_code == 403, (method, url, kw, r.status_code, r.text)
            # with the right key the same request gets its real answer
            r = client.request(method, url, headers={**headers, **env.auth("all")}, **kw)
            seen.add(r.status_code)
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, url, kw)
    assert {404, 415, 422} <= seen  # the answers a caller without a key never gets


# --- scopes ---------------------------------------------------------------------------


def test_each_scope_set_reaches_exactly_the_routes_it_grants(client: TestClient, env: Env) -> None:
    routes = _routes(client.app)
    for who in SCOPE_SETS:
        if who == "revoked":
            continue
        granted = _scopes(who)
        for method, path, needed in routes:
            if path in PUBLIC:
                continue
            r = client.request(method, path, headers=env.auth(who))
            if needed <= granted:  # the openapi route needs no scope: any key
                assert r.status_code not in (401, 403), (who, method, path, r.status_code)
            else:
                assert r.status_code == 403, (who, method, path, r.status_code)
                assert r.json()["error"] == "forbidden"


# --- no list hash for a non-admin key ------------------------------------------------------


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _uploads() -> dict[str, bytes]:
    """Uploads that hit the lists in every way: re-encodings (perceptual), the enrolled
    bytes themselves (exact MD5/SHA-256), a rotation (dihedral) and a crop (variant)."""
    crop_img = image(CROP_SEED)
    _, box = crop_boxes(*crop_img.size)[0]
    return {
        "near-1": upload_bytes(1),
        "near-3": upload_bytes(3),
        "exact-2": enrolled_bytes(2),
        "rotated-1": _jpeg(image(1).transpose(Image.Transpose.ROTATE_90)),
        "cropped-5": _jpeg(crop_img.crop(box)),
        "unrelated": upload_bytes(9),
    }


def _own_hashes(data: bytes) -> set[str]:
    """What a caller can compute from its own upload (so may legitimately see)."""
    out = set()
    for path in hashing.HashPath:
        h = hashing.hash_media(data, path=path, dihedral=True, trim=True)
        out |= {x.hex for x in (h.pdq, h.phash, h.md5, h.sha256, *h.pdq_dihedral, *h.trimmed) if x}
    return out


def _non_admin_requests(
    client: TestClient, who: str, env: Env, uploads: dict[str, bytes], own: set[str]
) -> Iterator[httpx.Response]:
    """Every route, with bodies that make matches happen where the route matches."""
    h = env.auth(who)
    for data in uploads.values():
        yield client.post("/v1/match", content=data, headers={**h, "Content-Type": "image/jpeg"})
        yield client.post("/v1/match", files={"file": ("a.jpg", data, "image/jpeg")}, headers=h)
        raw = {**h, "Content-Type": "application/octet-stream"}
        yield client.post("/v1/hash", params={"dihedral": "true"}, content=data, headers=raw)
        ref = hashing.hash_media(data).to_json()
        query = {k: ref[k] for k in ("pdq", "phash", "md5")}
        own |= set(query.values())
        yield client.post("/v1/match/hashes", json=query, headers=h)
        items = {"items": [query, {"sha256": ref["sha256"]}]}
        yield client.post("/v1/match/hashes", json=items, headers=h)
    report_ids = [
        r["id"] for r in client.get("/v1/reports", headers=env.auth("all")).json()["items"]
    ]
    assert report_ids, "no reports were created: the uploads did not match"
    for method, path, _ in _routes(client.app):
        if path.startswith(("/v1/match", "/v1/hash")):
            continue
        if "/v1/reports/1" in path:
            for rid in report_ids:
                url = path.replace("/v1/reports/1", f"/v1/reports/{rid}")
                body = {"status": "confirmed"} if url.endswith("/resolve") else None
                yield client.request(method, url, headers=h, json=body)
        else:
            yield client.request(method, path, headers=h, params={"limit": 1000})
    yield client.get("/v1/reports/export", headers=h, params={"report_id": report_ids})


def test_no_list_hash_in_any_body_or_header_for_a_non_admin_key(
    client: TestClient, env: Env
) -> None:
    secret = _list_hashes(env.data_dir / "hashsvc.db")
    uploads = _uploads()
    own: set[str] = set()
    for data in uploads.values():
        own |= _own_hashes(data)
    texts: list[str] = []
    verdicts: set[str] = set()
    for who in ("match", "review", "metrics"):
        for r in _non_admin_requests(client, who, env, uploads, own):
            assert r.status_code < 500, (r.request.url, r.status_code)
            headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            texts.append(f"{r.request.method} {r.request.url}\n{headers}\n{r.text}")
            if r.headers.get("content-type", "").startswith("application/json"):
                body = r.json()
                if isinstance(body, dict) and "verdict" in body:
                    verdicts.add(body["verdict"])
                    if body["verdict"] != "allow":
                        assert body["matches"], body
    everything = "\n".join(texts).lower()
    assert {"block", "report", "allow"} <= verdicts  # matches happened
    hidden = secret - own
    # every list hash but those of the enrolled file the caller uploaded byte for byte
    assert len(hidden) >= 12, len(hidden)
    leaked = sorted(h for h in hidden if h in everything)
    assert leaked == [], leaked
    raw = "\n".join(texts)  # base64 of the raw hash bytes, as a JSON encoder might emit them
    b64 = [base64.b64encode(bytes.fromhex(h)).decode() for h in hidden]
    assert [b for b in b64 if b in raw] == []

    # the check can fail: an admin sees the variants' entries and the entries' hashes
    admin = client.get("/v1/lists/known/entries", params={"limit": 1000}, headers=env.auth("admin"))
    assert hidden & set(admin.text.lower().replace('"', " ").split())


# --- stored secrets and file modes --------------------------------------------------------


def _db_bytes(data_dir: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in data_dir.iterdir()
        if p.name.startswith("hashsvc.db") and p.is_file()
    }


def test_keys_are_stored_hashed(client: TestClient, env: Env) -> None:
    # use every key (the ring caches them, the audit log names them), plus a wrong one
    for who in env.tokens:
        client.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=env.auth(who))
        client.get("/v1/reports", headers=env.auth(who))
    client.get("/v1/reports", headers={"Authorization": "Bearer " + env.tokens["all"][:-1] + "Q"})
    with Store.open(env.data_dir / "hashsvc.db") as store:
        _, late = keys.create_key(store, "late", "match")
    tokens = {**env.tokens, "late": late}
    files = _db_bytes(env.data_dir)
    assert "hashsvc.db" in files and "hashsvc.db-wal" in files
    blob = b"".join(files.values())
    for who, token in tokens.items():
        secret = _secret(token)
        assert token.encode() not in blob, who
        assert secret.encode() not in blob, who
        assert secret[:16].encode() not in blob, who
    # the control: what is stored is the SHA-256 of each token
    with Store.open(env.data_dir / "hashsvc.db") as store, store.reading() as conn:
        stored = {bytes(r[0]) for r in conn.execute("SELECT key_hash FROM api_keys")}
    assert {hashlib.sha256(t.encode()).digest() for t in tokens.values()} <= stored


def _secret(token: str) -> str:
    """The part after `hsk_<8 hex>_` (it may itself contain '_')."""
    assert token.startswith(keys.TOKEN_PREFIX) and token[12] == "_", token
    return token[13:]


def _modes(data_dir: Path) -> list[tuple[str, int]]:
    out = [(".", stat.S_IMODE(data_dir.stat().st_mode))]
    for p in sorted(data_dir.rglob("*")):
        out.append((str(p.relative_to(data_dir)), stat.S_IMODE(p.lstat().st_mode)))
    return out


def _assert_private(data_dir: Path) -> list[str]:
    """Every file 0600 and every directory 0700 (nothing for group or others)."""
    names = []
    for name, mode in _modes(data_dir):
        path = data_dir / name
        if path.is_dir():
            assert mode & 0o077 == 0, (name, oct(mode))
        else:
            assert mode == 0o600, (name, oct(mode))
        names.append(name)
    return names


def test_data_files_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    """Regression: the index root (data/search/) was created as an implicit parent with
    the umask's mode (0755 usually, 0777 here), so anyone could list the index; fixed in
    hashsvc/search/persist.py."""
    old = os.umask(0)
    try:
        env = _build(tmp_path / "data")
        with Store.open(env.data_dir / "hashsvc.db") as store:
            IndexSet.open(store, env.data_dir).save()  # what `hashsvc serve` does first
    finally:
        os.umask(old)
    names = _assert_private(env.data_dir)
    assert "hashsvc.db" in names and "search" in names, names
    assert any(n.endswith(".faissbin") for n in names), names
    # the control: a file made under umask 000 is world-readable, so the check can fail
    probe = tmp_path / "probe"
    old = os.umask(0)
    try:
        probe.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(probe.stat().st_mode) & 0o004


def test_docs_stay_off_unless_asked_and_never_public_in_prod() -> None:
    assert Settings().docs_enabled is False
    assert Settings.from_env({}).docs_enabled is False
    assert Settings.from_env({"HASHSVC_DOCS_ENABLED": "1"}).docs_enabled is True
    with pytest.raises(ConfigError):
        Settings.from_env(
            {"HASHSVC_ENV": "prod", "HASHSVC_DOCS_ENABLED": "1", "HASHSVC_HOST": "0.0.0.0"}
        )
    with pytest.raises(ConfigError):
        Settings.from_env({"HASHSVC_ENV": "prod", "HASHSVC_RATE_LIMIT_PER_MINUTE": "0"})


# --- on a real server ----------------------------------------------------------------------

RATE = 40  # per key per minute; the tests below spend well under it except on purpose


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Env]]:
    root = tmp_path_factory.mktemp("security-live")
    old = os.umask(0)  # the server inherits it: its index files must still be private
    try:
        env = _build(root / "data")
        ctx = live_server(
            root,
            env.data_dir,
            workers=1,
            env={"HASHSVC_RATE_LIMIT_PER_MINUTE": str(RATE), "HASHSVC_MAX_BODY_BYTES": "8000000"},
        )
        srv = ctx.__enter__()
    finally:
        os.umask(old)
    try:
        yield srv, env
    finally:
        ctx.__exit__(None, None, None)


def test_live_docs_are_off_by_default(server: tuple[LiveServer, Env]) -> None:
    live, env = server
    with httpx.Client(base_url=live.url, timeout=10) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/redoc").status_code == 404
        assert c.get("/docs/oauth2-redirect").status_code == 404
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/openapi.json", headers=env.auth("metrics")).status_code == 200


def _server_pids(live: LiveServer) -> list[int]:
    import psutil

    parent = psutil.Process(live.proc.pid)
    return [parent.pid, *(p.pid for p in parent.children(recursive=True))]


def _open_paths(pids: list[int]) -> set[str]:
    """Targets of every open file descriptor of these processes (unnamed temp files show
    as '<dir>/#<inode> (deleted)')."""
    out = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def test_live_uploads_never_touch_disk(server: tuple[LiveServer, Env]) -> None:
    """Uploads of 3 MB (above Starlette's 1 MB spool threshold) streamed slowly, raw and
    multipart: while they stream in, no server process has a file open in TMPDIR or a
    new file in the data dir; afterwards no file there holds any 64-byte piece of them."""
    live, env = server
    rng = np.random.default_rng(3)
    padding = rng.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    data = upload_bytes(1) + padding  # JPEG decoders ignore what follows the image
    pids = _server_pids(live)
    data_dir = str(env.data_dir.resolve())
    tmp = str(live.tmpdir.resolve())
    before = _open_paths(pids)
    suspicious: set[str] = set()
    streaming = threading.Event()
    done = threading.Event()

    def suspect(path: str) -> bool:
        """A file an upload could have been spooled to: anything in TMPDIR or /tmp, an
        unnamed or deleted file, anything in the data dir but the store and the index."""
        if path == data_dir:  # the directory itself, opened to fsync it
            return False
        if path.startswith(data_dir):
            rel = path[len(data_dir) + 1 :]
            return not rel.startswith(("hashsvc.db", "search/"))
        return path.startswith((tmp, "/tmp/", "/var/tmp/")) or path.endswith("(deleted)")

    def watch() -> None:
        while not done.is_set():
            if streaming.is_set():
                suspicious.update(p for p in _open_paths(pids) - before if suspect(p))
            time.sleep(0.002)

    def slowly(body: bytes) -> Iterator[bytes]:
        streaming.set()
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]
            time.sleep(0.02)

    boundary = "hashsvc-test-boundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    # the control: the watch sees an unnamed temp file (what a spooled upload would be)
    with tempfile.TemporaryFile(dir=live.tmpdir):
        assert any(suspect(p) for p in _open_paths([os.getpid()]))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with httpx.Client(base_url=live.url, headers=env.auth("all"), timeout=30) as c:
            for path, body, ctype in (
                ("/v1/match", data, "image/jpeg"),
                ("/v1/match", multipart, f"multipart/form-data; boundary={boundary}"),
                ("/v1/hash", multipart, f"multipart/form-data; boundary={boundary}"),
            ):
                r = c.post(path, content=slowly(body), headers={"Content-Type": ctype})
                assert r.status_code == 200, (path, r.text)
                assert path == "/v1/hash" or r.json()["verdict"] == "block"
    finally:
        done.set()
        watcher.join(5)
    assert streaming.is_set() and suspicious == set(), suspicious

    pieces = [data[i : i + 64] for i in range(0, len(data), len(data) // 50)]
    for root in (env.data_dir, live.tmpdir):
        for p in root.rglob("*"):
            if p.is_file():
                blob = p.read_bytes()
                assert not any(piece in blob for piece in pieces), p
    assert not any(piece in live.log.read_bytes() for piece in pieces)


def test_live_rate_limit_is_per_key_across_routes(server: tuple[LiveServer, Env]) -> None:
    live, env = server
    with (
        httpx.Client(base_url=live.url, headers=env.auth("review"), timeout=10) as a,
        httpx.Client(base_url=live.url, headers=env.auth("admin"), timeout=10) as b,
    ):
        codes = [a.get("/v1/reports", params={"limit": 1}).status_code for _ in range(RATE + 5)]
        assert codes.count(200) >= RATE - 2 and codes[-3:] == [429] * 3, codes
        # the same key is limited on its other routes too: one bucket per key
        r = a.post("/v1/match/hashes", json={"md5": "0" * 32})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert a.get("/v1/reports/export", params={"limit": 1}).status_code == 429
        # ...and other keys are not
        assert b.get("/v1/lists").status_code == 200
        assert b.get("/metrics").status_code == 200
        # an exhausted key is still told apart from a bad one: no key is 401, not 429
        assert httpx.get(f"{live.url}/v1/reports", timeout=10).status_code == 401


def test_live_files_private_and_log_free_of_tokens(server: tuple[LiveServer, Env]) -> None:
    """Last in the file: it stops the server, so the log is complete (flushed)."""
    live, env = server
    wrong = env.tokens["all"][:-1] + "Q"
    with httpx.Client(base_url=live.url, timeout=10) as c:  # a few requests, some refused
        c.post("/v1/match/hashes", json={"md5": "0" * 32}, headers=env.auth("match"))
        c.get("/v1/lists", headers={"Authorization": f"Bearer {wrong}"})
    names = _assert_private(env.data_dir)  # the server ran under umask 000
    assert any(n.startswith("search/") for n in names), names
    os.killpg(live.proc.pid, signal.SIGTERM)
    live.proc.wait(30)
    log = live.log_text()
    assert '"status": 401' in log and '"route": "/v1/lists"' in log  # requests are logged
    for who, token in {**env.tokens, "wrong": wrong}.items():
        assert _secret(token) not in log, who
