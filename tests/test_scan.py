"""`hashsvc scan` and `hashsvc.scan`: every result line of a hostile-but-benign tree,
exit codes, resume after SIGKILL, the results file, worker crashes.

All media are generated (upsampled noise, `conftest.smooth_image`). "Known" images are
enrolled into lists here, standing in for a hotline's list.

Two conditions cannot be produced honestly as root, which is how CI runs:
- a chmod 000 file is still readable by root, so where the euid is 0 the permission
  error is simulated by monkeypatching `hashsvc.scan.open_for_read` for that one file
  (in-process scans only); as a normal user the real chmod 000 is what fails;
- "deleted while the scan runs" is made deterministic with hooks that delete a file
  right after the walk listed it, or right after it was stat'ed, before it is read.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

from hashsvc import enrollment, scan
from hashsvc.cli import app
from hashsvc.cli.scan import progress_line, summary
from hashsvc.config import Settings
from hashsvc.index_sync import IndexSet
from hashsvc.store import Store
from tests.conftest import encode, smooth_image

runner = CliRunner()
HASHSVC = str(Path(sys.executable).parent / "hashsvc")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SIZE = (320, 240)
MAX_PIXELS = 1_500_000  # small, so a 2000x1000 PNG is "too large" without costing much


# --- the benign media and the lists ---------------------------------------------------


def _img(seed: int) -> Image.Image:
    return smooth_image(seed, SIZE)


@dataclass(frozen=True)
class Expect:
    """What the one result line of a file must say."""

    verdict: str | None = None
    lists: frozenset[str] = frozenset()
    skipped: str | None = None
    error_kind: str | None = None
    variant: str | None = None  # a dihedral variant that must appear among the matches


ALLOW = Expect("allow")
HOT = Expect("block", frozenset({"hotline"}))
BANK = Expect("report", frozenset({"bank"}))


def _known() -> dict[str, bytes]:
    return {
        "known/k0.jpg": encode(_img(1), quality=90),
        "known/k1.jpg": encode(_img(2), quality=90),
        "known/k2.png": encode(_img(3), "PNG"),
        "known/k3.jpg": encode(_img(4), quality=90),
    }


def _tree_files() -> dict[str, tuple[bytes, Expect]]:
    """Regular files of the tree: relative path -> (bytes, expected result)."""
    known = _known()
    files = {name: (data, BANK if name.endswith("k3.jpg") else HOT) for name, data in known.items()}
    files |= {
        # edited copies of enrolled images: resized + recompressed, recompressed hard,
        # mirrored (found through a dihedral variant), re-encoded under a lying extension
        "edits/k0-small.jpg": (encode(_img(1).resize((240, 180)), quality=70), HOT),
        "edits/k1-q40.jpg": (encode(_img(2), quality=40), HOT),
        "edits/k3-mirror.png": (
            encode(_img(4).transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"),
            Expect("report", frozenset({"bank"}), variant="flipy"),
        ),
        "edits/k2-as-webp.dat": (encode(_img(3), "WEBP", quality=90), HOT),
    }
    formats = [("jpg", "JPEG", {"quality": 85}), ("png", "PNG", {}), ("webp", "WEBP", {}),
               ("gif", "GIF", {}), ("bmp", "BMP", {}), ("tif", "TIFF", {})]  # fmt: skip
    for i in range(18):
        ext, fmt, params = formats[i % len(formats)]
        files[f"unrelated/sub{i % 3}/u{i:02d}.{ext}"] = (
            encode(_img(100 + i), fmt, **params),
            ALLOW,
        )
    files["unrelated/jpeg-named.txt"] = (encode(_img(200)), ALLOW)  # content, not extension
    good = encode(_img(201))
    files |= {
        "bad/truncated.jpg": (good[: len(good) // 2], Expect(error_kind="corrupt")),
        "bad/garbage.jpg": (b"\xff\xd8\xff" + b"garbage" * 20, Expect(error_kind="corrupt")),
        "bad/huge.png": (
            encode(Image.new("L", (2000, 1000)), "PNG"),
            Expect(error_kind="too_large"),
        ),
        "other/notes.txt": (b"meeting notes\n" * 10, Expect(skipped="not an image")),
        "other/report.pdf": (b"%PDF-1.4\n%...\n", Expect(skipped="not an image")),
        "other/photo.jpg": (b"this is text named like a photo\n", Expect(skipped="not an image")),
        "other/empty.jpg": (b"", Expect(skipped="empty file")),
        "locked.jpg": (encode(_img(202)), Expect(error_kind="permission_denied")),
    }
    return files


@dataclass
class Tree:
    root: Path
    expected: dict[str, Expect]  # path relative to root -> expectation

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)


def build_tree(root: Path, *, follow: bool = False, locked_fails: bool = True) -> Tree:
    """Write the test tree under `root`; the expectations depend on symlink following
    and on whether the chmod 000 file will really fail to open."""
    expected: dict[str, Expect] = {}
    for rel, (data, exp) in _tree_files().items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = exp
    (root / "locked.jpg").chmod(0)
    if not locked_fails:
        expected["locked.jpg"] = ALLOW
    links = root / "links"
    links.mkdir()
    os.symlink("..", links / "loop")  # a directory symlink loop
    os.symlink("missing.jpg", links / "broken.jpg")
    os.symlink("../known/k0.jpg", links / "to-known.jpg")
    os.symlink("b.lnk", links / "a.lnk")  # a file symlink loop
    os.symlink("a.lnk", links / "b.lnk")
    os.mkfifo(root / "other" / "pipe")
    expected["other/pipe"] = Expect(skipped="not a regular file (fifo)")
    if follow:  # the loop is entered once at most: it names the root, already walked
        expected["links/broken.jpg"] = Expect(skipped="broken symlink")
        expected["links/to-known.jpg"] = HOT
        expected["links/a.lnk"] = Expect(skipped="broken symlink")
        expected["links/b.lnk"] = Expect(skipped="broken symlink")
    else:
        for name in ("loop", "broken.jpg", "to-known.jpg", "a.lnk", "b.lnk"):
            expected[f"links/{name}"] = Expect(skipped="symlink not followed")
    return Tree(root, expected)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lists `hotline` (block: k0-k2) and `bank` (report: k3), enrolled from media."""
    d = tmp_path_factory.mktemp("scan-data")
    known = _known()
    with Store.open(d / "hashsvc.db") as store:
        store.create_list("hotline", "block")
        store.create_list("bank", "report")
        hot = [(n, b) for n, b in known.items() if not n.endswith("k3.jpg")]
        assert not enrollment.enroll(store, "hotline", hot).problems
        assert not enrollment.enroll(store, "bank", [("k3", known["known/k3.jpg"])]).problems
        IndexSet.open(store, d).save()
    return d


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, max_pixels=MAX_PIXELS)


