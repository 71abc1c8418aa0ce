"""Stream records from any data source: instruction files, JSONL text records, Parquet, plain text / markdown.

Memory stays bounded: JSONL and Parquet are read record by record (a JSONL file can also be read from a byte
range, so one large file splits into tasks for several processes). Only a top-level JSON array file is parsed
whole; use JSONL for large data. Encodings: UTF-8 with or without BOM, UTF-16 with BOM; anything else is an error.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .instructions import _Malformed, detect_format, parse_record
from .json_records import BadRecord, iter_json_records

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")
_INSTRUCTION_KEYS = ("instruction", "conversations", "messages")
_SNIFF_BYTES = 8192
_BLOCK_BYTES = 1 << 24  # read size when cutting a large file into ranges


@dataclass
class Record:
    """One parsed record. `kind` is chat (`messages`) or text (`text`); `line` is 1-based (row for Parquet)."""

    source: str
    line: int
    kind: str
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    shape: str = ""  # the input shape: document, text, alpaca, sharegpt, messages

    def contents(self) -> list[str]:
        return [self.text] if self.kind == "text" else [m["content"] for m in self.messages]

    def joined(self) -> str:
        """All of the record's text, turns separated by newlines: what the quality rules and dedup look at."""
        return self.text if self.kind == "text" else "\n".join(m["content"] for m in self.messages)

    def payload(self) -> dict:
        return {"text": self.text} if self.kind == "text" else {"messages": self.messages}


@dataclass
class Malformed:
    """A record that could not be parsed: where and why, and its raw text or value."""

    source: str
    line: int
    reason: str
    raw: object


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files a source path stands for: itself, or every supported file under a folder (sorted)."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_file():
        return [path]
    suffixes = TEXT_SUFFIXES if fmt == "text" else TEXT_SUFFIXES + RECORD_SUFFIXES
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DataError(path, f"folder holds no supported files ({', '.join(suffixes)})")
    return files


def sniff_encoding(path: Path) -> str:
    """'utf-16' or 'utf-8-sig' for a readable text file; a DataError for an empty, binary or UTF-32 one."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: its BOM is a prefix
            raise DataError(path, "is UTF-32; re-save the file as UTF-8 (or UTF-16 with BOM)")
        utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        if not utf16 and b"\x00" in head:
            raise DataError(path, "looks binary (NUL bytes); expected UTF-8 or UTF-16-with-BOM text")
        body = head[2:].replace(b"\x00", b"") if utf16 else head.removeprefix(codecs.BOM_UTF8)
        if not body.strip():
            rest = f.read(1 << 20)
            if not rest.replace(b"\x00", b"").strip() and len(rest) < (1 << 20):
                raise DataError(path, "file is empty")
    return "utf-16" if utf16 else "utf-8-sig"


def _decode_error(path: Path, line: int, exc: UnicodeDecodeError) -> DataError:
    return DataError(path, f"not valid UTF-8 ({exc.reason}); re-save the file as UTF-8 (or UTF-16 with BOM)", line)


def iter_lines(path: Path, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8/UTF-16 file; with `start`/`end`, the lines that begin in that byte range
    (UTF-8 only: `start` must be a line start, and `first_line` its line number). Lines end at "\n" only, the
    same rule `split_ranges` cuts by, so a file reads the same whole or in ranges."""
    if sniff_encoding(path) == "utf-16":
        with open(path, encoding="utf-16", newline="\n") as f:
            yield from enumerate(f, start=first_line)
        return
    # UTF-8 is read as bytes and decoded line by line, so a decoding error names its own line.
    with open(path, "rb") as f:
        f.seek(start)
        pos, lineno = start, first_line
        while end is None or pos < end:
            raw = f.readline()
            if not raw:
                return
            pos += len(raw)
            try:
                yield lineno, raw.decode("utf-8-sig" if pos == len(raw) else "utf-8")
            except UnicodeDecodeError as exc:
                raise _decode_error(path, lineno, exc) from None
            lineno += 1


