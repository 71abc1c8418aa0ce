"""write_report on a run with every artefact, on minimal and partial runs, and through the CLI function."""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from domainsmith.cli_report import report
from domainsmith.report import SECTION_IDS, ReportError, write_report

from .conftest import EVIL_SOURCE, EVIL_STRATEGY, EVIL_SUITE, build_full_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTE = 'class="not-measured"'


def sections_of(html: str) -> dict[str, str]:
    """Section id -> its inner HTML (sections are never nested)."""
    return {m[2]: m[3] for m in re.finditer(r'<section class="([^"]*)" id="([^"]*)">(.*?)</section>', html, re.S)}


def test_full_run_every_section_has_content(full_report):
    result, html = full_report
    sections = sections_of(html)
    assert list(sections) == SECTION_IDS
    assert result.sections == {s: True for s in SECTION_IDS}
    assert result.sections_without_data == []
    for sid, body in sections.items():
        assert NOTE not in body, f"section {sid} says not measured"
        assert "<table" in body, sid
    assert "[+0.350, +0.650]" in sections["summary"] and "&lt;0.001" in sections["summary"]
    assert "0.950 (k=5)" in sections["retrieval"] and "gap (rag_gold − rag)" in sections["retrieval"]
    assert "0.0421" in sections["forgetting"] and "lower is better" in sections["summary"]
    assert "Spike-guard events" in sections["loss"] and "rollback" in sections["loss"]
    assert "75.0%" in sections["mix"] and "domainsmith_local_mc" in sections["suites"]
    assert "0.4" in sections["mixture_search"]
    assert "93.0%" in sections["preference"] and "40.0% -&gt; 90.0%" in sections["preference"]
    assert "50.0% -&gt; 96.0%" in sections["preference"]  # the reward model's pairwise accuracy
    assert "18.0% -&gt; 84.0%" in sections["preference"]  # ... and that of one pair category
    assert "85.0% -&gt; 95.0%" in sections["preference"] and "3 / 1" in sections["preference"]  # grpo
    assert "0.25 -&gt; 0.75" in sections["preference"] and "contains 0.07" in sections["preference"]
    assert "5.4 min" in sections["strategies"]  # the sft row's train_seconds
    # The half-written last line of loss.jsonl is skipped and reported, not fatal.
    assert any("unreadable line" in w for w in result.warnings)


def test_plots_are_embedded_pngs_and_written_beside(full_report):
    result, html = full_report
    embedded = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]
    assert len(embedded) == len(result.pngs) == 9
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5000 for png in embedded)
    assert {p.name for p in result.pngs} >= {
        "strategies-tradeoff.png",
        "loss-sft.png",
        "mixture-search.png",
        "drift-and-reward.png",
    }
    assert all(p.parent == result.html.parent / "report" for p in result.pngs)
    assert sorted(p.read_bytes() for p in result.pngs) == sorted(embedded)


def test_user_strings_are_escaped_and_nothing_is_loaded(full_report):
    _, html = full_report
    assert "<script" not in html.lower() and "<img src=x" not in html and "<b>bold" not in html
    for name in (EVIL_STRATEGY, EVIL_SUITE, EVIL_SOURCE):
        assert escape(name) in html, name
    # Offline: every src/href is a data URI or an in-page anchor.
    assert all(v.startswith(("data:", "#")) for v in re.findall(r'(?:src|href)="([^"]*)"', html))
    assert "Content-Security-Policy" in html


# An older eval.json: no diff CIs, no kind, no forgetting, strategies with scores only; NaN counts as missing.
OLDER_EVAL = {
    "before_variant": "base",
    "after_variant": "sft",
    "comparisons": {
        "dom": {
            "before": 0.0,
            "after": 0.5,
            "n": 4,
            "role": "domain",
            "flips": {"n": 4, "learned": 2, "forgotten": 0},
        },
        "gen": {"before": 1.0, "after": float("nan"), "n": 2, "role": "general"},
    },
    "strategies": [{"strategy": "base", "dom": 0.0, "gen": 1.0}, {"strategy": "sft", "dom": 0.5}],
}


def _minimal_eval(run, data: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "eval.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    "data, with_data",
    [
        ({}, []),
        (
            OLDER_EVAL,
            ["summary", "strategies", "forgetting"],
        ),
    ],
)
def test_minimal_eval_json_renders_every_section(tmp_path, data, with_data):
    run = tmp_path / "run"
    _minimal_eval(run, data)
    result = write_report(run)
    sections = sections_of(result.html.read_text(encoding="utf-8"))
    assert list(sections) == SECTION_IDS
    assert result.sections_with_data == with_data
    for sid, body in sections.items():
        assert (NOTE in body) == (sid not in with_data), sid
    if with_data:
        assert "no confidence intervals" in sections["summary"]
        assert "domainsmith eval RECIPE --modes closed,rag,rag_gold" in sections["retrieval"]


