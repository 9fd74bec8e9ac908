"""`hashsvc lists ...` and `hashsvc match`: the moderator's and list manager's workflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hashsvc.cli import app
from tests.conftest import PDQ_DATA, encode, smooth_image

runner = CliRunner()
LISTS = Path(__file__).parent / "data" / "lists"
BRIDGE = PDQ_DATA / "reg-test-input" / "dih" / "bridge-1-original.jpg"
BRIDGE_PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


def run(data_dir: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return result.exit_code, lines, result.output


def flip_bits(hex_hash: str, n: int) -> str:
    value = int(hex_hash, 16)
    for i in range(n):
        value ^= 1 << (i * 7 % 256)
    return f"{value:064x}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "idx"


def test_create_import_show_export_round_trip(data_dir: Path, tmp_path: Path) -> None:
    code, (lst,), _ = run(data_dir, "lists", "create", "hotline", "--action", "block")
    assert code == 0 and lst["name"] == "hotline" and lst["pdq_threshold"] == 31
    code, (res,), _ = run(data_dir, "lists", "import", "hotline", str(LISTS / "valid.csv"))
    assert code == 0 and int(str(res["added"])) > 0 and res["skipped_duplicates"] == 0
    added = int(str(res["added"]))
    # re-importing the same file adds nothing twice
    code, (again,), _ = run(data_dir, "lists", "import", "hotline", str(LISTS / "valid.csv"))
    assert again["added"] == 0 and again["skipped_duplicates"] == added
    code, (shown,), _ = run(data_dir, "lists", "show", "hotline")
    assert shown["entries"] == added and len(shown["batches"]) == 2  # type: ignore[arg-type]
    result = runner.invoke(app, ["lists", "export", "hotline", "--data-dir", str(data_dir)])
    exported = tmp_path / "export.csv"
    exported.write_bytes(result.stdout_bytes)
    code, _, _ = run(data_dir, "lists", "create", "copy", "--action", "report")
    code, (res2,), _ = run(data_dir, "lists", "import", "copy", str(exported))
    assert code == 0 and res2["added"] == added


def test_create_with_per_list_options(data_dir: Path) -> None:
    code, (lst,), _ = run(
        data_dir, "lists", "create", "strict", "--action", "block",
        "--option", "corroborate=false", "--option", "crops=no",
    )  # fmt: skip
    assert code == 0 and lst["options"] == {"corroborate": False, "crops": False}
    for bad in ("corroborated=false", "crops", "crops=maybe"):
        code, lines, output = run(data_dir, "lists", "create", "x", "--action", "block",
                                  "--option", bad)  # fmt: skip
        assert code != 0 and not lines and bad.split("=")[0] in output
    code, (shown,), _ = run(data_dir, "lists", "show", "strict")
    assert shown["options"] == {"corroborate": False, "crops": False}


def test_a_bad_line_imports_nothing_and_names_every_problem(data_dir: Path) -> None:
    run(data_dir, "lists", "create", "l", "--action", "block")
    code, lines, output = run(data_dir, "lists", "import", "l", str(LISTS / "bad.csv"))
    assert code == 2 and not lines
    assert "line 3" in output and "line 4" in output and "nothing was imported" in output
    _, (shown,), _ = run(data_dir, "lists", "show", "l")
    assert shown["entries"] == 0
    code, (res,), output = run(
        data_dir, "lists", "import", "l", str(LISTS / "bad.csv"), "--skip-invalid"
    )
    assert code == 0 and res["added"] == 2 and int(str(res["invalid_skipped"])) >= 5
    assert "(skipped)" in output


def test_txt_import_needs_a_signal_type(data_dir: Path) -> None:
    run(data_dir, "lists", "create", "l", "--action", "block")
    code, _, output = run(data_dir, "lists", "import", "l", str(LISTS / "valid_pdq.txt"))
    assert code == 2 and "signal" in output.lower()
    code, (res,), _ = run(
        data_dir, "lists", "import", "l", str(LISTS / "valid_pdq.txt"), "--signal-type", "pdq"
    )
    assert code == 0 and int(str(res["added"])) > 0


def test_match_precomputed_hashes_verdicts_and_exit_codes(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text(BRIDGE_PDQ + "\n")
    run(data_dir, "lists", "create", "blocky", "--action", "block", "--pdq-threshold", "20")
    run(data_dir, "lists", "create", "reporty", "--action", "report", "--pdq-threshold", "40")
    for name in ("blocky", "reporty"):
        run(data_dir, "lists", "import", name, str(tmp_path / "l.txt"), "--signal-type", "pdq")

    code, (r,), _ = run(data_dir, "match", "--pdq", flip_bits(BRIDGE_PDQ, 20))
    assert code == 1 and r["verdict"] == "block"
    assert {m["list"] for m in r["matches"]} == {"blocky", "reporty"}  # type: ignore[union-attr,index]
    # 21..40 bits: only the report list's threshold admits it
    code, (r,), _ = run(data_dir, "match", "--pdq", flip_bits(BRIDGE_PDQ, 21))
    assert code == 1 and r["verdict"] == "report"
    code, (r,), _ = run(data_dir, "match", "--pdq", flip_bits(BRIDGE_PDQ, 40))
    assert code == 1 and r["verdict"] == "report"
    assert r["matches"][0]["distance"] == 40  # type: ignore[index]
    code, (r,), _ = run(data_dir, "match", "--pdq", flip_bits(BRIDGE_PDQ, 41))
    assert code == 0 and r["verdict"] == "allow" and r["matches"] == []
    code, (r,), _ = run(data_dir, "match", "--pdq", BRIDGE_PDQ, "--lists", "reporty")
    assert r["verdict"] == "report"
    code, _, output = run(data_dir, "match", "--pdq", "abc")
    assert code == 2 and "64 hex characters" in output
    code, _, output = run(data_dir, "match", "--pdq", BRIDGE_PDQ, "--lists", "nope")
    assert code == 2 and "no list named nope" in output


def test_disable_takes_effect_at_once_and_enable_restores(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text(BRIDGE_PDQ + "\n")
    run(data_dir, "lists", "create", "l", "--action", "block")
    run(data_dir, "lists", "import", "l", str(tmp_path / "l.txt"), "--signal-type", "pdq")
    _, (r,), _ = run(data_dir, "match", "--pdq", BRIDGE_PDQ)
    entry_id = str(r["matches"][0]["entry_id"])  # type: ignore[index]
    assert run(data_dir, "lists", "disable", entry_id)[0] == 0
    assert run(data_dir, "match", "--pdq", BRIDGE_PDQ)[1][0]["verdict"] == "allow"
    assert run(data_dir, "lists", "enable", entry_id)[0] == 0
    assert run(data_dir, "match", "--pdq", BRIDGE_PDQ)[1][0]["verdict"] == "block"
    assert run(data_dir, "lists", "remove", entry_id)[0] == 0
    assert run(data_dir, "match", "--pdq", BRIDGE_PDQ)[1][0]["verdict"] == "allow"
    code, _, output = run(data_dir, "lists", "disable", "999999")
    assert code == 2 and "999999" in output
    # every change above is in the audit log, as the API would write it, marked as the CLI's
    from hashsvc import audit
    from hashsvc.store import Store

    with Store.open(data_dir / "hashsvc.db") as store:
        rows = audit.read(store)
    assert [(r.action, r.key_id, r.entry_ids, r.detail.get("list"), r.detail["via"])
            for r in rows] == [
        ("list.create", None, [], "l", "cli"),
        ("entries.add", None, [], "l", "cli"),
        ("entry.disable", None, [int(entry_id)], "l", "cli"),
        ("entry.enable", None, [int(entry_id)], "l", "cli"),
        ("entry.remove", None, [int(entry_id)], "l", "cli"),
    ]  # fmt: skip
    assert rows[1].detail["added"] == 1


def test_enroll_then_match_media_files(data_dir: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    known = smooth_image(31, (640, 480))
    (media / "known.jpg").write_bytes(encode(known, quality=92))
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    run(data_dir, "lists", "create", "bank", "--action", "report")
    code, (res,), output = run(data_dir, "lists", "enroll", "bank", str(media))
    assert code == 2 and res["enrolled_files"] == 1 and res["added"] == 4
    assert "broken.jpg" in output

    queries = tmp_path / "q"
    queries.mkdir()
    (queries / "copy.jpg").write_bytes(encode(known.resize((480, 360)), quality=70))
    (queries / "mirror.png").write_bytes(
        encode(known.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    )
    (queries / "other.jpg").write_bytes(encode(smooth_image(32, (640, 480))))
    code, lines, _ = run(data_dir, "match", str(queries))
    by_name = {Path(str(r["path"])).name: r for r in lines}
    assert code == 1
    assert by_name["copy.jpg"]["verdict"] == "report"
    assert by_name["mirror.png"]["verdict"] == "report"
    # Meta's dihedral names: "flipy" is a flip about the vertical axis (a mirror image)
    variants = {m.get("variant") for m in by_name["mirror.png"]["matches"]}  # type: ignore[union-attr,attr-defined]
    assert "flipy" in variants
    assert by_name["other.jpg"]["verdict"] == "allow"
    code, lines, _ = run(data_dir, "match", str(queries / "other.jpg"), str(tmp_path / "nope.jpg"))
    assert code == 2 and "error" in lines[1]


def test_data_dir_from_the_environment_and_a_second_process(tmp_path: Path) -> None:
    """Changes by one process are seen by the next (index caught up from the change log)."""
    data_dir = tmp_path / "envdir"
    env = {**os.environ, "HASHSVC_DATA_DIR": str(data_dir)}
    exe = str(Path(sys.executable).parent / "hashsvc")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True)

    assert cli("lists", "create", "l", "--action", "block").returncode == 0
    (tmp_path / "l.txt").write_text(BRIDGE_PDQ + "\n")
    assert (
        cli("lists", "import", "l", str(tmp_path / "l.txt"), "--signal-type", "pdq").returncode == 0
    )
    proc = cli("match", str(BRIDGE))
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "block"
    assert (data_dir / "hashsvc.db").stat().st_mode & 0o777 == 0o600


def test_match_refuses_a_data_dir_without_a_store(tmp_path: Path) -> None:
    code, _, output = run(tmp_path / "typo", "match", "--pdq", BRIDGE_PDQ)
    assert code == 2 and "no store" in output
    assert not (tmp_path / "typo" / "hashsvc.db").exists()


def test_a_fifo_in_a_folder_is_reported_not_read(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    os.mkfifo(folder / "pipe")
    (folder / "a.jpg").write_bytes(encode(smooth_image(5)))
    result = runner.invoke(app, ["hash", str(folder)])
    assert result.exit_code == 2
    lines = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert "not a regular file" in lines["pipe"]["error"] and "pdq" in lines["a.jpg"]


def test_matching_a_few_files_loads_no_compiled_kernels(data_dir: Path, tmp_path: Path) -> None:
    """A moderator's one-off `hashsvc match photo.jpg` on a small list must not pay ~1 s
    for numba (its import plus loading cached kernels): Meta's C++ PDQ hashes the few
    named files and numpy searches the small index. A folder still takes the numba path,
    and both give the same verdicts and matched entries."""
    assert run(data_dir, "lists", "create", "bank", "--action", "block")[0] == 0
    assert run(data_dir, "lists", "enroll", "bank", str(BRIDGE))[0] == 0
    folder = tmp_path / "in"
    folder.mkdir()
    edited = folder / "edited.jpg"
    Image.open(BRIDGE).convert("RGB").rotate(180).save(edited, quality=70)
    probe = (
        "import sys\n"
        "from hashsvc.cli import main\n"
        f"sys.argv = ['hashsvc', 'match', {str(edited)!r}, '--data-dir', {str(data_dir)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('LOADED', sorted(m for m in ('numba', 'hashsvc.pdq_fast',"
        " 'hashsvc.search.kernels') if m in sys.modules), code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "LOADED [] 1" in proc.stdout, proc.stdout + proc.stderr
    named = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    code, as_folder, _ = run(data_dir, "match", str(folder))
    assert code == 1
    key = [(m["list"], m["entry_id"]) for m in named[0]["matches"]]
    assert key == [(m["list"], m["entry_id"]) for m in as_folder[0]["matches"]]
    assert named[0]["verdict"] == as_folder[0]["verdict"] == "block"
