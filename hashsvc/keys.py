"""API keys: creation, lookup, revocation. The one place that knows what a key looks like.

A key is ``hsk_<prefix>_<secret>``: the 8-hex-digit prefix is public (it names the key in
logs and lets the lookup use an index), the secret is 32 random bytes. Only SHA-256 of
the whole token is stored: the token is high-entropy, so a slow password hash would add
nothing, and a stolen database yields no usable key. The stored digest is compared with
`hmac.compare_digest`, so timing tells an attacker nothing about how close a guess was.

Scopes are independent grants (a key has exactly the scopes it was given), except that
``admin`` implies ``metrics``:

- ``match``: ask for verdicts (`/v1/match`, `/v1/match/hashes`, `/v1/hash`).
- ``review``: read and resolve reports; see match distances.
- ``admin``: manage lists; see lists' own metadata (external ids) and hashes.
- ``metrics``: scrape `/metrics`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from hashsvc.errors import Conflict, InvalidValue, NotFound
from hashsvc.store import LIST_NAME, Store

SCOPES: tuple[str, ...] = ("match", "review", "admin", "metrics")
_IMPLIED: dict[str, frozenset[str]] = {"admin": frozenset({"metrics"})}
TOKEN_PREFIX = "hsk_"
_TOKEN = re.compile(r"hsk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None = None
    #: the scopes granted, implied ones included (`has` runs several times a request)
    _granted: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        granted = self.scopes.union(*(_IMPLIED.get(s, frozenset()) for s in self.scopes))
        object.__setattr__(self, "_granted", granted)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def has(self, scope: str) -> bool:
        return scope in self._granted

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """``"match,review"`` -> scopes; unknown names are refused (a typo must not silently
    create a key that can do less, or more, than meant)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip().lower() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise InvalidValue(f"unknown scope(s) {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    if not scopes:
        raise InvalidValue("a key needs at least one scope")
    return scopes


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_prefix(token: str) -> str | None:
    """The public prefix of a well-formed token, else None (no lookup is worth doing)."""
    m = _TOKEN.fullmatch(token)
    return m.group(1) if m else None


def create_key(store: Store, name: str, scopes: str | Iterable[str]) -> tuple[ApiKey, str]:
    """Create a key; returns it and the token, which exists nowhere else afterwards."""
    if not isinstance(name, str) or not LIST_NAME.fullmatch(name):
        raise InvalidValue(
            f"key name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    wanted = parse_scopes(scopes)
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"a key named {name!r} already exists")
        while True:  # a prefix collision is a 1-in-4-billion event: just draw again
            prefix = secrets.token_hex(4)
            token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
            if not conn.execute("SELECT 1 FROM api_keys WHERE prefix = ?", (prefix,)).fetchone():
                break
        cur = conn.execute(
            "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, prefix, digest(token), ",".join(sorted(wanted)), store.now()),
        )
        key_id = cur.lastrowid
        assert key_id is not None
        row = conn.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        _audit(conn, store, "key.create", _key(row))
    return _key(row), token


def list_keys(store: Store, *, include_revoked: bool = True) -> list[ApiKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    with store.reading() as conn:
        rows = conn.execute(f"SELECT {_COLS} FROM api_keys{where} ORDER BY id").fetchall()
    return [_key(r) for r in rows]


def revoke_key(store: Store, name_or_prefix: str) -> ApiKey:
    """Revoke by name or prefix. Revoking twice is harmless (the first time is kept)."""
    with store.transaction() as conn:
        row = conn.execute(
            f"SELECT {_COLS} FROM api_keys WHERE name = ? OR prefix = ?",
            (name_or_prefix, name_or_prefix),
        ).fetchone()
        if row is None:
            raise NotFound(f"no key named {name_or_prefix!r}")
        if row[5] is None:  # revoking twice changes nothing and is not audited twice
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (store.now(), row[0]))
            row = conn.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (row[0],)).fetchone()
            _audit(conn, store, "key.revoke", _key(row))
    return _key(row)


def _audit(conn: sqlite3.Connection, store: Store, action: str, key: ApiKey) -> None:
    """The audit row of a key change, in the change's own transaction. `key_id` is who
    asked, and key changes are made locally (`hashsvc keys`), not by a key: None; the
    key changed is named in `detail` (id, name, scopes), never its secret."""
    from hashsvc.audit import AuditEvent, write_events

    detail = {"key": key.id, "name": key.name, "scopes": sorted(key.scopes)}
    write_events(conn, [AuditEvent(action, key_id=None, detail=detail)], store.now())


def authenticate(store: Store, token: str) -> ApiKey | None:
    """The active key this token belongs to, or None. One indexed read."""
    prefix = token_prefix(token)
    if prefix is None:
        return None
    with store.reading() as conn:
        row = conn.execute(
            f"SELECT {_COLS}, key_hash FROM api_keys WHERE prefix = ?", (prefix,)
        ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[-1]), digest(token)):
        return None
    key = _key(row[:-1])
    return key if key.active else None


class KeyRing:
    """Active keys held in memory so authenticating a request costs a dict lookup and a
    SHA-256, not a database read. `reload()` (the API's refresher calls it every tick)
    makes a revocation effective within one tick; a key created since the last reload is
    found by a fallback read (`authenticate_slow`).

    A reload first reads a fingerprint of the active set (how many, the sum and the
    largest of their ids) and rebuilds the ring only when it moved. Keys are never
    deleted and ids only grow, so a creation or a revocation always moves it (a revoke
    plus a create in one tick: the count stays, the sum grows). Why: rebuilding every
    key each tick cost a worker 2.4-2.6 ms of CPU per 0.5 s with 170 keys (bench/api.py's
    data dir), the same work every time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._by_prefix: dict[str, tuple[ApiKey, bytes]] = {}
        self._fingerprint: tuple[object, ...] | None = None

    def reload(self) -> None:
        with self.store.reading() as conn:
            fingerprint = tuple(
                conn.execute(
                    "SELECT count(*), total(id), max(id) FROM api_keys WHERE revoked_at IS NULL"
                ).fetchone()
            )
            if fingerprint == self._fingerprint:
                return
            rows = conn.execute(
                f"SELECT {_COLS}, key_hash FROM api_keys WHERE revoked_at IS NULL"
            ).fetchall()
        fresh = {r[2]: (_key(r[:-1]), bytes(r[-1])) for r in rows}
        with self._lock:
            self._by_prefix = fresh
            self._fingerprint = fingerprint

    def authenticate_cached(self, token: str) -> ApiKey | None | bool:
        """The key, None for a wrong token, or False when only the database can tell."""
        prefix = token_prefix(token)
        if prefix is None:
            return None
        found = self._by_prefix.get(prefix)
        if found is None:
            return False
        key, stored = found
        return key if hmac.compare_digest(stored, digest(token)) else None

    def authenticate_slow(self, token: str) -> ApiKey | None:
        key = authenticate(self.store, token)
        if key is not None:
            with self._lock:
                self._by_prefix[key.prefix] = (key, digest(token))
        return key


_COLS = "id, name, prefix, scopes, created_at, revoked_at"


def _key(row: sqlite3.Row | tuple[object, ...]) -> ApiKey:
    return ApiKey(
        id=int(row[0]),  # type: ignore[arg-type]
        name=str(row[1]),
        prefix=str(row[2]),
        scopes=frozenset(str(row[3]).split(",")),
        created_at=float(row[4]),  # type: ignore[arg-type]
        revoked_at=None if row[5] is None else float(row[5]),  # type: ignore[arg-type]
    )
