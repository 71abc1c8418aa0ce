"""Streaming readers: encodings, binary/empty files, blank lines, malformed records, JSON arrays, Parquet, documents,
folders, and byte-range splitting that keeps absolute line numbers."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from domainsmith.data import readers
from domainsmith.data.readers import (
    Malformed,
    Record,
    iter_file_records,
    iter_lines,
    sniff_encoding,
    source_files,
    split_ranges,
)
from domainsmith.errors import DataError

ROWS = [{"text": "first record"}, {"text": "二号记录：中文"}, {"text": "third – with a dash"}]


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _texts(items) -> list[tuple[int, str]]:
    return [(r.line, r.text) for r in items if isinstance(r, Record)]


# --- encodings ---------------------------------------------------------------------------------------------------


def test_utf8_with_bom_is_read_and_bom_dropped(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + _jsonl(ROWS).encode("utf-8"))
    assert sniff_encoding(path) == "utf-8-sig"
    expected = [(i, r["text"]) for i, r in enumerate(ROWS, start=1)]
    assert _texts(iter_file_records(path, "auto")) == expected
    # The byte-range path (used for large files) strips the BOM from the first line too.
    assert _texts(iter_file_records(path, "auto", byte_range=(0, path.stat().st_size, 1))) == expected


def test_utf8_without_bom(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(_jsonl(ROWS), encoding="utf-8")
    assert sniff_encoding(path) == "utf-8-sig"
    assert _texts(iter_file_records(path, "auto")) == [(i, r["text"]) for i, r in enumerate(ROWS, start=1)]


@pytest.mark.parametrize("codec, bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_utf16_with_bom(tmp_path, codec, bom):
    path = tmp_path / "wide.jsonl"
    path.write_bytes(bom + _jsonl(ROWS).encode(codec))
    assert sniff_encoding(path) == "utf-16"
    records = list(iter_file_records(path, "auto"))
    assert _texts(records) == [(i, r["text"]) for i, r in enumerate(ROWS, start=1)]
    assert all(r.shape == "text" and r.kind == "text" for r in records)
    # A UTF-16 file is never cut into byte ranges (a range could start mid-character).
    assert split_ranges(path, 4) == [(0, path.stat().st_size, 1)]


@pytest.mark.parametrize("codec, bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_utf16_document(tmp_path, codec, bom):
    path = tmp_path / "notes.md"
    text = "# 标题\n\nA paragraph in UTF-16.\n"
    path.write_bytes(bom + text.encode(codec))
    [record] = iter_file_records(path, "auto")
    assert record.text == text and record.shape == "document"


def _latin1_file(tmp_path: Path, name: str = "latin1.jsonl") -> Path:
    path = tmp_path / name
    lines = [json.dumps({"text": "one"}), json.dumps({"text": "two"}), '{"text": "café"}', json.dumps({"text": "4"})]
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    return path


def test_latin1_is_an_error_naming_the_line_in_a_byte_range(tmp_path):
    path = _latin1_file(tmp_path)
    with pytest.raises(DataError) as info:
        list(iter_lines(path, 0, path.stat().st_size, 1))
    assert info.value.line == 3
    assert "not valid UTF-8" in info.value.reason and "UTF-8" in str(info.value)
    assert str(info.value).startswith(f"{path}:3:")


def test_latin1_is_an_error_naming_the_line(tmp_path):
    path = _latin1_file(tmp_path)
    seen = []
    with pytest.raises(DataError) as info:
        for item in iter_file_records(path, "auto"):
            seen.append(item.line)
    assert info.value.line == 3, f"error names line {info.value.line}, the bad byte is on line 3"
    assert seen == [1, 2]


def test_latin1_document_names_the_line(tmp_path):
    # Same bug as above, through the .txt document path.
    path = tmp_path / "doc.txt"
    path.write_bytes("line one\nline two\nline three has caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        list(iter_file_records(path, "auto"))
    assert info.value.line == 3


def test_utf32_is_an_error(tmp_path):
    path = tmp_path / "wide32.jsonl"
    path.write_bytes(codecs.BOM_UTF32_LE + _jsonl(ROWS).encode("utf-32-le"))
    with pytest.raises(DataError):
        list(iter_file_records(path, "auto"))


def test_bare_carriage_return_reads_the_same_with_and_without_a_byte_range(tmp_path):
    path = tmp_path / "cr.jsonl"
    path.write_bytes(b'{"id": 1,\r"text": "a"}\n{"text": "b"}\n')
    ranged = list(iter_file_records(path, "auto", byte_range=(0, path.stat().st_size, 1)))
    assert [(r.line, r.text) for r in ranged] == [(1, "a"), (2, "b")]
    whole = list(iter_file_records(path, "auto"))
    assert [(r.line, getattr(r, "text", None)) for r in whole] == [(1, "a"), (2, "b")]


@pytest.mark.parametrize("content", [b"\x00\x01\x02\x03PK\x00\x00", b'{"text": "a"}\n\x00\x00\x00\n'])
def test_binary_file(tmp_path, content):
    path = tmp_path / "blob.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="binary") as info:
        sniff_encoding(path)
    assert info.value.path == path and info.value.line is None
    with pytest.raises(DataError, match="binary"):
        list(iter_file_records(path, "auto"))


@pytest.mark.parametrize("content", [b"", b"   \n\t\n\r\n", b" " * 20_000 + b"\n"])
def test_empty_and_whitespace_only(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        sniff_encoding(path)
    with pytest.raises(DataError, match="empty"):
        list(iter_file_records(path, "auto"))
    doc = tmp_path / "empty.md"
    doc.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        list(iter_file_records(doc, "auto"))


@pytest.mark.parametrize(
    "content",
    [codecs.BOM_UTF8, codecs.BOM_UTF8 + b" \n\n", codecs.BOM_UTF16_LE + " \n".encode("utf-16-le")],
    ids=["utf8-bom-only", "utf8-bom-whitespace", "utf16-bom-whitespace"],
)
def test_bom_only_file_is_empty(tmp_path, content):
    path = tmp_path / "bom_only.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        list(iter_file_records(path, "auto"))


# --- records -----------------------------------------------------------------------------------------------------


def test_blank_lines_yield_none(tmp_path):
    path = tmp_path / "blanks.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n\t\n', encoding="utf-8")
    items = list(iter_file_records(path, "auto"))
    assert [None if i is None else (i.line, i.text) for i in items] == [(1, "a"), None, None, (4, "b"), None]


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"text": "after"}\n', encoding="utf-8")
    first, bad, after = iter_file_records(path, "auto")
    assert isinstance(bad, Malformed)
    assert bad.line == 2 and bad.source == str(path)
    assert bad.reason.startswith("invalid JSON") and "column" in bad.reason
    assert bad.raw == '{"text": oops}'
    assert (first.line, after.line) == (1, 3)


def test_wrong_field_types(tmp_path):
    path = tmp_path / "types.jsonl"
    rows = [
        {"instruction": "Add two and two.", "output": 4},
        {"instruction": "Say hi.", "output": "hi"},
        {"text": 5},
        {"text": "fine"},
    ]
    path.write_text(_jsonl(rows) + "[1, 2]\n", encoding="utf-8")
    items = list(iter_file_records(path, "auto"))
    assert [type(i).__name__ for i in items] == ["Malformed", "Record", "Malformed", "Record", "Malformed"]
    alpaca = items[0]
    assert alpaca.line == 1 and "output" in alpaca.reason and "int" in alpaca.reason
    assert alpaca.raw == rows[0]
    assert items[1].shape == "alpaca" and items[1].messages[-1] == {"role": "assistant", "content": "hi"}
    assert items[2].line == 3 and "field 'text'" in items[2].reason and "int" in items[2].reason
    assert items[4].line == 5 and "JSON object" in items[4].reason


def test_explicit_formats(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        {"body": "custom field", "instruction": "ignored in jsonl mode"},
    ]
    path.write_text(_jsonl(rows), encoding="utf-8")
    auto = list(iter_file_records(path, "auto"))
    assert [getattr(i, "shape", None) for i in auto[:2]] == ["sharegpt", "messages"]
    assert auto[0].messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    # jsonl: every line is a text record in `text_field`, instruction keys or not.
    as_text = list(iter_file_records(path, "jsonl", text_field="body"))
    assert isinstance(as_text[0], Malformed) and isinstance(as_text[2], Record)
    assert as_text[2].text == "custom field" and as_text[2].kind == "text"


def test_json_array_file(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(
        '[\n  {"instruction": "Name a color.", "output": "Blue"},\n'
        '  {"instruction": "Count.", "output": 3},\n'
        '  {"text": "plain"}\n]\n',
        encoding="utf-8",
    )
    first, bad, text = iter_file_records(path, "auto")
    assert isinstance(first, Record) and first.line == 2 and first.shape == "alpaca"
    assert first.messages == [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue"}]
    assert isinstance(bad, Malformed) and bad.line == 3 and "output" in bad.reason
    assert isinstance(text, Record) and text.line == 4 and text.text == "plain"
    # An array file is never split into ranges.
    assert split_ranges(path, 8) == [(0, path.stat().st_size, 1)]


def test_json_array_broken_element_is_an_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": },\n  {"text": "c"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(iter_file_records(path, "auto"))
    assert info.value.line == 3 and "invalid JSON" in info.value.reason


def test_parquet_text_records(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["alpha doc", "第二篇文档", None], "id": [1, 2, 3]}), path)
    items = list(iter_file_records(path, "auto"))
    assert _texts(items) == [(1, "alpha doc"), (2, "第二篇文档")]
    assert all(i.shape == "text" for i in items[:2])
    assert isinstance(items[2], Malformed) and items[2].line == 3 and "missing" in items[2].reason
    # Explicit format and a custom text field.
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"body": ["x", "y"]}), other)
    assert _texts(iter_file_records(other, "parquet", text_field="body")) == [(1, "x"), (2, "y")]


def test_parquet_instruction_records(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "sft.parquet"
    table = pa.table(
        {"instruction": ["Translate 'cat'.", "Sum 1 and 2."], "input": ["to French", None], "output": ["chat", "3"]}
    )
    pq.write_table(table, path, row_group_size=1)
    first, second = iter_file_records(path, "auto")
    assert (first.line, first.kind, first.shape) == (1, "chat", "alpaca")
    assert first.messages == [
        {"role": "user", "content": "Translate 'cat'.\n\nto French"},
        {"role": "assistant", "content": "chat"},
    ]
    assert second.line == 2 and second.messages[0]["content"] == "Sum 1 and 2."
    assert [i.line for i in iter_file_records(path, "parquet")] == [1, 2]


def test_parquet_messages_records(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "chat.parquet"
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "你好"}]
    pq.write_table(pa.table({"messages": [conversation, [{"role": "user", "content": "no reply"}]]}), path)
    good, bad = iter_file_records(path, "auto")
    assert good.shape == "messages" and good.messages == conversation
    assert isinstance(bad, Malformed) and bad.line == 2 and "assistant" in bad.reason


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="Parquet"):
        list(iter_file_records(path, "auto"))


def test_markdown_document(tmp_path):
    path = tmp_path / "guide.md"
    text = "# Guide\r\n\r\nFirst paragraph.\n\n- a bullet\n- 第二点\n"
    path.write_bytes(text.encode("utf-8"))
    [record] = iter_file_records(path, "auto")
    assert record.text == text  # newlines kept as they are
    assert (record.line, record.kind, record.shape, record.source) == (1, "text", "document", str(path))
    assert record.joined() == text and record.payload() == {"text": text}
    # fmt=text reads any file as one document.
    jsonl = tmp_path / "as_doc.jsonl"
    jsonl.write_text('{"text": "x"}\n', encoding="utf-8")
    [doc] = iter_file_records(jsonl, "text")
    assert doc.shape == "document" and doc.text == '{"text": "x"}\n'


# --- folders -----------------------------------------------------------------------------------------------------


def test_folder_recursion(tmp_path):
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ("b.jsonl", "sub/a.md", "sub/deeper/c.json", "sub/deeper/d.TXT", "e.parquet", "sub/skip.csv", "x.py"):
        (root / rel).write_text("x\n", encoding="utf-8")
    found = [p.relative_to(root).as_posix() for p in source_files(root, "auto")]
    assert found == sorted(["b.jsonl", "e.parquet", "sub/a.md", "sub/deeper/c.json", "sub/deeper/d.TXT"])
    text_only = [p.relative_to(root).as_posix() for p in source_files(root, "text")]
    assert text_only == ["sub/a.md", "sub/deeper/d.TXT"]
    assert source_files(root / "b.jsonl", "auto") == [root / "b.jsonl"]


def test_folder_with_only_unsupported_files(tmp_path):
    root = tmp_path / "data"
    (root / "nested").mkdir(parents=True)
    (root / "table.csv").write_text("a,b\n", encoding="utf-8")
    (root / "nested" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="no supported files") as info:
        source_files(root, "auto")
    assert info.value.path == root
    (root / "rows.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no supported files"):
        source_files(root, "text")  # a text source does not read JSONL
    with pytest.raises(DataError, match="not found"):
        source_files(tmp_path / "missing", "auto")


# --- byte ranges -------------------------------------------------------------------------------------------------


def _range_file(tmp_path: Path, bom: bool, trailing_newline: bool) -> Path:
    lines = []
    for i in range(120):
        if i % 11 == 5:
            lines.append("")  # blank lines keep their numbers
        else:
            lines.append(json.dumps({"text": f"record {i} " + "漢字é" * (i % 7) + "x" * (i % 13)}, ensure_ascii=False))
    body = "\n".join(lines) + ("\n" if trailing_newline else "")
    path = tmp_path / "big.jsonl"
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + body.encode("utf-8"))
    return path


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 24])
@pytest.mark.parametrize("target", [1, 37, 500])
@pytest.mark.parametrize("bom, trailing_newline", [(False, True), (True, False)])
def test_split_ranges_reproduce_every_line(tmp_path, monkeypatch, block, target, bom, trailing_newline):
    monkeypatch.setattr(readers, "_BLOCK_BYTES", block)
    path = _range_file(tmp_path, bom, trailing_newline)
    data = path.read_bytes()
    expected = list(iter_lines(path))  # the whole file, read in one go
    assert expected[0][0] == 1 and len(expected) == 120

    ranges = split_ranges(path, target)
    assert len(ranges) > 1
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, end, _), (start, _, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start and data[start - 1 : start] == b"\n"  # contiguous, cut after a newline
    for start, _, first_line in ranges:
        assert first_line == data.count(b"\n", 0, start) + 1  # absolute line number of the range's first line

    got = [pair for start, end, first in ranges for pair in iter_lines(path, start, end, first)]
    assert got == expected

    records = [
        item
        for byte_range in ranges
        for item in iter_file_records(path, "auto", byte_range=byte_range)
        if item is not None
    ]
    whole = [item for item in iter_file_records(path, "auto") if item is not None]
    assert [(r.line, r.text) for r in records] == [(r.line, r.text) for r in whole]
    assert len(records) == 120 - sum(1 for _, line in expected if not line.strip())


def test_split_ranges_small_file_is_one_range(tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text(_jsonl(ROWS), encoding="utf-8")
    assert split_ranges(path, 1 << 20) == [(0, path.stat().st_size, 1)]
