"""Iterate JSON objects from a JSONL file or a JSON array file, each with its 1-based line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .text_files import read_text_file


@dataclass
class RawRecord:
    line: int
    value: object  # parsed JSON (a dict when well-formed)


@dataclass
class BadRecord:
    line: int
    reason: str
    text: str


def iter_json_records(path: Path) -> Iterator[RawRecord | BadRecord]:
    """Yield parsed records, or BadRecord for a line that is not valid JSON. Blank lines are skipped."""
    text = read_text_file(path)
    if text.lstrip().startswith("["):
        yield from _iter_json_array(path, text)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield RawRecord(lineno, json.loads(line))
        except json.JSONDecodeError as exc:
            yield BadRecord(lineno, f"invalid JSON ({exc.msg} at column {exc.colno})", line)


def _iter_json_array(path: Path, text: str) -> Iterator[RawRecord]:
    """Walk the elements of a top-level JSON array, keeping the line where each element starts."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            raise DataError(path, "JSON array is not closed with ']'", text.count("\n") + 1)
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            # Inside an array one broken element makes the rest unparseable, so this stops the file.
            raise DataError(path, f"invalid JSON ({exc.msg})", exc.lineno) from exc
        yield RawRecord(line, value)


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, object) for each record of an eval file, where any malformed record is an error naming its line."""
    for rec in iter_json_records(path):
        if isinstance(rec, BadRecord):
            raise DataError(path, rec.reason, rec.line)
        if not isinstance(rec.value, dict):
            raise DataError(path, "record must be a JSON object", rec.line)
        yield rec.line, rec.value


def required_text(value: dict, field: str, path: Path, line: int) -> str:
    """`value[field]` when it is a non-empty string; otherwise a DataError naming the field and line."""
    text = value.get(field)
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, f"missing or empty string field '{field}'", line)
    return text
