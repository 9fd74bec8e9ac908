"""Trusted-list file formats: parse and validate with line numbers, and export.

A trusted list comes from outside (a hotline, a hash-sharing programme, a platform's own
bank), so this is a boundary: every line is checked exactly and *every* problem is
collected, so whoever fixes the file sees all of its faults at once instead of one per
attempt. Nothing here touches the database; the caller imports the entries only when
`problems` is empty (`ParsedList.raise_if_invalid`), which makes an import all-or-nothing.

Formats:

- ``csv``: a header row naming the columns; ``signal_type`` and ``hash`` are required,
  ``id`` (the provider's own id, kept as ``external_id``), ``category``, ``source`` and
  ``note`` are optional. Quoted fields may span lines; a line number names the first line
  of its row.
- ``jsonl``: one JSON object per line with the same keys.
- ``txt``: one hex hash per line; the caller names the signal type. Blank lines and
  lines starting with ``#`` are skipped.

Every format skips blank lines. A file with no entries at all is a problem: an empty
download is far more often a failed fetch than a provider emptying its list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Protocol

from hashsvc.errors import HashListError, InvalidHash, LineProblem
from hashsvc.signals import Hash, SignalType

FORMATS = ("csv", "jsonl", "txt")
MAX_FIELD_CHARS = 1000

_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
_REQUIRED = ("signal_type", "hash")
#: Signal types a list line can carry (a vPDQ video hash is a file of its own)
LINE_SIGNALS: tuple[SignalType, ...] = tuple(s for s in SignalType if s is not SignalType.VPDQ)
_OPTIONAL = ("id", "category", "source", "note")
_COLUMNS = _REQUIRED + _OPTIONAL
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One valid entry of a trusted list; `line` is where it came from (1-based)."""

    hash: Hash
    external_id: str = ""
    category: str = ""
    source: str = ""
    note: str = ""
    line: int = 0


@dataclass
class ParsedList:
    """What a list file holds: its valid entries and every problem found.

    `sha256` is the digest of the raw bytes; the store keeps it per import batch so an
    operator can tell which file a batch came from.
    """

    entries: list[ListEntry]
    problems: list[LineProblem]
    fmt: str
    source_name: str = ""
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_invalid(self) -> None:
        """Raise `HashListError` with every problem; importing a partly valid list would
        leave the operator unsure which entries are live."""
        if self.problems:
            raise HashListError(self.problems, source=self.source_name)