def split_ranges(path: Path, target_bytes: int) -> list[tuple[int, int, int]]:
    """Cut a UTF-8 JSONL file into (start byte, end byte, first line) ranges of about `target_bytes`, at line
    boundaries, counting lines on the way so every range knows its absolute line numbers."""
    size = path.stat().st_size
    if size <= target_bytes or sniff_encoding(path) != "utf-8-sig" or _starts_with_array(path):
        return [(0, size, 1)]
    ranges: list[tuple[int, int, int]] = []
    start, start_line = 0, 1
    pos, line = 0, 1  # byte offset and line number at the start of the current block
    with open(path, "rb") as f:
        while block := f.read(_BLOCK_BYTES):
            searched = 0
            while (target := start + target_bytes - pos) < len(block):
                cut = block.find(b"\n", max(target, searched))
                if cut < 0:
                    break
                end_line = line + block.count(b"\n", 0, cut + 1)
                ranges.append((start, pos + cut + 1, start_line))
                start, start_line, searched = pos + cut + 1, end_line, cut + 1
            line += block.count(b"\n")
            pos += len(block)
    ranges.append((start, size, start_line))
    return [r for r in ranges if r[1] > r[0]]


def _text_record(value: dict, field: str) -> str:
    text = value.get(field)
    if not isinstance(text, str):
        shown = "missing" if text is None else f"of type {type(text).__name__}, not a string"
        raise _Malformed(f"field '{field}' is {shown}")
    return text


def record_from_value(value: object, fmt: str, text_field: str, source: str, line: int) -> Record:
    """Turn one parsed JSON value / Parquet row into a Record; raises _Malformed with the reason."""
    if not isinstance(value, dict):
        raise _Malformed(f"record must be a JSON object, got {type(value).__name__}")
    is_text = fmt in ("jsonl", "parquet", "text") or (
        fmt == "auto" and text_field in value and not any(k in value for k in _INSTRUCTION_KEYS)
    )
    if is_text:
        return Record(source, line, "text", text=_text_record(value, text_field), shape="text")
    instruction_fmt = fmt if fmt in ("alpaca", "sharegpt", "messages") else detect_format(value)
    return Record(source, line, "chat", messages=parse_record(value, instruction_fmt), shape=instruction_fmt)


def iter_file_records(
    path: Path, fmt: str, text_field: str = "text", byte_range: tuple[int, int, int] | None = None
) -> Iterator[Record | Malformed | None]:
    """Records of one file, a Malformed for each bad one, and None for each blank line (counted, not kept)."""
    source = str(path)
    suffix = path.suffix.lower()
    if fmt == "text" or (fmt == "auto" and suffix in TEXT_SUFFIXES):
        text = "".join(line for _, line in iter_lines(path))
        yield Record(source, 1, "text", text=text, shape="document")
        return
    if fmt == "parquet" or (fmt == "auto" and suffix == ".parquet"):
        yield from _iter_parquet(path, fmt, text_field)
        return
    if byte_range is None and _starts_with_array(path):
        yield from _iter_json_array(path, fmt, text_field)
        return
    start, end, first = byte_range or (0, None, 1)
    for line, raw in iter_lines(path, start, end, first):
        if not raw.strip():
            yield None
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield Malformed(source, line, f"invalid JSON ({exc.msg} at column {exc.colno})", raw.rstrip("\n"))
            continue
        try:
            yield record_from_value(value, fmt, text_field, source, line)
        except _Malformed as exc:
            yield Malformed(source, line, str(exc), value)


def _starts_with_array(path: Path) -> bool:
    encoding = sniff_encoding(path)
    with open(path, encoding=encoding, errors="replace") as f:
        return f.read(_SNIFF_BYTES).lstrip().startswith("[")


def _iter_json_array(path: Path, fmt: str, text_field: str) -> Iterator[Record | Malformed]:
    for item in iter_json_records(path):
        if isinstance(item, BadRecord):
            yield Malformed(str(path), item.line, item.reason, item.text)
            continue
        try:
            yield record_from_value(item.value, fmt, text_field, str(path), item.line)
        except _Malformed as exc:
            yield Malformed(str(path), item.line, str(exc), item.value)


def _iter_parquet(path: Path, fmt: str, text_field: str) -> Iterator[Record | Malformed]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            row += 1
            try:
                yield record_from_value(value, "auto" if fmt == "parquet" else fmt, text_field, str(path), row)
            except _Malformed as exc:
                yield Malformed(str(path), row, str(exc), value)
