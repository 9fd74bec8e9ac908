"""The two 503s that come from hashsvc's own exceptions (errors.py's map), each caused the
way it happens in production, with the service's error shape and `Retry-After`:

- `store_unavailable` (StoreError): the database cannot take the request's write, e.g.
  another process (a `hashsvc lists import`) holds SQLite's write lock past the busy
  timeout;
- `index_unavailable` (SearchError): the worker's index cannot apply the store's changes
  that an admin write asks it to pick up at once.

An index that is still loading or failed to load is not one of them: those requests get
`not_ready` (deps.py, tested in test_ops.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from hashsvc.api import runtime
from hashsvc.errors import SearchError
from hashsvc.index_sync import KEY_SLOTS
from hashsvc.store import Store
from tests.api.conftest import Env, enrolled_bytes, jpeg_headers, make_app, running, upload_bytes

#: how long the worker's records connection waits for the write lock (5 s in production;
#: shortened so a locked request costs a test a fifth of a second, not five)
BUSY_TIMEOUT_S = 0.2


class _ImpatientStore(Store):
    """`Store` whose connections wait `BUSY_TIMEOUT_S` for the write lock."""

    @classmethod
    def open(cls, path: Path | str, **kw: Any) -> Store:
        return Store.open(path, **{**kw, "busy_timeout": BUSY_TIMEOUT_S})


@pytest.fixture
def impatient(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A ready app whose own store connections (runtime.py's) time out quickly."""
    monkeypatch.setattr(runtime, "Store", _ImpatientStore)
    with running(make_app(env)) as c:
        yield c


def _assert_unavailable(r: httpx2.Response, code: str, *named: str) -> dict[str, Any]:
    """503 with the error shape, a detail naming the cause, and Retry-After: 1."""
    assert r.status_code == 503, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["error"] == code
    assert all(word in body["detail"] for word in named), body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["retry-after"] == "1"
    return body


def test_a_locked_store_is_503_store_unavailable(impatient: TestClient, env: Env) -> None:
    """While another process holds the database's write lock longer than the busy
    timeout, every request that must write answers 503 `store_unavailable` naming the
    lock, and withholds its verdict: a block or report verdict is only ever given with
    its report committed. Each route kind: a hash lookup (the fast lane), an upload
    (FastAPI's path) and an admin write. Once the lock is gone the same requests
    succeed, which is what Retry-After promises."""
    c = impatient
    known_md5 = {"md5": hashlib.md5(enrolled_bytes(1)).hexdigest()}  # exact entry of `known`
    requests = (
        lambda: c.post("/v1/match/hashes", json=known_md5, headers=env.auth()),
        lambda: c.post("/v1/match", content=upload_bytes(1), headers=jpeg_headers(env)),
        lambda: c.post(
            "/v1/lists", json={"name": "late", "action": "block"}, headers=env.auth("admin")
        ),
    )
    with Store.open(env.data_dir / "hashsvc.db") as other, other.transaction():
        for send in requests:
            body = _assert_unavailable(send(), "store_unavailable", "database is locked")
            assert "verdict" not in body and "report_id" not in body

    lookup, upload, create = (send() for send in requests)
    assert lookup.status_code == 200 and lookup.json()["verdict"] == "block"
    assert upload.status_code == 200 and upload.json()["verdict"] == "block"
    assert lookup.json()["report_id"] is not None and upload.json()["report_id"] is not None
    assert create.status_code == 201


def test_an_index_that_cannot_apply_a_change_is_503_index_unavailable(
    client: TestClient, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin write is applied to this worker's index before it is answered
    (`refresh_now`). When the index cannot take the store's pending changes (a SearchError
    from the index: here made to happen, since the store now refuses the one change that
    did, an entry with more codes than the index keys per entry), the write answers 503
    `index_unavailable` with the reason."""
    indexes = client.app.state.services.matcher.indexes  # type: ignore[attr-defined]

    def refuse() -> int:
        raise SearchError(f"an entry has more than {KEY_SLOTS} codes of one signal type")

    monkeypatch.setattr(indexes, "refresh", refuse)
    entry = {"signal_type": "md5", "hash": hashlib.md5(b"new entry").hexdigest()}
    r = client.post(
        "/v1/lists/known/entries",
        json={"entries": [entry]},
        headers=env.auth("admin"),
    )
    _assert_unavailable(r, "index_unavailable", f"more than {KEY_SLOTS} codes")
