"""`/v1/match`, `/v1/match/hashes`, `/v1/hash`: verdicts, what each scope sees, bad input."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image

from hashsvc import hashing
from tests.api.conftest import Env, enrolled_bytes, image, jpeg_headers, upload_bytes
from tests.conftest import PDQ_DATA, encode


def test_block_report_allow_from_raw_bodies(client: TestClient, env: Env) -> None:
    block = client.post("/v1/match", content=upload_bytes(1), headers=jpeg_headers(env))
    assert block.status_code == 200
    body = block.json()
    assert body["verdict"] == "block" and body["report_id"] is not None
    assert {m["list"] for m in body["matches"]} == {"known"}
    assert body["request_id"] == block.headers["x-request-id"]
    assert set(body["hashes"]) >= {"pdq", "pdq_quality", "phash", "md5", "sha256"}
    # a matched upload's hashes are the reference ones (they go into the report)
    assert body["hashes"]["decode_path"] == "reference"

    report = client.post(
        "/v1/match", content=upload_bytes(3), headers={**env.auth(), "Content-Type": "image/jpeg"}
    ).json()
    assert report["verdict"] == "report" and report["report_id"] is not None

    allow = client.post("/v1/match", content=upload_bytes(9), headers=jpeg_headers(env)).json()
    assert allow == {**allow, "verdict": "allow", "matches": [], "report_id": None}


def test_multipart_and_octet_stream(client: TestClient, env: Env) -> None:
    files = {"file": ("holiday.jpg", upload_bytes(2), "image/jpeg"), "note": (None, "x")}
    r = client.post("/v1/match", files=files, headers=env.auth())
    assert r.status_code == 200 and r.json()["verdict"] == "block"
    r = client.post(
        "/v1/match",
        content=upload_bytes(9),
        headers={**env.auth(), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200 and r.json()["verdict"] == "allow"


def test_rotated_upload_matches_through_dihedral_search(client: TestClient, env: Env) -> None:
    rotated = encode(image(1).transpose(Image.Transpose.ROTATE_90), "JPEG", quality=85)
    body = client.post("/v1/match", content=rotated, headers=jpeg_headers(env, "review")).json()
    assert body["verdict"] == "block"
    assert any(m.get("variant") for m in body["matches"] if m["signal_type"] == "pdq")


def test_scopes_decide_what_a_match_reveals(client: TestClient, env: Env) -> None:
    def matches(who: str) -> list[dict[str, object]]:
        r = client.post("/v1/match", content=upload_bytes(1), headers=jpeg_headers(env, who))
        return r.json()["matches"]

    plain = matches("match")
    # list metadata beyond list name and entry id (category, the list's own id) is
    # admin-only: DESIGN.md's privacy rule wins over the example shape
    assert plain and all(set(m) == {"list", "entry_id", "signal_type"} for m in plain)
    review = matches("review")
    assert all("distance" in m and "external_id" not in m and "category" not in m for m in review)
    full = matches("all")
    assert all("distance" in m and "external_id" in m for m in full)
    assert all(m["category"] == "cat-known" for m in full)


def test_bad_media_is_422_with_the_reason(client: TestClient, env: Env) -> None:
    for data, reason in (
        (b"", "empty"),
        (b"not an image at all", "not an image"),
        (b"%PDF-1.7 ...", "PDF"),
        (upload_bytes(1)[:2000], "truncated"),
    ):
        r = client.post("/v1/match", content=data, headers=jpeg_headers(env))
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "media_rejected" and reason in r.json()["detail"]


def test_unsupported_content_type_is_415_and_bad_multipart_422(
    client: TestClient, env: Env
) -> None:
    r = client.post(
        "/v1/match", content=b"{}", headers={**env.auth(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    r = client.post("/v1/match", files={"other": ("a.jpg", b"x")}, headers=env.auth())
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    r = client.post(
        "/v1/match",
        content=b"--zz\r\ngarbage",
        headers={**env.auth(), "Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_multipart"


def test_low_quality_pdq_is_not_used_and_says_so(client: TestClient, env: Env) -> None:
    flat = encode(Image.new("RGB", (300, 300), (128, 128, 128)), "PNG")
    body = client.post("/v1/match", content=flat, headers=jpeg_headers(env)).json()
    assert body["verdict"] == "allow"
    assert any("quality" in n for n in body["notes"])


def test_hash_lookups_single_and_batch(client: TestClient, env: Env) -> None:
    ref = hashing.hash_media(enrolled_bytes(1))
    near = hashing.hash_media(upload_bytes(1))
    single = client.post(
        "/v1/match/hashes",
        json={"pdq": near.pdq.hex, "pdq_quality": 90},
        headers=env.auth("review"),
    )
    assert single.status_code == 200
    body = single.json()
    assert body["verdict"] == "block" and body["report_id"] and "hashes" not in body
    assert [m["signal_type"] for m in body["matches"]] == ["pdq"]

    items = [
        {"md5": ref.md5.hex},  # exact match: block
        {"phash": hashing.hash_media(upload_bytes(3)).phash.hex},  # report
        {"pdq": "0" * 64, "pdq_quality": 100},  # allow
        {"pdq": near.pdq.hex, "pdq_quality": 10},  # too low quality: allow, with a note
    ]
    batch = client.post("/v1/match/hashes", json={"items": items}, headers=env.auth()).json()
    assert [i["verdict"] for i in batch["items"]] == ["block", "report", "allow", "allow"]
    assert batch["counts"] == {"block": 1, "report": 1, "allow": 2}
    assert batch["items"][3]["notes"] and batch["items"][2]["report_id"] is None
    assert all(i["report_id"] for i in batch["items"][:2])


def test_a_full_batch_of_pdq_lookups_answers_each_item_in_place(
    client: TestClient, env: Env
) -> None:
    """1,000 PDQ-only items (the column-wise path) with two known ones among them: the
    verdicts, the report and the plain allows land at the right positions."""
    import numpy as np

    near = hashing.hash_media(upload_bytes(1)).pdq.hex
    watch = hashing.hash_media(upload_bytes(3)).pdq.hex
    rng = np.random.default_rng(0)
    items: list[dict[str, object]] = [
        {"pdq": rng.integers(0, 256, 32, np.uint8).tobytes().hex()} for _ in range(1000)
    ]
    items[500] = {"pdq": near.upper(), "pdq_quality": 95}
    items[999] = {"pdq": watch}
    items[3] = {"pdq": near, "pdq_quality": 5}  # too low to decide: allow with a note
    r = client.post("/v1/match/hashes", json={"items": items}, headers=env.auth("review"))
    assert r.status_code == 200
    out = r.json()["items"]
    assert out[500]["verdict"] == "block" and out[500]["report_id"]
    assert out[500]["matches"][0]["distance"] <= 31
    assert out[999]["verdict"] == "report" and out[999]["report_id"]
    assert out[3]["verdict"] == "allow" and out[3]["notes"]
    plain = {"verdict": "allow", "matches": [], "report_id": None, "notes": []}
    assert sum(o == plain for o in out) == 997
    assert r.json()["counts"] == {"block": 1, "report": 1, "allow": 998}
    # rendered item by item, the body is the bytes JSONResponse renders for the whole
    from fastapi.responses import JSONResponse

    assert r.content == JSONResponse(r.json()).body


def test_hash_lookup_validation(client: TestClient, env: Env) -> None:
    for body in (
        {},
        {"pdq": "zz" * 32},
        {"pdq": "ab"},
        {"md5": "0" * 32, "colour": "red"},
        {"pdq_quality": 50, "md5": "0" * 32},
        {"items": []},
        {"items": [{"md5": "0" * 32}] * 1001},
        [1, 2],
    ):
        r = client.post("/v1/match/hashes", json=body, headers=env.auth())
        assert r.status_code == 422, body
        assert r.json()["error"] == "invalid_request" and r.json()["errors"]
    r = client.post(
        "/v1/match/hashes",
        content=b"{not json",
        headers={**env.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    ok = client.post(
        "/v1/match/hashes", json={"items": [{"md5": "0" * 32}] * 1000}, headers=env.auth()
    )
    assert ok.status_code == 200 and len(ok.json()["items"]) == 1000


def test_hash_endpoint_gives_reference_hashes(client: TestClient, env: Env) -> None:
    photo = (PDQ_DATA / "bridge-mods" / "aaa-orig.jpg").read_bytes()
    r = client.post("/v1/hash?dihedral=true", content=photo, headers=jpeg_headers(env, "match"))
    assert r.status_code == 200
    expected = hashing.hash_media(photo, path=hashing.HashPath.REFERENCE, dihedral=True)
    body = r.json()
    assert body["hashes"] == {**expected.to_json(), "decode_path": "reference"}
    assert list(body["pdq_dihedral"]) == list(hashing.DIHEDRAL_NAMES)
    plain = client.post("/v1/hash", files={"file": ("x", io.BytesIO(photo))}, headers=env.auth())
    assert plain.json()["hashes"]["pdq"] == expected.pdq.hex and "pdq_dihedral" not in plain.json()
