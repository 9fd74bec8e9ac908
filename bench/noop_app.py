"""A do-nothing ASGI app: bench/api.py serves it with the same uvicorn settings as
`hashsvc serve` (2 workers, httptools with one send per response, uvloop) to measure the HTTP
stack's own floor.

It reads the request body and answers a fixed JSON body the size of a single lookup's
`allow` answer, so the load generator, the kernel's loopback TCP and uvicorn do the same
work per request as in scenario (a), and hashsvc does none.
"""

from __future__ import annotations

import json
from typing import Any

BODY = json.dumps(
    {
        "verdict": "allow",
        "matches": [],
        "report_id": None,
        "notes": [],
        "request_id": "0" * 32,
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
