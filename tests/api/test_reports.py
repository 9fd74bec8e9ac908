"""Reports: created durably with each block/report, listed, resolved, exported, notified."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from fastapi.testclient import TestClient

from hashsvc import audit
from hashsvc.store import Store
from tests.api.conftest import Env, jpeg_headers, make_app, running, upload_bytes


def _match(client: TestClient, env: Env, seed: int) -> dict[str, Any]:
    r = client.post("/v1/match", content=upload_bytes(seed), headers=jpeg_headers(env))
    assert r.status_code == 200
    return r.json()


def test_report_record_and_listing(client: TestClient, env: Env) -> None:
    first = _match(client, env, 1)
    second = _match(client, env, 3)
    _match(client, env, 9)  # allow: no report
    r = client.get(f"/v1/reports/{first['report_id']}", headers=env.auth("review"))
    assert r.status_code == 200
    rep = r.json()
    assert rep["verdict"] == "block" and rep["status"] == "open" and rep["source"] == "media"
    assert rep["request_id"] == first["request_id"] and rep["key_id"] == env.key_ids["all"]
    assert rep["hashes"]["md5"] == first["hashes"]["md5"]
    assert all("distance" in m and "external_id" not in m for m in rep["matches"])

    page = client.get("/v1/reports?limit=1", headers=env.auth("review")).json()
    assert [i["id"] for i in page["items"]] == [second["report_id"]]
    nxt = client.get(
        f"/v1/reports?limit=1&before_id={page['next_before_id']}", headers=env.auth("review")
    ).json()
    assert [i["id"] for i in nxt["items"]] == [first["report_id"]] and nxt["next_before_id"] is None
    assert (
        client.get("/v1/reports?since=2100-01-01T00:00:00Z", headers=env.auth("review")).json()[
            "items"
        ]
        == []
    )
    assert (
        len(
            client.get("/v1/reports?until=2100-01-01T00:00:00", headers=env.auth("review")).json()[
                "items"
            ]
        )
        == 2
    )
    assert client.get("/v1/reports/99999", headers=env.auth("review")).status_code == 404
    assert client.get("/v1/reports?status=bogus", headers=env.auth("review")).status_code == 422


def test_resolve_confirm_and_false_positive_disabling(client: TestClient, env: Env) -> None:
    block = _match(client, env, 1)
    rid = block["report_id"]
    h = env.auth("review")
    r = client.post(
        f"/v1/reports/{rid}/resolve", json={"status": "confirmed", "note": "ok"}, headers=h
    )
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert r.json()["resolution"]["note"] == "ok" and r.json()["disabled_entry_ids"] == []
    again = client.post(f"/v1/reports/{rid}/resolve", json={"status": "confirmed"}, headers=h)
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    bad = client.post(f"/v1/reports/{rid}/resolve", json={"status": "open"}, headers=h)
    assert bad.status_code == 422
    missing = client.post("/v1/reports/424242/resolve", json={"status": "confirmed"}, headers=h)
    assert missing.status_code == 404

    watch = _match(client, env, 3)
    r = client.post(
        f"/v1/reports/{watch['report_id']}/resolve",
        json={"status": "false_positive", "note": "a kitten", "disable_entries": True},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["disabled_entry_ids"]
    # the matched entries no longer match: the same upload is now allowed
    assert _match(client, env, 3)["verdict"] == "allow"
    confirmed = client.post(
        f"/v1/reports/{_match(client, env, 2)['report_id']}/resolve",
        json={"status": "confirmed", "disable_entries": True},
        headers=h,
    )
    assert confirmed.status_code == 422


def test_export_for_a_hotline(client: TestClient, env: Env) -> None:
    block = _match(client, env, 1)
    _match(client, env, 3)
    client.post(
        f"/v1/reports/{block['report_id']}/resolve",
        json={"status": "confirmed"},
        headers=env.auth("review"),
    )
    r = client.get("/v1/reports/export?status=confirmed", headers=env.auth("review"))
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["format"] == "hashsvc-report-export" and doc["version"] == 1
    assert doc["next_before_id"] is None  # the whole export: nothing more matches
    (rep,) = doc["reports"]
    assert rep["report_id"] == block["report_id"] and rep["review"]["resolved_at"]
    assert rep["media_hashes"]["sha256"] == block["hashes"]["sha256"]
    assert all("external_id" not in m for m in rep["matches"])
    full = client.get(f"/v1/reports/export?report_id={block['report_id']}", headers=env.auth())
    assert all("external_id" in m for m in full.json()["reports"][0]["matches"])


def _block_reports(client: TestClient, env: Env, n: int) -> list[int]:
    """`n` + 1 block reports, newest first: one upload, then a batch of its hashes (one
    report per item, in one request, without decoding anything again)."""
    upload = _match(client, env, 1)
    item = {"pdq": upload["hashes"]["pdq"], "phash": upload["hashes"]["phash"]}
    r = client.post("/v1/match/hashes", json={"items": [item] * n}, headers=env.auth())
    assert r.status_code == 200 and r.json()["counts"]["block"] == n
    ids = [upload["report_id"], *(i["report_id"] for i in r.json()["items"])]
    return sorted(ids, reverse=True)


def _export_pages(client: TestClient, env: Env, **query: Any) -> list[dict[str, Any]]:
    """Every page of an export, following `next_before_id` with the same filters."""
    docs: list[dict[str, Any]] = []
    params = dict(query)
    while True:
        r = client.get("/v1/reports/export", params=params, headers=env.auth("review"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["format"] == "hashsvc-report-export" and doc["version"] == 1
        docs.append(doc)
        if doc["next_before_id"] is None:
            return docs
        assert len(docs) < 20, "the export never says it is complete"
        params = {**query, "before_id": doc["next_before_id"]}


def _ids(docs: list[dict[str, Any]]) -> list[int]:
    return [rep["report_id"] for doc in docs for rep in doc["reports"]]


def test_export_pages_through_every_report(client: TestClient, env: Env) -> None:
    every = _block_reports(client, env, 6)  # 7 reports
    docs = _export_pages(client, env, limit=3)
    # every report once, newest first, in pages of 3, 3, 1: none dropped, none repeated
    assert _ids(docs) == every
    assert [len(d["reports"]) for d in docs] == [3, 3, 1]
    # a page that is not the last points at its own oldest report, as the listing does
    listing = client.get("/v1/reports?limit=3", headers=env.auth("review")).json()
    assert docs[0]["next_before_id"] == docs[0]["reports"][-1]["report_id"]
    assert docs[0]["next_before_id"] == listing["next_before_id"]
    # a page that holds exactly the rest says so, rather than pointing at an empty page
    (whole,) = _export_pages(client, env, limit=len(every))
    assert _ids([whole]) == every
    # the default page is larger than these reports: one document, complete
    (default,) = _export_pages(client, env)
    assert _ids([default]) == every
    bad = client.get("/v1/reports/export?before_id=0", headers=env.auth("review"))
    assert bad.status_code == 422
    # each page downloads under its own name, so saving the pages by name keeps them all
    names = {
        client.get("/v1/reports/export", params=p, headers=env.auth("review")).headers[
            "content-disposition"
        ]
        for p in ({"limit": 3}, {"limit": 3, "before_id": docs[0]["next_before_id"]})
    }
    assert len(names) == 2


def test_export_pages_with_filters(client: TestClient, env: Env) -> None:
    every = _block_reports(client, env, 6)
    confirmed = every[1::2]  # 3 of the 7, not adjacent: a page must skip the others
    for rid in confirmed:
        r = client.post(
            f"/v1/reports/{rid}/resolve", json={"status": "confirmed"}, headers=env.auth("review")
        )
        assert r.status_code == 200
    docs = _export_pages(client, env, status="confirmed", limit=2)
    assert _ids(docs) == confirmed and [len(d["reports"]) for d in docs] == [2, 1]
    assert all(rep["status"] == "confirmed" for d in docs for rep in d["reports"])
    opened = _export_pages(client, env, status="open", since="2000-01-01T00:00:00Z", limit=2)
    assert _ids(opened) == [rid for rid in every if rid not in confirmed]
    assert [len(d["reports"]) for d in opened] == [2, 2]
    # picked reports page too, newest first whatever order they were asked in
    picked = sorted(every[:5])
    docs = _export_pages(client, env, report_id=picked, limit=2)
    assert _ids(docs) == every[:5] and [len(d["reports"]) for d in docs] == [2, 2, 1]
    (future,) = _export_pages(client, env, since="2100-01-01T00:00:00Z", limit=2)
    assert future["reports"] == [] and future["next_before_id"] is None


def test_reports_survive_a_restart_and_audit_is_written(env: Env) -> None:
    with running(make_app(env)) as c:
        block = _match(c, env, 1)
        for _ in range(3):
            _match(c, env, 9)
    with running(make_app(env)) as c:
        r = c.get(f"/v1/reports/{block['report_id']}", headers=env.auth("review"))
        assert r.status_code == 200 and r.json()["request_id"] == block["request_id"]
    with Store.open(env.data_dir / "hashsvc.db") as store:
        rows = audit.read(store)
    matched = [a for a in rows if a.verdict == "block"]
    assert matched[0].report_id == block["report_id"] and matched[0].entry_ids
    allows = [a for a in rows if a.verdict == "allow"]
    assert sum(a.count for a in allows) == 3  # flushed at shutdown
    # counted per key and action: one row here, saying how many requests it stands for
    assert sum(a.detail.get("requests", 1) for a in allows) == 3
    assert all(a.entry_ids == [] and set(a.detail) <= {"requests", "until"} for a in allows)


def test_webhook_notified_off_the_request_path(env: Env) -> None:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            got.set()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        with running(make_app(env, webhook_url=url)) as c:
            block = _match(c, env, 1)
            assert got.wait(10)
    finally:
        server.shutdown()
        server.server_close()
    (note,) = received
    assert note == {
        "event": "report.created",
        "report_id": block["report_id"],
        "verdict": "block",
        "request_id": block["request_id"],
        "lists": ["known"],
    }
