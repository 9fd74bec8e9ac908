"""Lists over HTTP (admin): create, inspect, bulk add (JSON and list files), enable,
disable, delete; changes visible to matching at once on this worker."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hashsvc import hashing
from tests.api.conftest import Env, jpeg_headers, upload_bytes


def _verdict(client: TestClient, env: Env, seed: int) -> str:
    r = client.post("/v1/match", content=upload_bytes(seed), headers=jpeg_headers(env))
    return str(r.json()["verdict"])


def test_create_and_read_lists(client: TestClient, env: Env) -> None:
    h = env.auth("admin")
    r = client.post(
        "/v1/lists",
        json={
            "name": "ncii",
            "action": "report",
            "pdq_threshold": 20,
            "options": {"dihedral": False},
        },
        headers=h,
    )
    assert r.status_code == 201
    assert r.json()["pdq_threshold"] == 20 and r.json()["options"] == {"dihedral": False}
    every = {"dihedral": True, "trim_borders": False, "crops": False, "corroborate": False}
    r = client.post(
        "/v1/lists", json={"name": "strict", "action": "block", "options": every}, headers=h
    )
    assert r.status_code == 201 and r.json()["options"] == every
    typo = {"name": "x", "action": "block", "options": {"corroborated": False}}
    assert client.post("/v1/lists", json=typo, headers=h).status_code == 422
    assert (
        client.post("/v1/lists", json={"name": "NCII", "action": "block"}, headers=h).status_code
        == 409
    )
    for bad in (
        {"name": "bad name", "action": "block"},
        {"name": "x", "action": "delete"},
        {"name": "x", "action": "block", "pdq_threshold": 999},
    ):
        assert client.post("/v1/lists", json=bad, headers=h).status_code == 422
    names = [lst["name"] for lst in client.get("/v1/lists", headers=h).json()["lists"]]
    assert names == ["known", "ncii", "strict", "watch"]
    known = client.get("/v1/lists/known", headers=h).json()
    assert known["entries"] == 8 and known["enabled_entries"] == 8
    assert client.get("/v1/lists/nope", headers=h).status_code == 404
    page = client.get("/v1/lists/known/entries?limit=5", headers=h).json()
    assert len(page["items"]) == 5 and page["next_after_id"] == page["items"][-1]["id"]
    rest = client.get(f"/v1/lists/known/entries?after_id={page['next_after_id']}", headers=h).json()
    assert len(rest["items"]) == 3 and rest["next_after_id"] is None


def test_bulk_add_json_and_files(client: TestClient, env: Env) -> None:
    h = env.auth("admin")
    client.post("/v1/lists", json={"name": "new", "action": "block"}, headers=h)
    assert _verdict(client, env, 7) == "allow"
    ref = hashing.hash_media(upload_bytes(7))
    entries = [{"signal_type": "pdq", "hash": ref.pdq.hex, "id": 17, "category": "x"}]
    r = client.post("/v1/lists/new/entries", json={"entries": entries}, headers=h)
    assert r.status_code == 200 and r.json()["added"] == 1
    assert _verdict(client, env, 7) == "block"  # live at once on this worker
    again = client.post("/v1/lists/new/entries", json={"entries": entries}, headers=h).json()
    assert again["added"] == 0 and again["skipped_duplicates"] == 1

    bad = [
        {"signal_type": "pdq", "hash": "xyz"},
        {"signal_type": "md5", "hash": "0" * 32},
        {"signal_type": "sha1", "hash": "0" * 40},
    ]
    r = client.post("/v1/lists/new/entries", json={"entries": bad}, headers=h)
    assert r.status_code == 422 and r.json()["error"] == "invalid_list"
    assert [p["line"] for p in r.json()["problems"]] == [1, 3]
    r = client.post("/v1/lists/new/entries", json={"entries": bad, "skip_invalid": True}, headers=h)
    assert r.status_code == 200 and r.json()["added"] == 1 and r.json()["invalid_skipped"] == 2

    csv = b"signal_type,hash,id\nphash,00000000000000ff,a\nmd5,zz,b\n"
    r = client.post("/v1/lists/new/entries", content=csv, headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 422 and r.json()["problems"][0]["line"] == 3
    r = client.post(
        "/v1/lists/new/entries?skip_invalid=true",
        content=csv,
        headers={**h, "Content-Type": "text/csv"},
    )
    assert r.json()["added"] == 1
    txt = b"# sha256 list\n" + b"ab" * 32 + b"\n"
    r = client.post(
        "/v1/lists/new/entries?signal_type=sha256",
        content=txt,
        headers={**h, "Content-Type": "text/plain"},
    )
    assert r.status_code == 200 and r.json()["added"] == 1
    r = client.post(
        "/v1/lists/new/entries", content=txt, headers={**h, "Content-Type": "text/plain"}
    )
    assert r.status_code == 422  # a txt list needs its signal type
    r = client.post(
        "/v1/lists/new/entries", content=b"x", headers={**h, "Content-Type": "image/png"}
    )
    assert r.status_code == 415
    r = client.post("/v1/lists/nope/entries", json={"entries": entries}, headers=h)
    assert r.status_code == 404
    r = client.post("/v1/lists/new/entries", json={"entries": []}, headers=h)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_disable_enable_delete_entries(client: TestClient, env: Env) -> None:
    h = env.auth("admin")
    items = client.get("/v1/lists/known/entries?limit=1000", headers=h).json()["items"]
    assert _verdict(client, env, 1) == "block"
    for e in items:
        r = client.patch(f"/v1/lists/known/entries/{e['id']}", json={"enabled": False}, headers=h)
        assert r.status_code == 200 and r.json()["enabled"] is False
    assert _verdict(client, env, 1) == "allow"
    first = items[0]["id"]
    r = client.patch(
        f"/v1/lists/known/entries/{first}", json={"enabled": False, "disabled_hours": 1}, headers=h
    )
    assert r.json()["disabled_until"] is not None
    bad = client.patch(
        f"/v1/lists/known/entries/{first}", json={"enabled": True, "disabled_hours": 1}, headers=h
    )
    assert bad.status_code == 422
    for e in items:
        client.patch(f"/v1/lists/known/entries/{e['id']}", json={"enabled": True}, headers=h)
    assert _verdict(client, env, 1) == "block"
    # an entry is addressed through its own list only
    assert (
        client.patch(
            f"/v1/lists/watch/entries/{first}", json={"enabled": False}, headers=h
        ).status_code
        == 404
    )
    assert client.delete(f"/v1/lists/watch/entries/{first}", headers=h).status_code == 404
    for e in items:
        r = client.delete(f"/v1/lists/known/entries/{e['id']}", headers=h)
        assert r.status_code == 204 and r.content == b""
    assert client.delete(f"/v1/lists/known/entries/{first}", headers=h).status_code == 404
    assert _verdict(client, env, 1) == "allow"
    assert (
        client.patch("/v1/lists/known/entries/99999", json={"enabled": True}, headers=h).status_code
        == 404
    )
