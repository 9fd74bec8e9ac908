"""The one exception hierarchy of hashsvc.

Only adapters (api/, cli.py, scan.py) turn these into HTTP status codes or exit codes;
the core raises them and never catches them to print.

    HashsvcError
    ├── MediaRejected        upload/file cannot be decoded safely (422 / exit 2)
    ├── InvalidHash          a hash string is malformed for its signal type (422)
    ├── HashListError        a trusted-list file has bad lines (each with its line number)
    ├── StoreError           the database cannot do what was asked
    │   ├── InvalidValue     a value the store cannot hold: list name, action, threshold (422)
    │   ├── NotFound         no such list / entry / key / report (404)
    │   └── Conflict         name already exists, etc. (409)
    ├── SearchError          index files missing, corrupt or inconsistent
    └── ConfigError          settings are invalid or unsafe for this environment
"""

from __future__ import annotations

from dataclasses import dataclass


class HashsvcError(Exception):
    """Base of every error hashsvc raises on purpose."""


class MediaRejected(HashsvcError):
    """The media cannot be hashed; the message says why (format, size, truncation)."""


class InvalidHash(HashsvcError, ValueError):
    """A hash value is malformed for its signal type (wrong length, not hex, unknown type)."""


@dataclass(frozen=True)
class LineProblem:
    """One bad line of a trusted-list file: 1-based line number and what is wrong."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class HashListError(HashsvcError):
    """A trusted-list file failed validation; `problems` lists every bad line."""

    def __init__(self, problems: list[LineProblem], *, source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{head}{len(problems)} invalid line(s): {shown}{more}")


class StoreError(HashsvcError):
    """The store refused or failed an operation."""


class InvalidValue(StoreError, ValueError):
    """A value given to the store is malformed or out of range (e.g. a list name)."""


class NotFound(StoreError):
    """The named list, entry, key or report does not exist."""


class Conflict(StoreError):
    """The operation clashes with what is stored (e.g. a list name already taken)."""


class SearchError(HashsvcError):
    """The search index is missing, corrupt, or does not match the store."""


class ConfigError(HashsvcError):
    """Settings are invalid, or unsafe outside development."""
