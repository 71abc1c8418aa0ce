"""`kb build` and `kb search` through the Typer sub-app: JSON output, counts, exit code 2 for user errors."""

import json

from typer.testing import CliRunner

from domainsmith.cli_kb import kb_app

runner = CliRunner()


def test_build_then_search_json(docs, tmp_path):
    kb_dir = str(tmp_path / "kb")
    result = runner.invoke(kb_app, ["build", str(docs), "--kb", kb_dir, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == {"added": 2, "updated": 0, "removed": 0, "unchanged": 0}
    assert report["chunks"] == {"embedded": 4, "total": 4}

    result = runner.invoke(
        kb_app, ["search", "Brinavil dosage for renal impairment", "--kb", kb_dir, "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert {"source", "text", "score", "parent_text", "heading_path", "chunk_id"} <= set(hits[0])
    assert hits[0]["heading_path"] == "Brinavil > Dosage" and hits[0]["score"] >= hits[1]["score"]

    table = runner.invoke(kb_app, ["search", "Quenmyra", "--kb", kb_dir])
    assert table.exit_code == 0 and "hits for 'Quenmyra'" in table.stdout

    again = runner.invoke(kb_app, ["build", str(docs), "--kb", kb_dir])
    assert again.exit_code == 0 and "0 added, 0 updated, 0 removed, 2 unchanged documents" in again.stdout


def test_user_errors_exit_2_without_traceback(docs, tmp_path):
    result = runner.invoke(kb_app, ["search", "anything", "--kb", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a knowledge base" in result.stderr
    (docs / "empty.txt").write_text("", encoding="utf-8")
    result = runner.invoke(kb_app, ["build", str(docs), "--kb", str(tmp_path / "kb")])
    assert result.exit_code == 2 and "empty.txt: file is empty" in result.stderr
    result = runner.invoke(kb_app, ["build", str(docs), "--kb", str(tmp_path / "kb"), "--on-bad-record", "maybe"])
    assert result.exit_code == 2 and "--on-bad-record must be 'fail' or 'skip'" in result.stderr
    assert "Traceback" not in result.output

    result = runner.invoke(
        kb_app, ["build", str(docs), "--kb", str(tmp_path / "kb"), "--on-bad-record", "skip", "--json"]
    )
    assert result.exit_code == 0 and "skipped" in result.stderr
    assert json.loads(result.stdout)["rejected"][0]["reason"] == "file is empty"
