"""Coverage-guided fuzzing of the media decoder with atheris (libFuzzer), bounded in time.

    HASHSVC_LONG=1 .venv/bin/python tests/reliability/fuzz_media.py     # make fuzz: 120 s
    .venv/bin/python tests/reliability/fuzz_media.py -max_total_time=30  # libFuzzer flags

Property (the same as tests/reliability/test_fuzz.py, from media_seeds.py): on every
input, `hash_media` on the reference and on the matching decode path returns complete
hashes or raises `MediaRejected`. Anything else escaping is a crash; so is an input that
takes more than TIME_BOUND_S of CPU (checked here; `-timeout` bounds wall time) or a
process above `-rss_limit_mb`. Pillow and hashsvc are instrumented for coverage; the
seed corpus (every accepted format, the bridge photos, header-edited bombs) is written
at run time into a temp dir.

The script runs itself as a child process: the child fuzzes and stops by itself after
`-max_total_time`; the parent prints the figures (executions, executions/s, the slowest
input), removes the temp corpus, and keeps any crash artefact (in the temp dir it names,
never in the repo). Exit status: 0 when nothing was found, libFuzzer's status otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LONG = os.environ.get("HASHSVC_LONG", "") == "1"
CHILD = "HASHSVC_FUZZ_CHILD"
STATS_FILE = "stats.json"


def libfuzzer_flags(work: Path) -> list[str]:
    """Defaults; flags given on the command line come later and win."""
    return [
        str(work / "corpus"),
        f"-max_total_time={120 if LONG else 20}",
        "-rss_limit_mb=2048",  # the interpreter with numba, faiss and Pillow is ~400 MB
        "-timeout=20",  # hard wall-time limit per input (WALL_BOUND_S); the CPU-time
        # bound TIME_BOUND_S is checked in the target
        "-max_len=65536",
        f"-artifact_prefix={work / 'artifacts'}/",
        "-print_final_stats=1",
    ]


# --- the child: the fuzz target ---------------------------------------------------------


def child_main(work: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["hashsvc", "PIL"]):
        import PIL.Image

        PIL.Image.init()  # imports every format plugin now, so they are instrumented too
        from hashsvc import hashing, media, robust  # noqa: F401

    from tests.reliability import media_seeds as ms

    slowest = {"seconds": 0.0, "size": 0, "runs": 0, "rejected": 0, "hashed": 0}
    last_write = [0.0]

    def save_stats() -> None:
        (work / STATS_FILE).write_text(json.dumps(slowest))
        last_write[0] = time.monotonic()

    def test_one_input(data: bytes) -> None:
        start = time.thread_time()  # CPU time: the box is shared (see media_seeds)
        result = ms.hash_both_paths(data, ms.FUZZ_MAX_PIXELS)  # raises on a bug
        took = time.thread_time() - start
        slowest["runs"] += 1
        slowest["hashed" if result == "hashed" else "rejected"] += 1
        if took > slowest["seconds"]:
            slowest.update(seconds=took, size=len(data))
        if took > ms.TIME_BOUND_S:
            raise AssertionError(f"one input took {took:.2f} s (bound {ms.TIME_BOUND_S} s)")
        if time.monotonic() - last_write[0] > 2.0:
            save_stats()

    ms.hash_both_paths(ms.seeds()["gen-png"], ms.FUZZ_MAX_PIXELS)  # load numba kernels first
    warnings.simplefilter("ignore")  # Pillow's warnings about corrupt tags: noise only
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def write_corpus(corpus: Path) -> int:
    from hashsvc.config import Settings
    from tests.reliability import media_seeds as ms

    corpus.mkdir(parents=True)
    items = dict(ms.seeds())
    items.update({k: v for k, v in ms.bombs(Settings().max_pixels).items() if len(v) < 65536})
    for name, data in items.items():
        (corpus / name).write_bytes(data)
    return len(items)


# --- the parent: set up, run, report ----------------------------------------------------


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hashsvc-fuzz-"))
    (work / "artifacts").mkdir()
    seeds = write_corpus(work / "corpus")
    argv = [sys.executable, __file__, *libfuzzer_flags(work), *sys.argv[1:]]
    print(f"fuzz_media: {seeds} seeds, work dir {work}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env={**os.environ, CHILD: str(work)},
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        cwd=work,  # anything libFuzzer writes by default lands in the temp dir
    )
    assert proc.stderr is not None
    final: dict[str, str] = {}
    for line in proc.stderr:
        sys.stderr.write(line)
        m = re.match(r"stat::(\w+):\s*(\S+)", line)
        if m:
            final[m.group(1)] = m.group(2)
    status = proc.wait()
    wall = time.monotonic() - started
    stats = json.loads((work / STATS_FILE).read_text()) if (work / STATS_FILE).exists() else {}
    artefacts = sorted((work / "artifacts").iterdir())
    print(
        f"fuzz_media: exit {status} after {wall:.0f} s; "
        f"executions {final.get('number_of_executed_units', '?')}, "
        f"{final.get('average_exec_per_sec', '?')}/s, peak RSS {final.get('peak_rss_mb', '?')} MB; "
        f"slowest input {stats.get('seconds', 0) * 1000:.0f} ms CPU "
        f"({stats.get('size', 0)} bytes); "
        f"of the last stats snapshot: {stats.get('hashed', 0)} hashed, "
        f"{stats.get('rejected', 0)} rejected",
        flush=True,
    )
    shutil.rmtree(work / "corpus", ignore_errors=True)
    if artefacts:
        print("fuzz_media: FOUND (inputs kept):", *map(str, artefacts), sep="\n  ")
        return status or 1
    shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    if os.environ.get(CHILD):
        child_main(Path(os.environ[CHILD]))
    else:
        sys.exit(main())
