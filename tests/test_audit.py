"""The audit log: allows buffered and counted, everything else written at once."""

from __future__ import annotations

from pathlib import Path

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
    with Store.open(tmp_path / "hashsvc.db") as store:
        log = audit.AuditLog(store)
        log.record(audit.AuditEvent("match", key_id=1, request_id="r1", verdict="allow", count=3))
        log.allow("match", key_id=1, request_id="r1", count=3)
        assert audit.read(store) == []
        assert log.flush() == 2
        a, b = audit.read(store)
        assert {**vars(a), "id": 0, "at": 0} == {**vars(b), "id": 0, "at": 0}
        assert a.at <= b.at
