import codecs
import json

import pytest

from domainsmith.data.instructions import read_instructions
from domainsmith.errors import DataError


def test_alpaca_jsonl_with_input_system_and_history(tmp_path):
    rec = {"instruction": "Q2", "input": "ctx", "output": "A2", "system": "S", "history": [["Q1", "A1"]]}
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(rec) + "\n\n", encoding="utf-8")
    conv = read_instructions(path).conversations[0]
    assert conv.messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2\n\nctx"},
        {"role": "assistant", "content": "A2"},
    ]
    assert conv.line == 1


def test_sharegpt_json_array_keeps_line_numbers(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    convs = read_instructions(path).conversations
    assert [c.messages[-1]["content"] for c in convs] == ["hello", "y"]
    assert convs[0].line == 2 and convs[1].line > convs[0].line


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"instruction": "q", "output": ', "invalid JSON"),
        ('{"instruction": "q"}', "missing field 'output'"),
        ('{"instruction": "q", "output": 3}', "field 'output' must be a string"),
        ('{"conversations": [{"from": "gpt", "value": "a"}]}', "expected 'user'"),
        ('["not", "an", "object"]', "must be a JSON object"),
    ],
)
def test_malformed_record_names_file_line_and_reason(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "q", "output": "a"})
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_instructions(path)
    assert exc.value.line == 2
    assert str(path) in str(exc.value) and reason in str(exc.value)


def test_skip_mode_collects_rejects_with_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n{bad json}\n{"instruction": "q"}\n', encoding="utf-8")
    result = read_instructions(path, on_bad_record="skip")
    assert len(result.conversations) == 1
    assert [(r.line, "JSON" in r.reason or "output" in r.reason) for r in result.rejects] == [(2, True), (3, True)]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "file is empty"),
        (b"  \n\n", "file is empty"),
        (b"\x00\x01\x02binary\x00", "looks binary"),
        (b'{"instruction": "caf\xe9", "output": "a"}\n', "not valid UTF-8"),
    ],
)
def test_unreadable_files_get_their_own_message(tmp_path, content, reason):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason):
        read_instructions(path)


def test_utf8_bom_and_utf16_are_read(tmp_path):
    text = json.dumps({"instruction": "问题", "output": "答案"}, ensure_ascii=False) + "\n"
    for name, data in [("bom.jsonl", codecs.BOM_UTF8 + text.encode()), ("u16.jsonl", text.encode("utf-16"))]:
        path = tmp_path / name
        path.write_bytes(data)
        assert read_instructions(path).conversations[0].messages[-1]["content"] == "答案"


def test_missing_file_and_no_usable_records(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_instructions(tmp_path / "nope.jsonl")
    path = tmp_path / "only_bad.jsonl"
    path.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable records"):
        read_instructions(path, on_bad_record="skip")