class ExportRow(Protocol):
    """Anything exportable: a `ListEntry` or a stored entry (`hashsvc.store.Entry`)."""

    @property
    def hash(self) -> Hash: ...
    @property
    def external_id(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def note(self) -> str: ...


def detect_format(name: str | PurePath) -> str | None:
    """The format a file name's extension implies, or None when it implies none."""
    return _EXTENSIONS.get(PurePath(name).suffix.lower())


def parse_list(
    data: bytes,
    fmt: str | None = None,
    *,
    signal_type: SignalType | None = None,
    source_name: str = "",
) -> ParsedList:
    """Parse and validate a whole list file; never raises for bad content.

    `fmt` defaults to what `source_name`'s extension implies. `signal_type` is required
    for ``txt``; for ``csv``/``jsonl`` it makes the ``signal_type`` column optional, and
    rows that name another type become problems (a cheap guard against importing the
    wrong file into a list).
    """
    digest = hashlib.sha256(data).hexdigest()
    chosen = fmt.lower() if fmt else detect_format(source_name)
    if chosen not in FORMATS:
        what = (
            f"unknown list format {fmt!r}"
            if fmt
            else (f"cannot tell the list format from the name {source_name!r}")
        )
        problem = LineProblem(1, f"{what}; use one of {', '.join(FORMATS)}")
        return ParsedList([], [problem], fmt=fmt or "", source_name=source_name, sha256=digest)

    if signal_type is SignalType.VPDQ:
        problem = LineProblem(1, "vpdq hashes are imported from vPDQ files (--format vpdq)")
        return ParsedList([], [problem], fmt=chosen, source_name=source_name, sha256=digest)
    parser = _Parser(chosen, signal_type)
    lines = parser.decode_lines(data)
    if not any(text.strip() for text in lines):
        parser.problem(1, "file is empty")
    elif chosen == "csv":
        parser.parse_csv(lines)
    elif chosen == "jsonl":
        parser.parse_jsonl(lines)
    else:
        parser.parse_txt(lines)
    if not parser.entries and not parser.problems:
        parser.problem(1, "file has no entries")
    parser.problems.sort(key=lambda p: p.line)  # stable: per-line order is kept
    return ParsedList(
        parser.entries, parser.problems, fmt=chosen, source_name=source_name, sha256=digest
    )


def format_export(entries: Iterable[ExportRow], fmt: str) -> bytes:
    """Write entries as ``csv`` or ``jsonl`` that `parse_list` reads back unchanged.

    The output holds trusted-list hashes and metadata: only admin-scoped callers may get
    it (DESIGN.md, privacy rules). Fields are written verbatim, so a spreadsheet may
    evaluate a note starting with ``=``; the export is meant for re-import, not Excel.
    """
    if fmt == "csv":
        buf = io.StringIO()
        # CRLF as RFC 4180 says; it also makes the writer quote a lone "\r" in a field,
        # which with a "\n" terminator it leaves bare and unreadable
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(_COLUMNS)
        for e in entries:
            writer.writerow(
                [e.hash.signal.value, e.hash.hex, e.external_id, e.category, e.source, e.note]
            )
        return buf.getvalue().encode("utf-8")
    if fmt == "jsonl":
        out = []
        for e in entries:
            obj = {
                "signal_type": e.hash.signal.value,
                "hash": e.hash.hex,
                "id": e.external_id,
                "category": e.category,
                "source": e.source,
                "note": e.note,
            }
            out.append(json.dumps(obj, ensure_ascii=False) + "\n")
        return "".join(out).encode("utf-8")
    raise ValueError(f"cannot export as {fmt!r}; use csv or jsonl")


@dataclass
class _Parser:
    """Accumulates entries and problems for one file."""

    fmt: str
    signal_type: SignalType | None
    entries: list[ListEntry] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    # lines that failed to decode: their rows yield no entry and no further problems,
    # since anything said about replacement characters would only confuse
    bad_lines: set[int] = field(default_factory=set)
    seen: dict[tuple[SignalType, bytes], int] = field(default_factory=dict)

    def problem(self, line: int, message: str) -> None:
        self.problems.append(LineProblem(line, message))

    def decode_lines(self, data: bytes) -> list[str]:
        """Split on ``\\n`` only and decode each line by itself, so a bad byte is
        reported on its own line. Line endings are kept for the csv reader, which needs
        them to parse quoted multi-line fields losslessly."""
        if data.startswith(_BOM):  # spreadsheet exports often start with one
            data = data[len(_BOM) :]
        raw = data.split(b"\n")
        if raw and raw[-1] == b"":
            raw.pop()
        lines = []
        for number, chunk in enumerate(raw, start=1):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problem(
                    number,
                    f"not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at column {exc.start + 1})",
                )
                self.bad_lines.add(number)
                text = chunk.decode("utf-8", errors="replace")
            lines.append(text + "\n")
        return lines

    # -- formats ----------------------------------------------------------------------

    def parse_csv(self, lines: list[str]) -> None:
        reader = csv.reader(iter(lines), strict=True)
        columns: list[str] | None = None
        previous_end = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                start, previous_end = previous_end + 1, reader.line_num
                if not self.bad_lines.intersection(range(start, previous_end + 1)):
                    self.problem(start, f"malformed CSV: {exc}")
                continue
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if self.bad_lines.intersection(range(start, previous_end + 1)):
                if columns is None:
                    return  # an undecodable header: nothing below can be read reliably
                continue
            if columns is None:
                columns = self._csv_header(row, start)
                if columns is None:
                    return
                continue
            if len(row) > len(columns):
                self.problem(start, f"has {len(row)} fields, the header has {len(columns)}")
                continue
            self._add(start, dict(zip(columns, row, strict=False)))

    def _csv_header(self, row: list[str], line: int) -> list[str] | None:
        """Check the header; None when rows cannot be interpreted at all."""
        names = [cell.strip().lower() for cell in row]
        required = [c for c in _REQUIRED if not (c == "signal_type" and self.signal_type)]
        if not set(_REQUIRED) & set(names):
            self.problem(
                line,
                "missing header row: the first row must name the columns "
                f"({','.join(_REQUIRED)}[,{','.join(_OPTIONAL)}])",
            )
            return None
        missing = [c for c in required if c not in names]
        for name in missing:
            self.problem(line, f"header lacks the required column {name!r}")
        for i, name in enumerate(names):
            if name not in _COLUMNS:
                self.problem(line, f"unknown column {name!r} (known: {', '.join(_COLUMNS)})")
            elif name in names[:i]:
                self.problem(line, f"column {name!r} appears twice")
        if missing:
            return None
        # unknown or repeated columns are reported once above, then ignored per row
        return [n if n in _COLUMNS and n not in names[:i] else "" for i, n in enumerate(names)]

    def parse_jsonl(self, lines: list[str]) -> None:
        for number, text in enumerate(lines, start=1):
            if number in self.bad_lines or not text.strip():
                continue
            try:
                obj = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
            except _DuplicateKey as exc:
                self.problem(number, f"key {exc.args[0]!r} appears twice")
                continue
            except json.JSONDecodeError as exc:
                self.problem(number, f"malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            except (ValueError, RecursionError) as exc:
                # int digit limits and deep nesting fail outside JSONDecodeError
                self.problem(number, f"malformed JSON: {exc.__class__.__name__}")
                continue
            if not isinstance(obj, dict):
                self.problem(number, f"expected a JSON object, got {_json_kind(obj)}")
                continue
            fields: dict[str, str] = {}
            ok = True
            for key, value in obj.items():
                if key not in _COLUMNS:
                    self.problem(number, f"unknown key {key!r} (known: {', '.join(_COLUMNS)})")
                    ok = False
                elif value is None:
                    fields[key] = ""
                elif key == "id" and isinstance(value, int) and not isinstance(value, bool):
                    fields[key] = str(value)  # providers often use numeric ids
                elif isinstance(value, str):
                    fields[key] = value
                else:
                    self.problem(number, f"{key!r} must be a string, got {_json_kind(value)}")
                    ok = False
            if not ok:
                continue
            if "hash" not in fields:
                self.problem(number, "missing key 'hash'")
                continue
            if "signal_type" not in fields and self.signal_type is None:
                self.problem(number, "missing key 'signal_type'")
                continue
            self._add(number, fields)

    def parse_txt(self, lines: list[str]) -> None:
        if self.signal_type is None:
            self.problem(1, "a txt list holds bare hashes: give their signal type (--signal-type)")
            return
        for number, text in enumerate(lines, start=1):
            stripped = text.strip()
            if number in self.bad_lines or not stripped or stripped.startswith("#"):
                continue
            self._add(number, {"hash": stripped})

    # -- one row ----------------------------------------------------------------------

    def _add(self, line: int, raw: dict[str, str]) -> None:
        """Validate one row's fields (every fault reported) and keep it if valid."""
        fields = {k: v.strip() for k, v in raw.items() if k}
        ok = True
        for name, value in fields.items():
            if len(value) > MAX_FIELD_CHARS:
                self.problem(
                    line,
                    f"{name!r} is {len(value)} characters long; the limit is {MAX_FIELD_CHARS}",
                )
                ok = False
        sig = self._signal(line, fields.get("signal_type"))
        text = fields.get("hash", "")
        if not text:
            self.problem(line, "blank hash")
            return
        if sig is None or not ok:
            return
        try:
            parsed = Hash.from_hex(sig, text)
        except InvalidHash as exc:
            self.problem(line, str(exc))
            return
        key = (sig, parsed.value)
        first = self.seen.get(key)
        if first is not None:
            self.problem(line, f"duplicate of line {first} (same {sig} hash)")
            return
        self.seen[key] = line
        self.entries.append(
            ListEntry(
                hash=parsed,
                external_id=fields.get("id", ""),
                category=fields.get("category", ""),
                source=fields.get("source", ""),
                note=fields.get("note", ""),
                line=line,
            )
        )

    def _signal(self, line: int, text: str | None) -> SignalType | None:
        if text is None or (not text and self.signal_type is not None):
            return self.signal_type
        if not text:
            self.problem(line, "blank signal type")
            return None
        try:
            sig = SignalType.parse(text)
        except InvalidHash as exc:
            self.problem(line, str(exc))
            return None
        if sig is SignalType.VPDQ:
            # a video hash is many frame lines, not one value: it has its own file format
            self.problem(line, "vpdq hashes are imported from vPDQ files (--format vpdq)")
            return None
        if self.signal_type is not None and sig is not self.signal_type:
            self.problem(line, f"signal type {sig} does not match the expected {self.signal_type}")
            return None
        return sig


class _DuplicateKey(ValueError):
    pass


def _pairs_no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads keeps the last of repeated keys silently; a list must not be ambiguous."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_kind(value: object) -> str:
    # bool before int: in Python a bool is an int, in JSON it is not a number
    for kind, name in _JSON_KINDS:
        if isinstance(value, kind):
            return name
    return "null"


_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)
