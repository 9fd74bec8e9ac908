"""Concatenate the per-benchmark result files into bench/RESULTS.md (`make bench`)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("RESULTS-hashing.md", "RESULTS-search.md", "RESULTS-robustness.md",
         "RESULTS-robustness-holdout.md", "RESULTS-api.md", "RESULTS-scan.md",
         "RESULTS-video.md")  # fmt: skip
HEADER = """# Benchmark results

Each section is written by its script (`make bench` runs them all and rebuilds this file);
each names the machine, the exact command and the load it ran under. Absolute times on
this shared 2-core box drift with other work; the side-by-side ratios hold better.
"""


def main() -> None:
    sections = [HEADER]
    for name in PARTS:
        path = HERE / name
        if path.exists():
            sections.append(path.read_text().strip())
    (HERE / "RESULTS.md").write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
