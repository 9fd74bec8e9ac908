"""API test fixtures: a data dir with benign lists, keys per scope, and running apps.

Lists (all entries are hashes of *generated* images, enrolled like `lists enroll`):
- `known` (block): images of seeds 1 and 2;
- `watch` (report): the image of seed 3.
Uploads are re-encodings of those images (other bytes, near PDQ/pHash), so a match is
perceptual, and no upload's hash equals a list hash unless a test says so.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hashsvc import keys
from hashsvc.api.app import create_app
from hashsvc.config import Settings
from hashsvc.enrollment import entries_for_media
from hashsvc.index_sync import IndexSet
from hashsvc.matcher import Matcher
from hashsvc.store import Store
from tests.conftest import encode, smooth_image

SCOPE_SETS = {
    "match": "match",
    "review": "match,review",
    "admin": "admin",
    "all": "match,review,admin",
    "metrics": "metrics",
    "revoked": "match,review,admin",
}


def image(seed: int, size: tuple[int, int] = (640, 480)) -> Any:
    return smooth_image(seed, size)


def enrolled_bytes(seed: int) -> bytes:
    """The exact bytes enrolled for `seed` (PNG)."""
    return encode(image(seed), "PNG")


def upload_bytes(seed: int, quality: int = 80) -> bytes:
    """A re-encoding of the enrolled image: different bytes, near perceptual hashes."""
    return encode(image(seed), "JPEG", quality=quality)


@dataclass
class Env:
    data_dir: Path
    tokens: dict[str, str]
    key_ids: dict[str, int]
    list_hashes: set[str] = field(default_factory=set)

    def auth(self, who: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def build_env(data_dir: Path) -> Env:
    with Store.open(data_dir / "hashsvc.db") as store:
        store.create_list("known", "block", description="test block list")
        store.create_list("watch", "report")
        hashes: set[str] = set()
        for name, seeds in (("known", (1, 2)), ("watch", (3,))):
            entries = []
            for seed in seeds:
                entries += entries_for_media(enrolled_bytes(seed), category=f"cat-{name}")
            store.import_entries(name, entries, source_name="test", file_sha256="")
            hashes |= {e.hash.hex for e in entries}
        tokens, ids = {}, {}
        for who, scopes in SCOPE_SETS.items():
            key, token = keys.create_key(store, f"k-{who}", scopes)
            tokens[who], ids[who] = token, key.id
        keys.revoke_key(store, "k-revoked")
    return Env(data_dir, tokens, ids, hashes)


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return build_env(tmp_path_factory.mktemp("template") / "data")


@pytest.fixture
def env(_template: Env, tmp_path: Path) -> Env:
    """A private copy of one prepared data dir (building it costs a dozen fsyncs)."""
    data = tmp_path / "data"
    shutil.copytree(_template.data_dir, data)
    return Env(data, dict(_template.tokens), dict(_template.key_ids), set(_template.list_hashes))


def quick_matcher(settings: Settings) -> Matcher:
    """The production wiring without the kernel warm-up (numba's cache is warm in CI)."""
    store = Store.open(settings.db_path)
    return Matcher(store, IndexSet.open(Store.open(settings.db_path), settings.data_dir), settings)


def settings_for(env: Env, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": env.data_dir,
        "index_refresh_seconds": 0.05,
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(
    env: Env, factory: Callable[[Settings], Matcher] = quick_matcher, **kw: Any
) -> FastAPI:
    return create_app(settings_for(env, **kw), matcher_factory=factory)


def wait_ready(client: TestClient, deadline_s: float = 90.0) -> None:
    # a hang guard only: a fresh checkout compiles the numba kernels on first load, and two
    # apps loading at once on a busy 2-core CI box took over 20 s
    deadline = time.monotonic() + deadline_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "app did not become ready"
        time.sleep(0.01)


@contextmanager
def running(app: FastAPI, *, ready: bool = True) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as client:
        if ready:
            wait_ready(client)
        yield client


@pytest.fixture
def client(env: Env) -> Iterator[TestClient]:
    with running(make_app(env)) as c:
        yield c


def jpeg_headers(env: Env, who: str = "all") -> dict[str, str]:
    return {**env.auth(who), "Content-Type": "image/jpeg"}
