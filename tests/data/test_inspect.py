"""`data inspect`: counts, shapes, problems with file:line, languages, token histogram; the CLI's JSON output and its
user errors (exit 2, one message, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from domainsmith.cli import app
from domainsmith.data.inspect_file import inspect_data_file

runner = CliRunner()

EN = "The river that runs through the old town has shaped its history for centuries, and the mills still stand."
ZH = "我的家乡是一个安静的小城，城外有一条清澈的河流。每到春天，河边的柳树发了新芽，孩子们在岸上放风筝。"
USER = "Could you please tell me what the weather is usually like in this town during the spring?"


def _data_file(tmp_path: Path) -> Path:
    rows = [
        json.dumps({"instruction": "Describe the town.", "output": EN}),  # 1: English
        json.dumps({"instruction": "介绍你的家乡。", "output": ZH}, ensure_ascii=False),  # 2: Chinese
        '{"instruction": "broken", "output": }',  # 3: malformed JSON
        "",  # 4: blank
        json.dumps({"instruction": "Say nothing.", "output": ""}),  # 5: empty alpaca output: malformed
        json.dumps({"messages": [{"role": "user", "content": USER}, {"role": "assistant", "content": ""}]}),  # 6
        json.dumps({"instruction": "describe the town", "output": EN.upper()}),  # 7: duplicate of 1 (normalized)
        json.dumps({"text": ""}),  # 8: empty text record
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_inspect_counts_shapes_problems_and_languages(tmp_path):
    path = _data_file(tmp_path)
    report = inspect_data_file(path, max_tokens=40)
    where = str(path)

    assert report["path"] == where and report["files"] == 1
    assert report["encodings"] == {"utf-8-sig": 1}
    assert report["records"] == 7  # every non-blank line, malformed ones included
    assert report["blank_lines"] == 1
    assert report["shapes"] == {"alpaca": 3, "messages": 1, "text": 1}
    assert report["kinds"] == {"chat": 4, "text": 1}

    problems = report["problems"]
    assert set(problems) == {"malformed", "empty", "too_long", "duplicate"}
    assert problems["malformed"]["count"] == 2
    malformed = {row["where"]: row["reason"] for row in problems["malformed"]["first"]}
    assert malformed[f"{where}:3"].startswith("invalid JSON")
    assert malformed[f"{where}:5"] == "field 'output' is empty"
    assert problems["empty"] == {
        "count": 2,
        "first": [
            {"where": f"{where}:6", "reason": "a turn with empty content"},
            {"where": f"{where}:8", "reason": "empty text"},
        ],
    }
    assert problems["duplicate"] == {
        "count": 1,
        "first": [{"where": f"{where}:7", "reason": f"same normalized text as {where}:1"}],
    }
    too_long = [row["where"] for row in problems["too_long"]["first"]]
    assert f"{where}:2" in too_long and problems["too_long"]["count"] == len(too_long)

    # Languages are shares of the parsed records (5): two English copies, the English chat, Chinese, one empty.
    assert report["languages"] == {"en": 0.6, "zh": 0.2, "too short to tell": 0.2}

    tokens = report["tokens"]
    assert tokens["counted_with"] == "estimate (no tokenizer)"
    assert sum(row["records"] for row in tokens["histogram"]) == 5
    assert tokens["max"] >= 40 and tokens["total"] > 0
    assert tokens["histogram"][0]["tokens"] == "0-15" and tokens["histogram"][-1]["tokens"] == ">=8192"


def test_inspect_with_a_tokenizer(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": "one two three"}) + "\n" + json.dumps({"text": "four five"}) + "\n")

    def tokenizer(texts, add_special_tokens):
        assert add_special_tokens is False
        return {"input_ids": [t.split() for t in texts]}

    report = inspect_data_file(path, tokenizer=tokenizer, max_tokens=2)
    assert report["tokens"]["counted_with"] == "model tokenizer"
    assert (report["tokens"]["total"], report["tokens"]["max"], report["tokens"]["mean"]) == (5, 3, 2.5)
    assert report["problems"]["too_long"]["first"] == [{"where": f"{path}:1", "reason": "3 tokens > 2"}]


def test_inspect_folder_lists_unreadable_files_as_problems(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "good.jsonl").write_text(json.dumps({"text": EN}) + "\n", encoding="utf-8")
    (root / "sub" / "notes.md").write_text(f"# Notes\n\n{EN}\n", encoding="utf-8")
    (root / "sub" / "blob.jsonl").write_bytes(b"\x00\x01binary\x00")
    report = inspect_data_file(root)
    assert report["files"] == 3 and report["records"] == 2
    assert report["shapes"] == {"text": 1, "document": 1}
    assert report["problems"]["malformed"]["count"] == 1
    [row] = report["problems"]["malformed"]["first"]
    assert row["where"] == str(root / "sub" / "blob.jsonl") and "binary" in row["reason"]


def test_cli_inspect_json(tmp_path):
    path = _data_file(tmp_path)
    result = runner.invoke(app, ["data", "inspect", str(path), "--json", "--max-tokens", "40"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == 7 and report["blank_lines"] == 1
    assert report["problems"]["duplicate"]["count"] == 1
    assert report["languages"]["zh"] == 0.2


def test_cli_inspect_table(tmp_path):
    path = _data_file(tmp_path)
    result = runner.invoke(app, ["data", "inspect", str(path)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())  # the summary line wraps at the test console's width
    assert "7 records" in flat and "1 blank lines" in flat and "malformed: 2" in flat
    assert f"{path}:3: invalid JSON" in result.stdout  # problem lines are never wrapped


def test_cli_inspect_binary_file_exits_2(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"PK\x03\x04\x00\x00\x00\x00binary payload\x00")
    result = runner.invoke(app, ["data", "inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert "binary" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.output


def test_cli_user_errors_exit_2_without_traceback(tmp_path):
    missing = runner.invoke(app, ["data", "inspect", str(tmp_path / "missing.jsonl"), "--json"])
    assert missing.exit_code == 2 and "file not found" in missing.stderr
    assert missing.stdout == "" and "Traceback" not in missing.output
    (tmp_path / "only.csv").write_text("a,b\n", encoding="utf-8")
    folder = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert folder.exit_code == 2 and "no supported files" in folder.stderr
    bad_format = runner.invoke(app, ["data", "inspect", str(tmp_path / "only.csv"), "--format", "csv"])
    assert bad_format.exit_code == 2 and "--format must be one of" in bad_format.stderr
