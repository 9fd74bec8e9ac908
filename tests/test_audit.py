"""The audit log: allows buffered and counted, everything else written at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashsvc import audit
from hashsvc.store import Store


def test_allow_is_buffered_block_is_immediate(tmp_path: Path) -> None:
    with Store.open(tmp_path / "hashsvc.db") as store:
        log = audit.AuditLog(store)
        log.record(audit.AuditEvent("match", key_id=1, request_id="r1", verdict="allow", count=3))
        assert audit.read(store) == []
        log.record(
            audit.AuditEvent(
                "match", key_id=1, request_id="r2", verdict="block", entry_ids=[5, 2], report_id=9
            )
        )
        (row,) = audit.read(store)
        assert (row.verdict, row.entry_ids, row.report_id) == ("block", [2, 5], 9)
        assert log.flush() == 1
        rows = audit.read(store)
        assert [(r.request_id, r.verdict, r.count) for r in rows] == [
            ("r2", "block", 1),
            ("r1", "allow", 3),
        ]
        assert rows[1].at <= rows[0].at  # stamped when recorded, not when flushed


def test_allow_shortcut_buffers_the_same_row_as_record(tmp_path: Path) -> None:
    rows = []
    for how in ("record", "allow"):
        with Store.open(tmp_path / f"{how}.db") as store:
            log = audit.AuditLog(store)
            if how == "record":
                log.record(
                    audit.AuditEvent("match", key_id=1, request_id="r1", verdict="allow", count=3)
                )
            else:
                log.allow("match", key_id=1, request_id="r1", count=3)
            assert log.flush() == 1
            (row,) = audit.read(store)
            rows.append({**vars(row), "at": 0})
    assert rows[0] == rows[1]
    assert (rows[0]["request_id"], rows[0]["count"], rows[0]["detail"]) == ("r1", 3, {})


def test_allows_are_counted_per_key_and_action(tmp_path: Path) -> None:
    """One row per key and action per flush, whatever the number of requests: the
    verdict count, the request count, and the first and last time."""
    clock = iter(range(100, 1000))
    with Store.open(tmp_path / "hashsvc.db", clock=lambda: float(next(clock))) as store:
        log = audit.AuditLog(store)
        expected: dict[tuple[str, int], list[float]] = {}  # -> [verdicts, requests]
        for i in range(40):
            action, key_id, count = ("match", "match_hashes")[i % 2], 1 + i % 3, 1 + i % 5
            log.allow(action, key_id=key_id, request_id=f"r{i}", count=count)
            seen = expected.setdefault((action, key_id), [0, 0])
            seen[0] += count
            seen[1] += 1
        assert audit.read(store) == []
        assert log.flush() == 40
        rows = audit.read(store)
        assert len(rows) == len(expected) == 6
        for r in rows:
            verdicts, requests = expected[(r.action, r.key_id)]
            assert (r.verdict, r.count, r.request_id) == ("allow", verdicts, "")
            assert r.detail["requests"] == requests and r.at < r.detail["until"]
        assert log.flush() == 0 and len(audit.read(store)) == 6


def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    with Store.open(tmp_path / "hashsvc.db") as store:
        log = audit.AuditLog(store)
        log.allow("match", key_id=1, request_id="r1", count=2)

        def refuse(events: object) -> None:
            raise RuntimeError("disk full")

        log.record_now = refuse  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="disk full"):
            log.flush()
        del log.record_now
        log.allow("match", key_id=1, request_id="r2", count=5)
        assert log.flush() == 2
        (row,) = audit.read(store)
        assert (row.count, row.detail["requests"], row.request_id) == (7, 2, "")