def check_results(tree: Tree, results: list[dict[str, Any]]) -> None:
    """Every file has exactly one line and every line says what it must."""
    by_path: dict[str, dict[str, Any]] = {}
    for rec in results:
        rel = tree.rel(rec["path"])
        assert rel not in by_path, f"two lines for {rel}"
        by_path[rel] = rec
    assert sorted(by_path) == sorted(tree.expected)
    for rel, exp in tree.expected.items():
        rec = by_path[rel]
        assert rec.get("error_kind") == exp.error_kind, (rel, rec)
        assert rec.get("skipped") == exp.skipped, (rel, rec)
        assert rec.get("verdict") == exp.verdict, (rel, rec)
        if exp.error_kind:
            assert rec["error"], rel
        if exp.verdict is None:
            assert "matches" not in rec and "hashes" not in rec, rel
            continue
        path = tree.root / rel
        data = path.read_bytes()
        assert rec["size"] == len(data) and rec["mtime_ns"] == path.stat().st_mtime_ns
        assert rec["hashes"]["md5"] == hashlib.md5(data).hexdigest()
        assert rec["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(rec["hashes"]["pdq"]) == 64 and len(rec["hashes"]["phash"]) == 16
        assert {m["list"] for m in rec["matches"]} == exp.lists, rel
        for m in rec["matches"]:
            assert isinstance(m["entry_id"], int) and m["signal_type"] in (
                "pdq", "phash", "md5", "sha256"
            )  # fmt: skip
            # a PDQ that the item's pHash backs up may reach further (`_corroborated`)
            pdq_limit = Settings().corroborate_pdq if m.get("variant") == "corroborated" else 31
            assert 0 <= m["distance"] <= (pdq_limit if m["signal_type"] == "pdq" else 10)
        if exp.variant:
            assert exp.variant in {m.get("variant") for m in rec["matches"]}


def run_scan(
    tree_root: Path, data_dir: Path, backend: scan.Backend | None = None, **kw: Any
) -> list[scan.FileResult]:
    backend = backend or scan.InlineBackend(settings_for(data_dir))
    try:
        return list(scan.Scan([str(tree_root)], backend, **kw))
    finally:
        backend.close()


def cli(data_dir: Path, *args: str) -> tuple[int, str]:
    env = {"HASHSVC_MAX_PIXELS": str(MAX_PIXELS)}
    result = runner.invoke(app, ["scan", *args, "--data-dir", str(data_dir)], env=env)
    return result.exit_code, result.output


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def canonical(records: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


# --- every line of the tree ----------------------------------------------------------


def test_every_line_in_process_with_unreadable_and_vanishing_files(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = build_tree(tmp_path / "t")
    # two files deleted during the scan: one after the walk listed it (before its stat),
    # one after its stat (before a worker reads it)
    for name in ("gone-after-list.jpg", "gone-after-stat.jpg"):
        (tree.root / name).write_bytes(encode(_img(300)))
        tree.expected[name] = Expect(error_kind="vanished")

    real_iter, real_describe, real_open = scan.iter_files, scan.describe, scan.open_for_read

    def iter_files(*a: Any, **kw: Any) -> Iterator[Any]:
        for item in real_iter(*a, **kw):
            if isinstance(item, Path) and item.name == "gone-after-list.jpg":
                item.unlink()
            yield item

    def describe(path: Path, *, follow: bool) -> Any:
        out = real_describe(path, follow=follow)
        if path.name == "gone-after-stat.jpg":
            path.unlink()
        return out

    def open_for_read(path: str, follow: bool) -> int:
        if IS_ROOT and path.endswith("locked.jpg"):  # root would read it: see module doc
            raise PermissionError(13, "Permission denied")
        return real_open(path, follow)

    monkeypatch.setattr(scan, "iter_files", iter_files)
    monkeypatch.setattr(scan, "describe", describe)
    monkeypatch.setattr(scan, "open_for_read", open_for_read)
    results = run_scan(tree.root, data_dir)
    check_results(tree, [r.to_record() for r in results])
    for r in results:  # the JSONL line is lossless
        assert scan.FileResult.from_record(json.loads(json.dumps(r.to_record()))) == r


def test_follow_symlinks_enters_links_once_and_reads_linked_files(
    data_dir: Path, tmp_path: Path
) -> None:
    tree = build_tree(tmp_path / "t", follow=True, locked_fails=not IS_ROOT)
    results = run_scan(tree.root, data_dir, follow_symlinks=True)
    check_results(tree, [r.to_record() for r in results])


def test_cli_with_worker_processes_writes_every_line_and_touches_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    """A real subprocess with 2 worker processes; the tree is left exactly as it was."""
    tree = build_tree(tmp_path / "t", locked_fails=not IS_ROOT)
    before = _snapshot(tree.root)
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [HASHSVC, "scan", str(tree.root), "--out", str(out),
         "--workers", "2", "--data-dir", str(data_dir)],
        env={**os.environ, "HASHSVC_MAX_PIXELS": str(MAX_PIXELS)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # matches win over the errors present
    check_results(tree, read_jsonl(out))
    assert _snapshot(tree.root) == before
    assert out.stat().st_mode & 0o777 == 0o600
    assert proc.stdout == ""
    assert "scan finished" in proc.stderr and "hotline" in proc.stderr
    assert "corrupt 2" in proc.stderr and "too_large 1" in proc.stderr


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.join(dirpath, name), st.st_size, st.st_mtime_ns))
    return sorted(out)


# --- exit codes ------------------------------------------------------------------------


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_exit_codes_and_their_precedence(data_dir: Path, tmp_path: Path) -> None:
    clean = {"a.jpg": encode(_img(400)), "b.png": encode(_img(401), "PNG")}
    match = {"hit.jpg": _known()["known/k0.jpg"]}
    bad = {"bad.jpg": b"\xff\xd8\xff broken"}
    text = {"notes.txt": b"not an image"}
    cases = [
        ("clean", clean, 0),
        ("skips are not errors", clean | text, 0),
        ("an error", clean | bad, 2),
        ("a match", clean | match, 1),
        ("a match wins over an error", clean | match | bad, 1),
    ]
    for name, files, code in cases:
        root = _write(tmp_path / name.replace(" ", "-"), files)
        got, output = cli(data_dir, str(root), "--workers", "0", "--quiet")
        assert got == code, (name, output)
        lines = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
        assert len(lines) == len(files), name  # stdout is the results when no --out
    # a path that does not exist is an error line, and the scan goes on
    got, output = cli(data_dir, str(tmp_path / "nope"), str(tmp_path / "clean"), "--workers", "0")
    assert got == 2 and '"error_kind": "walk_error"' in output
    # --lists: a hotline match is not looked for when only `bank` is asked
    got, _ = cli(data_dir, str(tmp_path / "a-match"), "--lists", "bank", "--workers", "0")
    assert got == 0


def test_refuses_to_scan_against_nothing_or_to_overwrite_results(
    data_dir: Path, tmp_path: Path
) -> None:
    root = _write(tmp_path / "t", {"a.jpg": encode(_img(410))})
    got, output = cli(tmp_path / "typo", str(root))
    assert got == 2 and "no hash lists" in output and not (tmp_path / "typo").exists()
    got, output = cli(data_dir, str(root), "--lists", "nope")
    assert got == 2 and "no list named nope" in output
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "earlier"}\n')
    got, output = cli(data_dir, str(root), "--out", str(out))
    assert got == 2 and "--resume" in output and out.read_text() == '{"path": "earlier"}\n'
    got, output = cli(data_dir, str(root), "--resume")
    assert got == 2 and "--resume needs --out" in output
    got, output = cli(data_dir, str(root), "--format", "xml")
    assert got == 2


# --- resume ----------------------------------------------------------------------------


def _many(root: Path, n: int) -> Path:
    files = {
        f"d{i % 4}/img{i:03d}.jpg": encode(smooth_image(500 + i, (640, 480))) for i in range(n)
    }
    files["d0/known.jpg"] = _known()["known/k1.jpg"]
    files["d1/notes.txt"] = b"text"
    return _write(root, files)


def _start_scan(root: Path, out: Path, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [HASHSVC, "scan", str(root), "--out", str(out), "--workers", "1",
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _await_lines(proc: subprocess.Popen[str], out: Path, n: int) -> None:
    """Poll the results file until it holds n lines (the scan is then mid-way)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and (not out.exists() or out.read_bytes().count(b"\n") < n):
        assert time.monotonic() < deadline, "no results appeared"
        time.sleep(0.005)
    assert proc.poll() is None, "the scan finished before it could be interrupted"


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed test left running
        proc.communicate()


def test_interrupt_kill_and_resume_match_an_uninterrupted_scan(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C, then a resumed scan killed with SIGKILL mid-way, then a resume that
    finishes: the same lines as one uninterrupted scan, none twice, none re-hashed."""
    # enough files that the scan is still running when each signal lands (small files go
    # 16 to a chunk and the kernels are preloaded: 150 files took 0.8 s in all)
    root = _many(tmp_path / "t", 300)
    total = 302
    out = tmp_path / "results.jsonl"

    # 1. Ctrl-C in a terminal: SIGINT to the whole process group. A foreground job in a
    # terminal has SIGINT at its default; a harness that runs the tests in the background
    # passes it on ignored (and an ignored signal stays ignored across exec), so the
    # scan is started with it handled here, which exec turns back into the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = _start_scan(root, out, data_dir)
    finally:
        signal.signal(signal.SIGINT, previous)
    with _reaped(proc):
        _await_lines(proc, out, 5)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "scan interrupted" in stderr and "--resume" in stderr
    after_int = read_jsonl(out)  # every line whole
    assert 5 <= len(after_int) < total

    # 2. resume, then `kill -9` of the scan process alone, mid-way
    proc = _start_scan(root, out, data_dir, "--resume", "--quiet")
    with _reaped(proc):
        _await_lines(proc, out, len(after_int) + 5)
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=30)
        # its worker processes notice they are orphaned and exit on their own
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"orphaned workers still running: {alive}"
    assert proc.returncode == -signal.SIGKILL
    done_before = out.read_bytes().count(b"\n")
    assert len(after_int) + 5 <= done_before < total, "the scan was not caught half-way"
    assert read_jsonl(out)[: len(after_int)] == after_int
    with open(out, "ab") as f:  # as if killed in the middle of writing a line
        f.write(b'{"path": "' + str(root).encode() + b"/d3/img1")

    # 3. resume to the end, in process, watching which files get hashed
    checked: list[str] = []
    real_check = scan.check_file

    def spy(task: scan.FileTask, *a: Any, **kw: Any) -> scan.FileResult:
        checked.append(task.path)
        return real_check(task, *a, **kw)

    monkeypatch.setattr(scan, "check_file", spy)
    code, output = cli(data_dir, str(root), "--out", str(out), "--resume", "--workers", "0")
    assert code == 1, output  # the match may be in any run: the file's status counts
    assert f"resumed: {done_before} results" in output
    previous = {r["path"] for r in read_jsonl(out)[:done_before]}
    assert not previous & set(checked), "files already in the results were hashed again"

    full = tmp_path / "full.jsonl"
    code, _ = cli(data_dir, str(root), "--out", str(full), "--workers", "0", "--quiet")
    assert code == 1
    resumed = read_jsonl(out)
    assert len(resumed) == total and len({r["path"] for r in resumed}) == total
    assert canonical(resumed) == canonical(read_jsonl(full))


def test_resume_rechecks_changed_files_only(data_dir: Path, tmp_path: Path) -> None:
    root = _write(tmp_path / "t", {f"f{i}.jpg": encode(_img(600 + i)) for i in range(4)})
    out = tmp_path / "r.jsonl"
    assert cli(data_dir, str(root), "--out", str(out), "--workers", "0", "--quiet")[0] == 0
    first = read_jsonl(out)
    st = (root / "f1.jpg").stat()
    os.utime(root / "f1.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (root / "f2.jpg").write_bytes(encode(_img(700)))  # new content
    (root / "f4.jpg").write_bytes(encode(_img(701)))  # a new file
    code, output = cli(data_dir, str(root), "--out", str(out), "--resume", "--workers", "0")
    assert code == 0 and "resumed: 4 results" in output
    lines = read_jsonl(out)
    assert lines[:4] == first
    # a changed file gets a new line after its old one: the later line is the current one
    assert sorted(Path(r["path"]).name for r in lines[4:]) == ["f1.jpg", "f2.jpg", "f4.jpg"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_results_file_formats_round_trip_and_resume_from_a_torn_tail(
    data_dir: Path, tmp_path: Path, fmt: str
) -> None:
    tree = build_tree(tmp_path / "t", locked_fails=not IS_ROOT)
    full = tmp_path / f"full.{fmt}"
    args = ["--format", fmt, "--workers", "0", "--quiet"]
    assert cli(data_dir, str(tree.root), "--out", str(full), *args)[0] == 1
    text = full.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert tuple(rows[0]) == scan.CSV_COLUMNS
        hit = next(r for r in rows if r["path"].endswith("k3-mirror.png"))
        assert hit["verdict"] == "report" and hit["match_lists"] == "bank"
        assert json.loads(hit["matches"])[0]["list"] == "bank"
        bad = next(r for r in rows if r["path"].endswith("garbage.jpg"))
        assert bad["error_kind"] == "corrupt" and not bad["verdict"]
    records, _ = scan.read_results(full, fmt)  # type: ignore[arg-type]
    check_results(tree, [r.to_record() for r in records])

    # keep the header + 5 lines + half of the next, then resume
    lines = text.splitlines(keepends=True)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    code, output = cli(data_dir, str(tree.root), "--out", str(cut), "--resume", *args[:-1])
    assert (
        code == 1 and ("resumed: 6 results" if fmt == "jsonl" else "resumed: 5 results") in output
    )
    assert sorted(cut.read_text().splitlines()) == sorted(text.splitlines())


def test_results_file_inside_the_scanned_tree_is_not_scanned(
    data_dir: Path, tmp_path: Path
) -> None:
    root = _write(tmp_path / "t", {"a.jpg": encode(_img(800))})
    out = root / "results.jsonl"
    code, _ = cli(data_dir, str(root), "--out", str(out), "--workers", "0", "--quiet")
    assert code == 0 and [Path(r["path"]).name for r in read_jsonl(out)] == ["a.jpg"]


def test_a_results_file_of_something_else_is_refused(data_dir: Path, tmp_path: Path) -> None:
    root = _write(tmp_path / "t", {"a.jpg": encode(_img(801))})
    out = tmp_path / "other.jsonl"
    out.write_text("this is not json\n")
    code, output = cli(data_dir, str(root), "--out", str(out), "--resume", "--workers", "0")
    assert code == 2 and "not a hashsvc scan results file" in output
    assert out.read_text() == "this is not json\n"


# --- worker processes ------------------------------------------------------------------


def crashing_check(tasks: list[scan.FileTask]) -> list[scan.FileResult]:
    """Runs in a pool worker: dies like a decoder segfault on any file named boom*."""
    if any(Path(t.path).name.startswith("boom") for t in tasks):
        os._exit(70)
    return scan.check_chunk(tasks)


def test_a_file_that_kills_its_worker_is_reported_and_the_scan_goes_on(
    data_dir: Path, tmp_path: Path
) -> None:
    files = {f"ok{i}.jpg": encode(_img(900 + i)) for i in range(6)}
    files["boom.jpg"] = encode(_img(950))
    root = _write(tmp_path / "t", files)
    backend = scan.ProcessBackend(settings_for(data_dir), workers=2, chunk=2, check=crashing_check)
    results = {Path(r.path).name: r for r in run_scan(root, data_dir, backend)}
    assert sorted(results) == sorted(files)
    assert results["boom.jpg"].error_kind == "worker_crashed"
    assert all(results[f"ok{i}.jpg"].verdict == "allow" for i in range(6))


def test_chunks_grow_for_small_files_only() -> None:
    """Many small files share a round trip to a worker; large ones still go 4 at a time;
    an idle walk (None) sends what is there; every item comes out once, in order."""

    def task(i: int, size: int) -> scan.FileTask:
        return scan.FileTask(f"f{i}", f"/f{i}", size, 0, False)

    def sizes(items: list[scan.Item | None]) -> list[int]:
        out = list(scan._batches(iter(items), 4, most=16, small=1 << 20))
        assert [x for b in out for x in b] == [x for x in items if x is not None]
        return [len(b) for b in out]

    assert sizes([task(i, 50_000) for i in range(40)]) == [16, 16, 8]
    assert sizes([task(i, 3_000_000) for i in range(10)]) == [4, 4, 2]
    assert sizes([task(i, 300_000) for i in range(10)]) == [4, 4, 2]  # 4 reach 1 MiB
    assert sizes([task(0, 10), task(1, 10), None, task(2, 10)]) == [2, 1]
    skip = scan.FileResult.skip("s", scan.SkipReason.NOT_IMAGE)
    assert sizes([skip] * 70) == [64, 6]
    # without `most`, as the Dask backend calls it: n tasks, 4n items
    assert [len(b) for b in scan._batches(iter([task(i, 10) for i in range(9)]), 8)] == [8, 1]
    assert [len(b) for b in scan._batches(iter([skip] * 40), 8)] == [32, 8]


def _pdq_kernels_loaded() -> bool:
    """Runs in a pool worker, before it has checked any file."""
    from hashsvc import pdq_fast

    return bool(pdq_fast._downsample.overloads) and bool(pdq_fast._finish.overloads)


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="workers inherit loaded kernels only from a forkserver",
)
def test_workers_start_with_the_kernels_loaded(data_dir: Path) -> None:
    """The forkserver loads the numba kernels once (hashsvc._scan_preload): a worker
    must not pay that again on its first file."""
    backend = scan.ProcessBackend(settings_for(data_dir), workers=1)
    try:
        assert backend._pool.submit(_pdq_kernels_loaded).result(timeout=60)
    finally:
        backend.close()


def _collector_state() -> tuple[bool, int]:
    """Runs in a pool worker."""
    import gc

    return gc.isenabled(), gc.get_freeze_count()


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="workers inherit a frozen heap only from a forkserver",
)
def test_workers_inherit_the_preload_frozen_and_the_collector_on(data_dir: Path) -> None:
    """The forkserver's preload runs with the collector off and freezes what it made
    (hashsvc._scan_preload): a worker's collections must not walk numba's objects, and
    must still run for its own."""
    backend = scan.ProcessBackend(settings_for(data_dir), workers=1)
    try:
        enabled, frozen = backend._pool.submit(_collector_state).result(timeout=60)
    finally:
        backend.close()
    assert enabled
    assert frozen > 50_000  # ~170k: numba's typing and dispatch objects, the kernels


def test_the_scan_process_imports_no_hashing_code() -> None:
    """The scan's own process walks, sniffs file heads and writes lines; numba, numpy,
    Pillow and the video code are the workers' (importing them here cost ~0.2 s)."""
    heavy = ("numba", "numpy", "PIL", "hashsvc.video", "hashsvc.hashing")
    code = (
        "import sys\nimport hashsvc.cli, hashsvc.cli.scan, hashsvc.scan\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_pool_server_starts_early_only_for_a_pool_scan_that_will_run(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scan` starts the pool's forkserver before it opens the results file and walks,
    so the kernels load meanwhile; not for --workers 0 or Dask (whose server needs Dask's
    preload too), and not for a scan a check refuses (a missing store, an unknown list,
    a results file without --resume): the server would outlive the error."""
    from hashsvc.cli.scan import _pool_workers

    started: list[bool] = []
    monkeypatch.setattr(scan, "start_pool_server", lambda: started.append(True))
    root = _write(tmp_path / "t", {"a.jpg": encode(_img(420))})
    got, output = cli(data_dir, str(root), "--workers", "1", "--quiet")
    assert got == 0 and started == [True], output
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "earlier"}\n')
    for args in (["--workers", "0"], ["--out", str(out)]):
        started.clear()
        got, output = cli(data_dir, str(root), *args, "--quiet")
        assert not started, (args, output)
    started.clear()
    got, _ = cli(tmp_path / "typo", str(root), "--workers", "1")
    assert got == 2 and not started
    got, _ = cli(data_dir, str(root), "--workers", "1", "--lists", "no-such-list")
    assert got == 2 and not started
    assert _pool_workers(3, None, None) == 3
    assert _pool_workers(3, None, 2) == _pool_workers(None, "tcp://h:8786", None) == 0


_FAULTS_SCRIPT = """
import resource
import sys
from pathlib import Path

from hashsvc import scan
from hashsvc.config import Settings


def faults() -> int:
    # in the worker: minor page faults of 20 rounds of a 4 MiB buffer (like a decoded
    # image) allocated, filled and freed
    import numpy as np

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(1 << 22, np.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


if __name__ == "__main__":
    backend = scan.ProcessBackend(Settings(data_dir=Path(sys.argv[1])), workers=1)
    try:
        print(backend._pool.submit(faults).result(timeout=60))
    finally:
        backend.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_workers_keep_buffers_on_the_heap_under_a_dask_malloc_setting(
    data_dir: Path, tmp_path: Path
) -> None:
    """A process that once hosted a Dask LocalCluster has MALLOC_TRIM_THRESHOLD_=65536 in
    its environment (the nanny sets it there), and scans it starts inherit it: without
    `_keep_buffers_on_heap` in the worker every large buffer is a fresh mmap, zero-filled
    page by page (~10,000 faults here instead of ~500; 2,700 per 1024x768 JPEG)."""
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS_SCRIPT)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, str(script), str(data_dir)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 4096, "each 4 MiB buffer was a fresh mmap"


def test_workers_that_cannot_open_the_store_stop_the_scan_at_once(tmp_path: Path) -> None:
    (tmp_path / "hashsvc.db").write_bytes(b"not a database" * 100)
    with pytest.raises(scan.ScanError, match="failed to start"):
        scan.ProcessBackend(Settings(data_dir=tmp_path), workers=1)


# --- progress and summary ----------------------------------------------------------------


def test_progress_line_and_summary_say_what_a_moderator_needs() -> None:
    stats = scan.ScanStats(discovered=10, walk_done=True)
    for r in [
        scan.FileResult("a", 1, 1, verdict="block", matches=({"list": "hotline"},)),
        scan.FileResult("b", 1, 1, verdict="allow"),
        scan.FileResult.failed("c", scan.ErrorKind.CORRUPT, "bad"),
        scan.FileResult.skip("d", scan.SkipReason.NOT_IMAGE),
    ]:
        stats.add(r)
    stats.add(scan.FileResult("e", 1, 1, verdict="report", matches=({"list": "bank"},)),
              previous=True)  # fmt: skip
    line = progress_line(stats)
    assert line.startswith("scan: 4/10 files") and "2 matched, 1 errors" in line and "ETA" in line
    text = "\n".join(summary(stats, Path("r.jsonl")))
    assert "matched files: 2 (" in text and "hotline 1" in text and "bank 1" in text
    assert "errors: 1 (corrupt 1)" in text and "skipped: 1 (not an image 1)" in text
    assert "resumed: 1 results" in text
    stats.walk_done = False
    assert "(listing)" in progress_line(stats)


def test_ctrl_c_while_the_pool_starts_is_acted_on_once_it_started() -> None:
    """A SIGINT inside `_sigint_deferred` raises nothing there; it is handed back (the
    pool then shuts its started workers down and raises KeyboardInterrupt), and the
    previous handler is back afterwards."""
    before = signal.getsignal(signal.SIGINT)
    with scan._sigint_deferred() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert interrupted == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_a_child_started_under_sigint_ignored_by_children_ignores_ctrl_c() -> None:
    """What the forkserver inherits: SIGINT ignored from its first instruction (Python
    then installs no KeyboardInterrupt handler), so a Ctrl-C during its preload prints
    nothing; this process's own handler is unchanged afterwards."""
    before = signal.getsignal(signal.SIGINT)
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(2) is signal.SIG_IGN)"]
    with scan._sigint_ignored_by_children():
        ignored = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    normal = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    assert (ignored.strip(), normal.strip()) == ("True", "False")
    assert signal.getsignal(signal.SIGINT) is before
