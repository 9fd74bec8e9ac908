"""No response to a key without the admin scope ever contains a trusted list's hash.

A caller's own upload may hash exactly like a list entry (a 64-bit pHash survives a
JPEG re-encoding), and echoing the caller's own hashes back reveals nothing it does not
hold; so the property is: no list hash the caller did not itself send or upload.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from hashsvc import hashing
from tests.api.conftest import Env, jpeg_headers, upload_bytes


def test_no_list_hash_reaches_a_non_admin_key(client: TestClient, env: Env) -> None:
    bodies: list[str] = []
    own: set[str] = set()
    for who in ("match", "review", "metrics"):
        h = env.auth(who)
        for seed in (1, 2, 3, 9):
            data = upload_bytes(seed)
            near = hashing.hash_media(data)
            fast = hashing.hash_media(data, path=hashing.HashPath.FAST)
            own |= {h.hex for x in (near, fast) for h in (x.pdq, x.phash, x.md5, x.sha256) if h}
            for r in (
                client.post("/v1/match", content=data, headers=jpeg_headers(env, who)),
                client.post("/v1/match", files={"file": ("a.jpg", data)}, headers=h),
                client.post("/v1/hash", content=data, headers=jpeg_headers(env, who)),
                client.post(
                    "/v1/match/hashes",
                    json={"pdq": near.pdq.hex, "phash": near.phash.hex},
                    headers=h,
                ),
                client.post("/v1/match/hashes", json={"items": [{"pdq": near.pdq.hex}]}, headers=h),
            ):
                bodies.append(r.text)
        for path in (
            "/v1/reports",
            "/v1/reports/export",
            "/v1/reports/1",
            "/metrics",
            "/v1/lists",
            "/v1/lists/known/entries",
            "/openapi.json",
            "/readyz",
        ):
            bodies.append(client.get(path, headers=h).text)
        r = client.post("/v1/reports/1/resolve", json={"status": "confirmed"}, headers=h)
        bodies.append(r.text)
    text = "\n".join(bodies).lower()
    assert '"verdict":"block"' in text and '"verdict":"report"' in text  # matches happened
    unknown = env.list_hashes - own
    assert len(unknown) >= 6  # every enrolled MD5 and SHA-256 at least
    leaked = sorted(h for h in unknown if h in text)
    assert leaked == []

    # the check can fail: an admin listing entries does see them
    admin = client.get("/v1/lists/known/entries", headers=env.auth("admin")).text
    assert any(h in admin for h in unknown)