def test_missing_or_broken_eval_json_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match=r"eval\.json: not found.*domainsmith run.*domainsmith eval"):
        write_report(tmp_path)
    (tmp_path / "eval.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="not valid JSON"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="not a directory"):
        write_report(tmp_path / "nope")


def test_rewrite_removes_stale_plots_and_honours_out(tmp_path):
    run = build_full_run(tmp_path / "run")
    first = write_report(run)
    stray = first.html.parent / "report" / "notes.png"
    stray.write_bytes(b"mine")
    (run / "sft" / "loss.jsonl").unlink()
    (run / "mix_search.json").unlink()
    second = write_report(run)
    names = {p.name for p in (run / "report").iterdir()}
    assert "loss-sft.png" not in names and "mixture-search.png" not in names
    assert "notes.png" in names  # not one of ours: left alone
    assert second.sections_without_data == ["loss", "mixture_search"]


def test_out_path_puts_pngs_beside_it(tmp_path):
    run = tmp_path / "run"
    _minimal_eval(run, OLDER_EVAL)
    result = write_report(run, tmp_path / "out" / "weekly.html")
    assert result.html.is_file() and result.pngs
    assert all(p.parent == tmp_path / "out" / "weekly" and p.is_file() for p in result.pngs)
    assert not (run / "report.html").exists() and not list((tmp_path / "out").glob(".*.tmp"))


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(report)
    app.command("unused")(lambda: None)  # two commands, so Typer keeps the 'report' sub-command name
    return app


def test_cli_json_and_error(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    _minimal_eval(run, OLDER_EVAL)
    result = runner.invoke(_app(), ["report", str(run), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["html"] == str(run / "report.html") and all(Path(p).is_file() for p in payload["pngs"])
    assert payload["sections"] == {s: s in ("summary", "strategies", "forgetting") for s in SECTION_IDS}

    plain = runner.invoke(_app(), ["report", str(run)])
    assert (
        plain.exit_code == 0 and "report.html" in plain.stdout and "not measured in this run: retrieval" in plain.stdout
    )

    missing = runner.invoke(_app(), ["report", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    (tmp_path / "empty").mkdir()
    missing = runner.invoke(_app(), ["report", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "domainsmith run" in missing.stderr


@pytest.mark.parametrize(
    "data",
    [
        {"variants": [], "comparisons": "x", "strategies": {"a": 3}, "forgetting": [1], "harness": None},
        {
            "variants": {"base": None, "x+rag": {"suites": {"q": None, "r": {"retrieval": {"recall@3": "a"}}}}},
            "comparisons": {"q": {"diff": {"diff": "1", "ci95": [1]}, "flips": {"learned": None}}},
            "strategies": [None, {"strategy": 5}, {"strategy": "s", "q": True, "q_flips": 3}],
            "forgetting": {"kl": {"a": 1}},
            "train_eval_overlap": "nope",
        },
    ],
)
def test_wrong_types_in_any_artefact_never_crash(tmp_path, data):
    run = tmp_path / "run"
    _minimal_eval(run, data)
    (run / "summary.json").write_text("[1, 2]", encoding="utf-8")
    (run / "s1").mkdir()
    (run / "s1" / "loss.jsonl").write_text('[1]\n{"step": "a", "loss": 1}\n{"step": 1}\n', encoding="utf-8")
    (run / "s1" / "manifest.json").write_text('{"result": {"metrics": {"data": {"sources": {"a": 3}}}}}', "utf-8")
    (run / "data").mkdir()
    (run / "data" / "stats.json").write_text('{"roles": [1, {"name": "domain"}], "sources": 7}', encoding="utf-8")
    (run / "mix_search.json").write_text('{"points": [{"ratio": null}], "curves": {"ratio": "x"}}', "utf-8")
    result = write_report(run)
    assert list(sections_of(result.html.read_text(encoding="utf-8"))) == SECTION_IDS
    assert {"loss", "mix", "mixture_search"} <= set(result.sections_without_data)


def test_tradeoff_averages_the_same_suites_for_every_strategy(tmp_path):
    # Closed book adds a multiple-choice suite that RAG rows lack; averaging it into the closed row alone would
    # make a strong closed-book model look weaker than its RAG row.
    suites = {
        "domain_qa": {"kind": "qa", "role": "domain", "accuracy": 0.9, "n": 10},
        "domain_mc": {"kind": "mc", "role": "domain", "acc": 0.1, "n": 10},
        "general_probe": {"kind": "qa", "role": "general", "accuracy": 0.8, "n": 10},
    }
    eval_json = {
        "variants": {
            "sft": {"mode": "closed", "suites": suites},
            "sft+rag": {"mode": "rag", "suites": {k: v for k, v in suites.items() if k != "domain_mc"}},
        },
        "strategies": [
            {"strategy": "sft", "variant": "sft", "mode": "closed", "domain_qa": 0.9, "domain_mc": 0.1,
             "general_probe": 0.8, "train_seconds": 1.0, "train_tokens": 10},
            {"strategy": "sft+rag", "variant": "sft", "mode": "rag", "domain_qa": 0.8, "general_probe": 0.8,
             "train_seconds": 1.0, "train_tokens": 10},
        ],
    }  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(eval_json), encoding="utf-8")
    html = write_report(run).html.read_text(encoding="utf-8")
    assert re.search(r"Highest domain score: <code>sft</code> \(0\.9", html), "the closed row must be judged on QA only"
