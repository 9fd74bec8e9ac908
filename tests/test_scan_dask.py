"""`hashsvc scan` on Dask: `--dask-local 2` and `--scheduler` give exactly the results of
the local path; the per-worker Matcher plugin is removed afterwards; a worker whose store
is behind the client's stops the scan.

The `--dask-local 2` test starts a real cluster of 2 worker processes, since that is
what it tests; worker start-up (imports, numba kernels) dominates this module's time.
The `--scheduler` tests connect to one module cluster whose workers are threads of this
process (`processes=False`): the client code is the same, and the test stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import distributed
import pytest

from hashsvc import scan
from tests.conftest import encode, smooth_image
from tests.test_scan import (
    IS_ROOT,
    build_tree,
    canonical,
    check_results,
    cli,
    read_jsonl,
    settings_for,
)
from tests.test_scan import data_dir as data_dir  # noqa: F401  (the module fixture)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as c:
        yield c


def _local_results(data_dir: Path, root: Path, out: Path) -> list[dict[str, Any]]:
    code, output = cli(data_dir, str(root), "--out", str(out), "--workers", "0", "--quiet")
    assert code == 1, output
    return read_jsonl(out)


def test_dask_local_gives_the_same_results_as_the_local_path(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    tree = build_tree(tmp_path / "t", locked_fails=not IS_ROOT)
    out = tmp_path / "dask.jsonl"
    code, output = cli(data_dir, str(tree.root), "--out", str(out), "--dask-local", "2")
    assert code == 1, output
    assert "scan finished" in output
    check_results(tree, read_jsonl(out))
    local = _local_results(data_dir, tree.root, tmp_path / "local.jsonl")
    assert canonical(read_jsonl(out)) == canonical(local)


def test_scheduler_option_uses_an_existing_cluster_and_cleans_up(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Any,
) -> None:
    tree = build_tree(tmp_path / "t", locked_fails=not IS_ROOT)
    out = tmp_path / "dask.jsonl"
    args = ["--out", str(out), "--scheduler", cluster.scheduler_address, "--quiet"]
    code, output = cli(data_dir, str(tree.root), *args)
    assert code == 1, output
    check_results(tree, read_jsonl(out))
    local = _local_results(data_dir, tree.root, tmp_path / "local.jsonl")
    assert canonical(read_jsonl(out)) == canonical(local)
    with distributed.Client(cluster) as client:
        plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
    assert len(plugins) == 2 and all(scan.DASK_PLUGIN not in p for p in plugins.values())


def test_a_worker_whose_store_is_behind_stops_the_scan(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Any,
) -> None:
    """A stale copy of the data dir on a worker would miss entries silently."""
    (tmp_path / "a.jpg").write_bytes(encode(smooth_image(1)))
    with distributed.Client(cluster) as client:
        backend = scan.DaskBackend(client, settings_for(data_dir), min_version=10**9)
        try:
            with pytest.raises(scan.ScanError, match="behind this client"):
                list(scan.Scan([str(tmp_path)], backend))
        finally:
            backend.close()


def test_an_unreachable_scheduler_is_a_clear_error(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "a.jpg").write_bytes(encode(smooth_image(2)))
    out = tmp_path / "r.jsonl"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, output = cli(
            data_dir, str(tmp_path), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9"
        )
    assert code == 2 and "cannot reach the Dask scheduler" in output


def _profiler_on() -> bool:
    return bool(dask.config.get("distributed.worker.profile.enabled"))


def test_local_cluster_workers_run_without_the_profiler() -> None:
    """`--dask-local` workers get SCAN_WORKER_CONFIG (the profiler cost ~15% of a scan's
    throughput); the client's own process keeps its settings."""
    assert _profiler_on()  # dask's default, so the check below means something
    with scan.dask_client(local_workers=1) as client:
        assert list(client.run(_profiler_on).values()) == [False]
    assert _profiler_on()


def _parent_cmdline() -> str:
    import os

    import psutil

    return " ".join(psutil.Process(os.getppid()).cmdline())


def test_local_cluster_workers_are_forked_from_the_preloaded_forkserver() -> None:
    """Not spawned by the nanny (which then re-imported Dask, numba and our kernels in
    every worker): their parent is the forkserver that imported them once."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    with scan.dask_client(local_workers=1) as client:
        (parent,) = client.run(_parent_cmdline).values()
    assert "forkserver" in parent


def test_dask_tasks_carry_many_small_files_and_few_large_ones(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Any,
) -> None:
    """A Dask task costs the client ~10 CPU-ms: small files go many to a task."""
    small = tmp_path / "small"
    small.mkdir()
    for i in range(60):
        (small / f"{i:02d}.jpg").write_bytes(encode(smooth_image(i, (64, 48))))
    sizes: list[int] = []
    with distributed.Client(cluster) as client:
        backend = scan.DaskBackend(client, settings_for(data_dir), chunk_bytes=1 << 20)
        submit = client.submit

        def counting_submit(fn: Any, tasks: list[scan.FileTask], **kw: Any) -> Any:
            sizes.append(len(tasks))
            return submit(fn, tasks, **kw)

        client.submit = counting_submit  # type: ignore[method-assign]
        try:
            results = list(scan.Scan([str(small)], backend))
        finally:
            client.submit = submit  # type: ignore[method-assign]
            backend.close()
        assert sorted(r.path for r in results) == sorted(str(p) for p in small.iterdir())
        assert sum(sizes) == 60 and max(sizes) > backend.chunk, sizes  # grown past 8
        # ... but only once each of the 2 worker slots had two tasks: a small scan still
        # spreads over every worker
        assert len(sizes) > 4 and max(sizes[:4]) <= backend.chunk, sizes
        # files over the byte budget go `chunk` at a time
        sizes.clear()
        client.submit = counting_submit  # type: ignore[method-assign]
        big = scan.DaskBackend(client, settings_for(data_dir), chunk=2, chunk_bytes=1)
        try:
            list(scan.Scan([str(small)], big))
        finally:
            client.submit = submit  # type: ignore[method-assign]
            big.close()
        assert max(sizes) == 2, sizes


def test_a_failed_task_is_retried_file_by_file(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task whose worker dies (KilledWorker) names no file: only the file that fails
    on its own is reported `worker_crashed`, the others get their real result."""
    folder = tmp_path / "t"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.jpg").write_bytes(encode(smooth_image(i, (64, 48))))
    culprit = str(folder / "07.jpg")
    real = scan.dask_check_chunk

    def dies_on_culprit(tasks: list[scan.FileTask]) -> Any:
        if any(t.path == culprit for t in tasks):
            raise RuntimeError("worker died")
        return real(tasks)

    monkeypatch.setattr(scan, "dask_check_chunk", dies_on_culprit)
    with distributed.Client(cluster) as client:
        backend = scan.DaskBackend(client, settings_for(data_dir), chunk=4)
        try:
            results = {r.path: r for r in scan.Scan([str(folder)], backend)}
        finally:
            backend.close()
    assert len(results) == 20
    crashed = {p for p, r in results.items() if r.error_kind == scan.ErrorKind.WORKER_CRASHED.value}
    assert crashed == {culprit}
    others = [r for p, r in results.items() if p != culprit]
    assert all(r.error_kind is None and r.verdict is not None for r in others)
