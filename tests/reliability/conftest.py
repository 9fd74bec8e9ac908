"""Reliability tests (issue 8): fuzzing, load soak, crash safety, security.

Each runs short under `make test` and at full length under its own make target
(`make fuzz`, `make soak`, `make crash`), which sets HASHSVC_LONG=1.
"""

from __future__ import annotations

import os

LONG = os.environ.get("HASHSVC_LONG", "") == "1"


def scaled(short: float, long: float) -> float:
    """The short figure under `make test`, the long one under the make target."""
    return long if LONG else short
