"""One line naming the machine a benchmark ran on (for the RESULTS files)."""

from __future__ import annotations

import os
import platform
import subprocess


def machine() -> str:
    """CPU model, core count and Python version."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))  # fmt: skip
    except Exception:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"
