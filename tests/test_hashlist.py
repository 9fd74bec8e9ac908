"""hashsvc.hashlist: list formats, line-numbered validation, export round-trip.

The fixture lists under tests/data/lists hold made-up hashes (digests of words), not
hashes of any real media.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashsvc.errors import HashListError, LineProblem
from hashsvc.hashlist import (
    LINE_SIGNALS,
    MAX_FIELD_CHARS,
    ListEntry,
    ParsedList,
    detect_format,
    format_export,
    parse_list,
)
from hashsvc.signals import Hash, SignalType

LISTS = Path(__file__).parent / "data" / "lists"
PDQ_A = hashlib.sha256(b"a").hexdigest()  # any 64 hex digits will do for a PDQ hash
PDQ_B = hashlib.sha256(b"b").hexdigest()
MD5_A = hashlib.md5(b"a").hexdigest()
HEADER = "signal_type,hash,id,category,source,note\n"


def parse(text: str | bytes, fmt: str, **kw: object) -> ParsedList:
    data = text.encode() if isinstance(text, str) else text
    return parse_list(data, fmt, **kw)  # type: ignore[arg-type]


def only_problem(parsed: ParsedList) -> LineProblem:
    assert len(parsed.problems) == 1, parsed.problems
    return parsed.problems[0]


def without_line(entries: list[ListEntry]) -> list[ListEntry]:
    return [dataclasses.replace(e, line=0) for e in entries]


# -- valid files ------------------------------------------------------------------------


def test_csv_fixture_parses_every_column() -> None:
    parsed = parse_list((LISTS / "valid.csv").read_bytes(), "csv", source_name="valid.csv")
    assert parsed.ok and parsed.problems == []
    assert [e.hash.signal for e in parsed.entries] == [
        SignalType.PDQ, SignalType.PDQ, SignalType.PHASH, SignalType.MD5, SignalType.SHA256,
    ]  # fmt: skip
    first = parsed.entries[0]
    assert first.external_id == "demo-1"
    assert (first.category, first.source, first.note) == (
        "test",
        "fixture",
        "a benign bridge photo",
    )
    assert first.line == 2
    assert parsed.entries[4].note == "note with, a comma"
    assert parsed.sha256 == hashlib.sha256((LISTS / "valid.csv").read_bytes()).hexdigest()


def test_csv_jsonl_and_txt_fixtures_agree() -> None:
    from_csv = parse_list((LISTS / "valid.csv").read_bytes(), "csv").entries
    from_jsonl = parse_list((LISTS / "valid.jsonl").read_bytes(), "jsonl").entries
    assert without_line(from_csv) == without_line(from_jsonl)
    from_txt = parse_list(
        (LISTS / "valid_pdq.txt").read_bytes(), "txt", signal_type=SignalType.PDQ
    ).entries
    assert [e.hash for e in from_txt] == [e.hash for e in from_csv[:2]]
    assert [e.line for e in from_txt] == [3, 4]  # the comment and blank line are skipped


def test_hex_is_lower_cased_and_whitespace_trimmed() -> None:
    parsed = parse(f"{HEADER} PDQ , {PDQ_A.upper()} , x-1 ,,,\n", "csv")
    (entry,) = parsed.entries
    assert entry.hash.hex == PDQ_A
    assert entry.hash == Hash.from_hex(SignalType.PDQ, PDQ_A)
    assert entry.external_id == "x-1"


def test_crlf_line_endings_and_utf8_bom_are_accepted() -> None:
    text = f"{HEADER}pdq,{PDQ_A},1,,,café\r\nmd5,{MD5_A},2,,,\r\n"
    parsed = parse(b"\xef\xbb\xbf" + text.encode(), "csv")
    assert parsed.ok
    assert [e.note for e in parsed.entries] == ["café", ""]


def test_csv_may_leave_out_the_optional_columns_in_any_order() -> None:
    parsed = parse(f"hash,signal_type\n{MD5_A},md5\n", "csv")
    (entry,) = parsed.entries
    assert entry.hash.signal is SignalType.MD5
    assert (entry.external_id, entry.category, entry.source, entry.note) == ("", "", "", "")


def test_a_given_signal_type_makes_the_csv_column_optional() -> None:
    parsed = parse(f"hash,id\n{PDQ_A},7\n", "csv", signal_type=SignalType.PDQ)
    assert parsed.ok and parsed.entries[0].hash.signal is SignalType.PDQ


def test_jsonl_accepts_numeric_ids_and_nulls() -> None:
    line = json.dumps({"signal_type": "md5", "hash": MD5_A, "id": 42, "note": None})
    (entry,) = parse(line + "\n\n", "jsonl").entries
    assert (entry.external_id, entry.note) == ("42", "")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("list.csv", "csv"), ("LIST.CSV", "csv"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"),
     ("x.txt", "txt"), ("x.dat", None), ("noext", None)],
)  # fmt: skip
def test_format_is_detected_from_the_extension(name: str, fmt: str | None) -> None:
    assert detect_format(name) == fmt


def test_an_undetectable_format_is_a_problem_not_a_crash() -> None:
    problem = only_problem(parse_list(b"00", source_name="list.dat"))
    assert problem.message.startswith("cannot tell the list format from the name 'list.dat'")


def test_parse_list_detects_the_format_when_none_is_given() -> None:
    data = (LISTS / "valid.jsonl").read_bytes()
    parsed = parse_list(data, source_name="lists/valid.jsonl")
    assert parsed.ok and parsed.fmt == "jsonl" and len(parsed.entries) == 5


# -- every kind of bad line -------------------------------------------------------------


BAD_LINES = [
    # (id, fmt, content, line, substring of the message)
    ("bad-hex", "csv", f"{HEADER}pdq,{PDQ_A[:-1]}z,,,,\n", 2, "non-hex character 'z'"),
    ("wrong-length", "csv", f"{HEADER}pdq,{PDQ_A[:-2]},,,,\n", 2, "must be 64 hex characters"),
    ("unknown-type", "csv", f"{HEADER}sha1,{PDQ_A[:40]},,,,\n", 2, "unknown signal type 'sha1'"),
    ("blank-hash", "csv", f"{HEADER}md5,  ,,,,\n", 2, "blank hash"),
    ("blank-type", "csv", f"{HEADER},{MD5_A},,,,\n", 2, "blank signal type"),
    ("missing-column", "csv", f"signal_type,id\nmd5,{MD5_A}\n", 1, "required column 'hash'"),
    ("missing-header", "csv", f"md5,{MD5_A}\n", 1, "missing header row"),
    ("unknown-column", "csv", f"signal_type,hash,catgory\nmd5,{MD5_A},x\n", 1,
     "unknown column 'catgory'"),
    ("repeated-column", "csv", f"signal_type,hash,id,id\nmd5,{MD5_A},1,2\n", 1,
     "column 'id' appears twice"),
    ("too-many-fields", "csv", f"{HEADER}md5,{MD5_A},,,,,extra\n", 2, "has 7 fields"),
    ("bad-quoting", "csv", f'{HEADER}md5,"{MD5_A}"x,,,,\n', 2, "malformed CSV"),
    ("over-long", "csv", f"{HEADER}md5,{MD5_A},,,,{'n' * (MAX_FIELD_CHARS + 1)}\n", 2,
     "'note' is 1001 characters long"),
    ("duplicate", "csv", f"{HEADER}pdq,{PDQ_A},,,,\npdq,{PDQ_A.upper()},,,,\n", 3,
     "duplicate of line 2"),
    ("header-only", "csv", HEADER, 1, "no entries"),
    ("empty", "csv", "", 1, "file is empty"),
    ("whitespace-only", "jsonl", "\n  \n\t\n", 1, "file is empty"),
    ("malformed-json", "jsonl", '{"signal_type": "md5", "hash": }\n', 1, "malformed JSON"),
    ("json-array", "jsonl", '["md5", "00"]\n', 1, "expected a JSON object, got an array"),
    ("json-unknown-key", "jsonl", f'{{"signal_type":"md5","hash":"{MD5_A}","x":1}}\n', 1,
     "unknown key 'x'"),
    ("json-repeated-key", "jsonl", f'{{"signal_type":"md5","hash":"{MD5_A}","hash":"0"}}\n',
     1, "key 'hash' appears twice"),
    ("json-not-string", "jsonl", f'{{"signal_type":"md5","hash":"{MD5_A}","note":[1]}}\n', 1,
     "'note' must be a string, got an array"),
    ("json-missing-hash", "jsonl", '{"signal_type":"md5"}\n', 1, "missing key 'hash'"),
    ("json-huge-number", "jsonl", '{"id": ' + "9" * 5000 + "}\n", 1, "malformed JSON"),
    ("txt-no-type", "txt", f"{PDQ_A}\n", 1, "give their signal type (--signal-type)"),
    ("unknown-format", "xml", f"{PDQ_A}\n", 1, "unknown list format"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "content", "line", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_LINES],
)
def test_each_kind_of_bad_line_is_named_with_its_line(
    fmt: str, content: str, line: int, message: str
) -> None:
    parsed = parse(content, fmt)
    problem = only_problem(parsed)
    assert problem.line == line
    assert message in problem.message
    assert not parsed.ok


def test_non_utf8_names_its_line_and_the_rest_is_still_checked() -> None:
    data = f"{HEADER}md5,{MD5_A},,,,\n".encode() + b"md5,\xff\xfe,,,,\n" + b"md5,00,,,,\n"
    parsed = parse(data, "csv")
    assert [(p.line, p.message) for p in parsed.problems] == [
        (3, "not valid UTF-8 (byte 0xff at column 5)"),
        (4, "md5 hash must be 32 hex characters, got 2"),
    ]
    assert [e.line for e in parsed.entries] == [2]


def test_txt_accepts_the_signal_type_and_rejects_bad_lines() -> None:
    text = f"# comment\n{PDQ_A}\n\n{PDQ_A[:10]}\n{PDQ_B}  \n{PDQ_A.upper()}\n"
    parsed = parse(text, "txt", signal_type=SignalType.PDQ)
    assert [e.line for e in parsed.entries] == [2, 5]
    assert [(p.line, p.message.split(" (")[0]) for p in parsed.problems] == [
        (4, "pdq hash must be 64 hex characters, got 10"),
        (6, "duplicate of line 2"),
    ]


def test_a_row_naming_another_type_than_the_given_one_is_a_problem() -> None:
    parsed = parse(f"{HEADER}md5,{MD5_A},,,,\n", "csv", signal_type=SignalType.PDQ)
    assert "does not match the expected pdq" in only_problem(parsed).message


def test_duplicates_are_per_signal_type() -> None:
    # the same bytes can be a valid hash of two types; they are different entries
    parsed = parse(f"{HEADER}pdq,{PDQ_A},,,,\nsha256,{PDQ_A},,,,\n", "csv")
    assert parsed.ok and len(parsed.entries) == 2


def test_a_multi_line_row_is_reported_at_its_first_line() -> None:
    data = (LISTS / "bad.csv").read_bytes()
    parsed = parse_list(data, "csv", source_name="bad.csv")
    lines = [p.line for p in parsed.problems]
    assert lines == [3, 4, 5, 6, 7, 10]
    assert parsed.problems[-1].message == "has 5 fields, the header has 4"
    assert [e.external_id for e in parsed.entries] == ["ok-1", "ok-2"]
    assert parsed.entries[1].note == "a note\nover two lines"


# -- the all-or-nothing contract --------------------------------------------------------


def test_every_problem_is_collected_and_raised_together() -> None:
    parsed = parse_list((LISTS / "bad.csv").read_bytes(), "csv", source_name="bad.csv")
    with pytest.raises(HashListError) as caught:
        parsed.raise_if_invalid()
    err = caught.value
    assert err.problems == parsed.problems and len(err.problems) == 6
    assert err.source == "bad.csv"
    assert str(err).startswith("bad.csv: 6 invalid line(s): line 3: ")


def test_a_valid_list_does_not_raise() -> None:
    parse_list((LISTS / "valid.csv").read_bytes(), "csv").raise_if_invalid()


def test_problems_come_in_line_order() -> None:
    text = HEADER + "".join(f"md5,{'x' * (i + 1)},,,,\n" for i in range(30))
    parsed = parse(text, "csv")
    assert [p.line for p in parsed.problems] == list(range(2, 32))
    assert parsed.entries == []


# -- export -----------------------------------------------------------------------------


# Fields are trimmed when parsed, so a round-trip holds for trimmed text; surrogates
# cannot be encoded as UTF-8 and never come out of a parse.
_field = st.text(st.characters(codec="utf-8"), max_size=40).map(str.strip)
_hash = st.sampled_from(LINE_SIGNALS).flatmap(
    lambda sig: st.binary(min_size=sig.bits // 8, max_size=sig.bits // 8).map(
        lambda raw: Hash(sig, raw)
    )
)
_entry = st.builds(
    ListEntry, hash=_hash, external_id=_field, category=_field, source=_field, note=_field
)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@settings(max_examples=60, deadline=None)
@given(entries=st.lists(_entry, min_size=1, max_size=8, unique_by=lambda e: e.hash))
def test_export_round_trips_through_parse(fmt: str, entries: list[ListEntry]) -> None:
    parsed = parse_list(format_export(entries, fmt), fmt)
    assert parsed.problems == []
    assert without_line(parsed.entries) == without_line(entries)


def test_export_keeps_line_numbers_meaningful() -> None:
    entries = parse_list((LISTS / "valid.csv").read_bytes(), "csv").entries
    for fmt in ("csv", "jsonl"):
        again = parse_list(format_export(entries, fmt), fmt).entries
        assert [e.line for e in again] == ([2, 3, 4, 5, 6] if fmt == "csv" else [1, 2, 3, 4, 5])


def test_export_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="cannot export as 'txt'"):
        format_export([], "txt")


_TOKENS = [b"pdq", b"md5", b",", b"\n", b"\r", b'"', b"{", b"}", b":", b"#", b"signal_type",
           b"hash", b"\xff", b"0" * 32, b" ", b'"hash"', b"[", b"null"]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join) | st.binary(max_size=200),
    fmt=st.sampled_from(["csv", "jsonl", "txt"]),
    signal_type=st.sampled_from([None, SignalType.MD5]),
)
def test_any_bytes_give_problems_not_exceptions(
    data: bytes, fmt: str, signal_type: SignalType | None
) -> None:
    parsed = parse_list(data, fmt, signal_type=signal_type)
    last_line = data.count(b"\n") + 1
    assert parsed.entries or parsed.problems
    assert all(1 <= p.line <= last_line for p in parsed.problems)
    assert all(1 <= e.line <= last_line for e in parsed.entries)
