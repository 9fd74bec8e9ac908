"""Videos through every adapter: the CLI (hash, lists import/enroll/export, match), the
API (/v1/match, /v1/hash, /v1/match/hashes, the video body cap) and `hashsvc scan`.

The core rules are tested in tests/test_video.py; here each adapter must route a video
to them, report what they found, and refuse bad input with the right status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashsvc.cli import app
from hashsvc.enrollment import VideoOptions, enroll
from hashsvc.store import Store
from tests.api.conftest import Env, build_env, make_app, running
from tests.videos import make_video

pytestmark = pytest.mark.slow
runner = CliRunner()
SEEDS = (71, 72, 73, 74)
VPDQ_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "vpdq"


@pytest.fixture(scope="module")
def listed() -> bytes:
    return make_video(SEEDS, size=(320, 240))


@pytest.fixture(scope="module")
def copy() -> bytes:
    """The listed video re-encoded at another size and quality: other bytes, near frames."""
    return make_video(SEEDS, size=(256, 192), crf=30)


@pytest.fixture(scope="module")
def unrelated() -> bytes:
    return make_video((81, 82, 83), size=(320, 240))


def cli(*args: str) -> tuple[int, list[dict[str, object]], str]:
    result = runner.invoke(app, list(args))
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return result.exit_code, lines, result.output


# --- CLI ----------------------------------------------------------------------------


def test_cli_hash_import_match_and_export_a_video(
    tmp_path: Path, listed: bytes, copy: bytes, unrelated: bytes
) -> None:
    files = tmp_path / "media"
    files.mkdir()
    for name, data in (("listed.mp4", listed), ("copy.mkv", copy), ("other.bin", unrelated)):
        (files / name).write_bytes(data)  # generated test videos
    out_dir = tmp_path / "vpdq"
    code, lines, output = cli("hash", str(files / "listed.mp4"), "--vpdq-dir", str(out_dir))
    assert code == 0, output
    (rec,) = lines
    assert rec["video"]["codec"] == "h264" and len(rec["vpdq"]) == 4  # type: ignore[index]
    written = (out_dir / "listed.txt").read_text().splitlines()
    assert [line.split(",")[2] for line in written] == [f["pdq"] for f in rec["vpdq"]]  # type: ignore[union-attr]

    data = str(tmp_path / "idx")
    assert cli("lists", "create", "vids", "--action", "block", "--data-dir", data)[0] == 0
    code, (imported,), output = cli("lists", "import", "vids", str(out_dir), "--data-dir", data)
    assert code == 0 and imported["added"] == 1, output
    code, (again,), _ = cli("lists", "import", "vids", str(out_dir / "listed.txt"),
                            "--data-dir", data)  # fmt: skip
    assert code == 0 and again["added"] == 0 and again["skipped_duplicates"] == 1

    code, lines, output = cli("match", str(files), "--data-dir", data)
    by_name = {Path(str(r["path"])).name: r for r in lines}
    assert code == 1, output
    assert by_name["copy.mkv"]["verdict"] == "block"
    assert by_name["copy.mkv"]["matches"][0]["signal_type"] == "vpdq"  # type: ignore[index]
    assert by_name["other.bin"]["verdict"] == "allow"  # recognised by content, not name

    code, (rec,), _ = cli("match", "--vpdq", str(out_dir / "listed.txt"), "--data-dir", data)
    assert code == 1 and rec["verdict"] == "block"

    exported = tmp_path / "export"
    code, (summary,), _ = cli("lists", "export", "vids", "--format", "vpdq", "--out",
                              str(exported), "--data-dir", data)  # fmt: skip
    assert code == 0 and summary["videos"] == 1
    (file,) = exported.iterdir()
    assert file.read_text().splitlines() == written
    result = runner.invoke(app, ["lists", "export", "vids", "--data-dir", data])
    assert result.exit_code == 0 and "1 video(s) left out" in result.output


def test_cli_rejects_a_bad_vpdq_file_and_imports_nothing(tmp_path: Path) -> None:
    data = str(tmp_path / "idx")
    cli("lists", "create", "vids", "--action", "block", "--data-dir", data)
    bad = tmp_path / "bad.txt"
    bad.write_text("0,100," + "ab" * 32 + ",0.0\n1,100,nothex,1.0\n")
    code, _, output = cli("lists", "import", "vids", str(bad), "--format", "vpdq",
                          "--data-dir", data)  # fmt: skip
    assert code == 2 and "line 2" in output
    with Store.open(tmp_path / "idx" / "hashsvc.db") as store:
        assert store.count_entries("vids") == 0


def test_cli_imports_metas_sample_hashes_and_matches_their_videos(tmp_path: Path) -> None:
    data = str(tmp_path / "idx")
    cli("lists", "create", "vids", "--action", "report", "--data-dir", data)
    sample = VPDQ_SAMPLES / "sample-hashes" / "chair-19-sd-bar.txt"
    code, (imported,), output = cli("lists", "import", "vids", str(sample), "--data-dir", data)
    assert code == 0 and imported["added"] == 1, output
    code, lines, _ = cli(
        "match",
        str(VPDQ_SAMPLES / "videos" / "chair-20-sd-bar.mp4"),
        str(VPDQ_SAMPLES / "videos" / "doorknob-hd-no-bar.mp4"),
        "--data-dir",
        data,
    )
    assert [r["verdict"] for r in lines] == ["report", "allow"]


# --- API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_env(tmp_path_factory: pytest.TempPathFactory, listed: bytes) -> Env:
    env = build_env(tmp_path_factory.mktemp("api-video") / "data")
    with Store.open(env.data_dir / "hashsvc.db") as store:
        store.create_list("videos", "block")
        enroll(store, "videos", [("v", listed)], video_options=VideoOptions())
    return env


def test_api_match_hash_and_precomputed_vpdq(video_env: Env, copy: bytes, unrelated: bytes) -> None:
    with running(make_app(video_env)) as c:
        r = c.post("/v1/match", content=copy,
                   headers={**video_env.auth("all"), "Content-Type": "video/mp4"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["verdict"] == "block" and body["report_id"] is not None
        (m,) = body["matches"]
        assert m["signal_type"] == "vpdq" and m["query_percent"] >= 80
        assert body["hashes"]["video"]["codec"] == "h264" and body["hashes"]["vpdq"]
        report = c.get(f"/v1/reports/{body['report_id']}", headers=video_env.auth("all"))
        assert report.status_code == 200 and report.json()["hashes"]["vpdq"]

        # match scope only: no distances or percentages, no list metadata
        r = c.post("/v1/match", content=copy,
                   headers={**video_env.auth("match"), "Content-Type": "video/mp4"})  # fmt: skip
        (m,) = r.json()["matches"]
        assert set(m) == {"list", "entry_id", "signal_type"}

        raw = {**video_env.auth("all"), "Content-Type": "application/octet-stream"}
        r = c.post("/v1/match", content=unrelated, headers=raw)
        assert r.json()["verdict"] == "allow"

        r = c.post("/v1/hash", content=copy,
                   headers={**video_env.auth("match"), "Content-Type": "video/mp4"})  # fmt: skip
        assert r.status_code == 200
        lines = [f"{f['frame']},{f['quality']},{f['pdq']},{f['timestamp']}"
                 for f in r.json()["hashes"]["vpdq"]]  # fmt: skip
        r = c.post("/v1/match/hashes", json={"vpdq": lines}, headers=video_env.auth("all"))
        assert r.status_code == 200 and r.json()["verdict"] == "block"
        r = c.post("/v1/match/hashes", json={"vpdq": ["0,100,zz,0"]}, headers=video_env.auth())
        assert r.status_code == 422


def test_api_bad_videos_and_the_video_body_cap(video_env: Env, listed: bytes) -> None:
    app = make_app(video_env, max_body_bytes=len(listed) // 2, video_max_body_bytes=len(listed) * 2)
    with running(app) as c:
        auth = video_env.auth("all")
        r = c.post("/v1/match", content=listed, headers={**auth, "Content-Type": "video/mp4"})
        assert r.status_code == 200  # under the video cap, over the image cap
        r = c.post("/v1/match", content=listed,
                   headers={**auth, "Content-Type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 413
        r = c.post("/v1/match", content=listed * 3, headers={**auth, "Content-Type": "video/mp4"})
        assert r.status_code == 413
        cut = listed[: len(listed) * 6 // 10]
        r = c.post("/v1/match", content=cut, headers={**auth, "Content-Type": "video/mp4"})
        assert r.status_code == 422 and "truncated or corrupt" in r.json()["detail"]


# --- scan ---------------------------------------------------------------------------


def test_scan_reports_video_matches(
    tmp_path: Path, video_env: Env, copy: bytes, unrelated: bytes
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.mov").write_bytes(copy)
    (tree / "b").write_bytes(unrelated)
    (tree / "c.mp4").write_bytes(copy[: len(copy) // 3])
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["scan", str(tree), "--out", str(out), "--workers", "1",
                                 "--quiet", "--data-dir", str(video_env.data_dir)])  # fmt: skip
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())
            if "path" in r}  # fmt: skip
    assert result.exit_code == 1, result.output  # a match wins over errors (docs/SCAN.md)
    assert rows["a.mov"]["verdict"] == "block"
    assert rows["b"]["verdict"] == "allow"
    assert "truncated or corrupt" in rows["c.mp4"]["error"]
