"""Errors raised by the search core.

They all derive from :class:`SearchError` so callers can catch the whole family with one
clause. They live in one module on purpose: the project will later fold them into
``hashsvc/errors.py`` and this keeps that move a one-file change.
"""

from __future__ import annotations


class SearchError(Exception):
    """Base class of every error raised by ``hashsvc.search``."""


class InvalidInputError(SearchError, ValueError):
    """Arguments have the wrong shape, dtype or range (e.g. codes not ``(n, bits // 8)``).

    Also a :class:`ValueError` so generic argument-checking callers keep working.
    """


class DuplicateIdError(InvalidInputError):
    """``add`` was given an id that is already live in the index (or twice in one call).

    Ids are the link back to the hash-list store; two live entries with one id would make
    ``remove`` ambiguous, so we refuse rather than guess.
    """


class IndexCorruptError(SearchError):
    """Saved files are unreadable or inconsistent (bad checksum, truncated, wrong format)."""


class ChecksumMismatchError(IndexCorruptError):
    """The index file's sha256 differs from the one recorded in the manifest."""


class ManifestError(IndexCorruptError):
    """The manifest is missing, not JSON, or disagrees with the caller (e.g. ``bits``)."""
