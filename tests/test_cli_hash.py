from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image
from typer.testing import CliRunner

from hashsvc.cli import app
from tests.conftest import PDQ_DATA, encode, smooth_image

runner = CliRunner()


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_hash_walks_directories_and_prints_one_json_line_per_file(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.jpg").write_bytes(encode(smooth_image(1)))
    (tmp_path / "sub" / "b.png").write_bytes(encode(smooth_image(2), "PNG"))
    (tmp_path / "sub" / "deeper" / "c.webp").write_bytes(encode(smooth_image(3), "WEBP"))
    result = runner.invoke(app, ["hash", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = _lines(result.stdout)
    assert [Path(str(r["path"])).name for r in records] == ["a.jpg", "b.png", "c.webp"]
    for r in records:
        assert set(r) == {"path", "pdq", "pdq_quality", "phash", "md5", "sha256"}
        assert len(str(r["pdq"])) == 64 and len(str(r["phash"])) == 16
        assert 0 <= int(str(r["pdq_quality"])) <= 100


def test_hash_agrees_with_pdqhash_on_a_full_decode() -> None:
    f = PDQ_DATA / "reg-test-input" / "dih" / "bridge-1-original.jpg"
    result = runner.invoke(app, ["hash", str(f), "--signals", "pdq"])
    assert result.exit_code == 0
    (record,) = _lines(result.stdout)
    bits, quality = pdqhash.compute(np.asarray(Image.open(f).convert("RGB")))
    assert record["pdq"] == np.packbits(bits).tobytes().hex()
    assert record["pdq_quality"] == quality
    assert set(record) == {"path", "pdq", "pdq_quality"}


def test_dihedral_option_prints_the_eight_variants() -> None:
    f = PDQ_DATA / "reg-test-input" / "dih" / "bridge-1-original.jpg"
    result = runner.invoke(app, ["hash", str(f), "--signals", "pdq", "--dihedral"])
    (record,) = _lines(result.stdout)
    variants = record["pdq_dihedral"]
    assert isinstance(variants, dict) and len(variants) == 8
    assert variants["original"] == record["pdq"]


def test_failures_are_reported_per_file_with_exit_status_2(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(encode(smooth_image(4)))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["hash", str(tmp_path), str(tmp_path / "missing.jpg")])
    assert result.exit_code == 2
    by_name = {Path(str(r["path"])).name: r for r in _lines(result.stdout)}
    assert "empty file" in str(by_name["empty.jpg"]["error"])
    assert "not an image" in str(by_name["notes.txt"]["error"])
    assert "no such file" in str(by_name["missing.jpg"]["error"])
    assert "pdq" in by_name["good.jpg"]


def test_unknown_signal_type_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["hash", str(tmp_path), "--signals", "pdq,whash"])
    assert result.exit_code == 2
    assert "unknown signal type 'whash'" in result.output


def test_console_script_runs_as_a_real_process(tmp_path: Path) -> None:
    shutil.copy(PDQ_DATA / "misc-images" / "small.jpg", tmp_path / "small.jpg")
    exe = Path(sys.executable).parent / "hashsvc"
    proc = subprocess.run([str(exe), "hash", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (record,) = _lines(proc.stdout)
    assert record["path"].endswith("small.jpg")


def test_few_files_and_folders_give_identical_hashes(tmp_path: Path) -> None:
    """A few named files are hashed with Meta's C++ PDQ (fast start), a folder with our
    numba port (fast per image): the output must not depend on which ran."""
    photos = sorted((PDQ_DATA / "bridge-mods").glob("*.jpg"))[:4]
    for p in photos:
        shutil.copy(p, tmp_path / p.name)
    args = ["--dihedral", "--signals", "pdq,phash"]
    one_by_one = runner.invoke(app, ["hash", *args, *map(str, sorted(tmp_path.iterdir()))])
    as_folder = runner.invoke(app, ["hash", *args, str(tmp_path)])
    assert one_by_one.exit_code == as_folder.exit_code == 0
    key = lambda r: r["path"]  # noqa: E731
    assert sorted(_lines(one_by_one.stdout), key=key) == sorted(_lines(as_folder.stdout), key=key)
    assert len(_lines(as_folder.stdout)) == 4
