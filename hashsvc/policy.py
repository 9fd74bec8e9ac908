"""Matches -> verdict. The one place the verdict rule lives (CLI, API and scan share it).

`block` if any match comes from a `block` list, else `report` if any comes from a
`report` list, else `allow`. Matches reaching this module are already within their
list's threshold and of live (enabled) entries; the matcher guarantees that.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol


class Verdict(StrEnum):
    BLOCK = "block"
    REPORT = "report"
    ALLOW = "allow"


class HasAction(Protocol):
    @property
    def action(self) -> str: ...


def verdict(matches: Iterable[HasAction]) -> Verdict:
    """The strongest action among the matches (block > report > allow)."""
    actions = {str(m.action) for m in matches}
    if Verdict.BLOCK.value in actions:
        return Verdict.BLOCK
    if Verdict.REPORT.value in actions:
        return Verdict.REPORT
    return Verdict.ALLOW
