"""API keys: shown once, stored as a digest, scoped, revocable; the `keys` CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashsvc import keys
from hashsvc.cli import app
from hashsvc.errors import Conflict, InvalidValue, NotFound
from hashsvc.store import Store


def test_create_authenticate_revoke(tmp_path: Path) -> None:
    db = tmp_path / "hashsvc.db"
    with Store.open(db) as store:
        key, token = keys.create_key(store, "pipeline", "match,review")
        assert token.startswith(f"hsk_{key.prefix}_") and key.scopes == {"match", "review"}
        assert keys.authenticate(store, token) == key
        assert keys.authenticate(store, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert keys.authenticate(store, "hsk_nothing") is None
        with pytest.raises(Conflict):
            keys.create_key(store, "PIPELINE", "match")
        with pytest.raises(InvalidValue):
            keys.create_key(store, "bad name", "match")
        ring = keys.KeyRing(store)
        ring.reload()
        assert ring.authenticate_cached(token) == key
        assert keys.revoke_key(store, key.prefix).revoked_at is not None
        assert keys.authenticate(store, token) is None
        ring.reload()
        assert ring.authenticate_cached(token) is False  # gone from the ring
        with pytest.raises(NotFound):
            keys.revoke_key(store, "nobody")
    # only a digest is stored, never the token
    raw = sqlite3.connect(db).execute("SELECT * FROM api_keys").fetchall()
    secret = token.split("_", 2)[2]  # hsk_<hex prefix>_<secret>; the secret may hold "_"
    assert token not in repr(raw) and secret not in repr(raw)


def test_ring_reload_rebuilds_only_when_the_active_keys_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = keys._key
    monkeypatch.setattr(keys, "_key", lambda row: built.append(1) or real(row))
    with Store.open(tmp_path / "hashsvc.db") as store:
        a, token_a = keys.create_key(store, "a", "match")
        ring = keys.KeyRing(store)
        ring.reload()
        assert ring.authenticate_cached(token_a) == a
        built.clear()
        ring.reload()
        assert built == []  # nothing changed: nothing rebuilt
        # a revoke and a create between two reloads keep the count: both still seen
        keys.revoke_key(store, "a")
        b, token_b = keys.create_key(store, "b", "match")
        built.clear()
        ring.reload()
        assert built and ring.authenticate_cached(token_a) is False
        assert ring.authenticate_cached(token_b) == b
        keys.revoke_key(store, "b")
        ring.reload()
        assert ring.authenticate_cached(token_b) is False


def test_key_changes_are_audited_in_their_transaction(tmp_path: Path) -> None:
    from hashsvc import audit

    with Store.open(tmp_path / "hashsvc.db") as store:
        key, token = keys.create_key(store, "ops", "match,review")
        keys.revoke_key(store, "ops")
        keys.revoke_key(store, "ops")  # a second revoke changes nothing: no second row
        rows = audit.read(store)
    assert [(r.action, r.key_id, r.detail) for r in rows] == [
        ("key.create", None, {"key": key.id, "name": "ops", "scopes": ["match", "review"]}),
        ("key.revoke", None, {"key": key.id, "name": "ops", "scopes": ["match", "review"]}),
    ]
    assert token not in repr(rows) and token.split("_", 2)[2] not in repr(rows)


def test_admin_implies_metrics_only() -> None:
    k = keys.ApiKey(1, "a", "00000000", frozenset({"admin"}), 0.0)
    assert k.has("admin") and k.has("metrics") and not k.has("match") and not k.has("review")


def test_keys_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        app,
        ["keys", "create", "--name", "ops", "--scopes", "match,admin", "--data-dir", str(tmp_path)],
    )
    assert out.exit_code == 0, out.output
    created = json.loads(out.stdout.splitlines()[0])
    assert created["token"].startswith("hsk_") and created["scopes"] == ["admin", "match"]
    listed = runner.invoke(app, ["keys", "ls", "--data-dir", str(tmp_path)])
    assert created["token"] not in listed.stdout and '"name": "ops"' in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", "ops", "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 0 and json.loads(revoked.stdout)["revoked_at"]
    assert runner.invoke(app, ["keys", "ls", "--data-dir", str(tmp_path)]).stdout == ""
    bad = runner.invoke(
        app, ["keys", "create", "--name", "x", "--scopes", "root", "--data-dir", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "unknown scope" in bad.output
