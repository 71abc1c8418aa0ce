"""Pooling one before/after change over runs: per-run and pooled numbers, item alignment, errors, the CLI."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from domainsmith.cli_compare import compare
from domainsmith.evaluate.across_runs import PoolingError, pool_runs


def _items(correct: dict[str, bool]) -> list[dict]:
    return [{"id": i, "question": f"q {i}?", "prediction": "x", "correct": c} for i, c in correct.items()]


def _write_run(path, sft: dict, grpo: dict, probe=None, after_variant="grpo"):
    """A run dir with the eval.json keys pooling reads: comparisons (suite kinds), the variant labels, items."""
    items = {
        "base": {"qa": _items(dict.fromkeys(sft, False))},
        "sft": {"qa": _items(sft)},
        "grpo": {"qa": _items(grpo)},
    }
    comparisons = {"qa": {"kind": "qa"}, "ppl": {"kind": "perplexity"}}
    if probe is not None:
        for label, verdicts in zip(("base", "sft", "grpo"), probe, strict=True):
            items[label]["probe"] = _items(verdicts)
        comparisons["probe"] = {"kind": "qa"}
    path.mkdir(parents=True)
    report = {"before_variant": "base", "after_variant": after_variant, "comparisons": comparisons, "items": items}
    (path / "eval.json").write_text(json.dumps(report))
    return path


@pytest.fixture
def three_runs(tmp_path):
    # Items a..d. Run 1: +2 (a, b learned). Run 2: +1 - 1 (c learned, a forgotten). Run 3: +1 (a learned); in run 3
    # the after side lists the items in another order and lacks item d, so d is not paired there.
    r1 = _write_run(tmp_path / "r1", {"a": 0, "b": 0, "c": 0, "d": 1}, {"a": 1, "b": 1, "c": 0, "d": 1})
    r2 = _write_run(tmp_path / "r2", {"a": 1, "b": 0, "c": 0, "d": 0}, {"a": 0, "b": 0, "c": 1, "d": 0})
    r3 = _write_run(tmp_path / "r3", {"a": 0, "b": 1, "c": 0, "d": 0}, {"c": 0, "b": 1, "a": 1})
    return [r1, r2, r3]


def test_per_run_and_pooled_numbers(three_runs):
    result = pool_runs(three_runs, before="sft", after="grpo", n_resamples=500)
    assert (result["before"], result["after"]) == ("sft", "grpo")
    assert list(result["suites"]) == ["qa"]  # the perplexity suite is not pooled
    runs = result["suites"]["qa"]["runs"]
    assert [r["n"] for r in runs] == [4, 4, 3]
    assert [r["diff"]["diff"] for r in runs] == pytest.approx([0.5, 0.0, 1 / 3])
    assert [r["flips"] for r in runs] == [
        {"learned": 2, "forgotten": 0},
        {"learned": 1, "forgotten": 1},
        {"learned": 1, "forgotten": 0},
    ]
    pooled = result["suites"]["qa"]["pooled"]
    assert pooled["n"] == 11 and pooled["runs"] == 3 and (pooled["runs_up"], pooled["runs_down"]) == (2, 0)
    assert pooled["before"] == pytest.approx(3 / 11) and pooled["after"] == pytest.approx(6 / 11)
    assert pooled["flips"] == {"learned": 4, "forgotten": 1}
    assert pooled["pairs"]["diff"] == pytest.approx(3 / 11) == pooled["items"]["diff"]
    assert pooled["items"]["clusters"] == 4 and pooled["pairs"]["n"] == pooled["items"]["n"] == 11


def test_default_variants_are_the_runs_own_and_must_agree(three_runs, tmp_path):
    result = pool_runs(three_runs[:2], n_resamples=200)
    assert (result["before"], result["after"]) == ("base", "grpo")
    assert [r["before"] for r in result["suites"]["qa"]["runs"]] == [0.0, 0.0]
    odd = _write_run(tmp_path / "odd", {"a": 0}, {"a": 1}, after_variant="sft")
    with pytest.raises(PoolingError, match="after variants differ"):
        pool_runs([three_runs[0], odd])
    assert pool_runs([three_runs[0], odd], after="grpo", n_resamples=200)["after"] == "grpo"


def test_suite_choice_and_errors(three_runs, tmp_path):
    probe = ({"p": True, "q": True}, {"p": True, "q": False}, {"p": False, "q": False})
    with_probe = _write_run(tmp_path / "probe", {"a": 0}, {"a": 1}, probe=probe)
    assert list(pool_runs([with_probe], n_resamples=200)["suites"]) == ["qa", "probe"]
    assert list(pool_runs([with_probe, three_runs[0]], n_resamples=200)["suites"]) == ["qa"]  # in every run only
    only_probe = pool_runs([with_probe], suites=["probe"], before="sft", n_resamples=200)["suites"]["probe"]
    assert only_probe["pooled"]["pairs"]["diff"] == pytest.approx(-0.5)

    with pytest.raises(PoolingError, match="no eval.json"):
        pool_runs([tmp_path / "missing"])
    with pytest.raises(PoolingError, match="given twice"):
        pool_runs([three_runs[0], three_runs[0]])
    with pytest.raises(PoolingError, match="no variant 'dpo'.*base, grpo, sft"):
        pool_runs(three_runs, after="dpo")
    with pytest.raises(PoolingError, match="no per-item scores for suite 'probe'"):
        pool_runs([with_probe, three_runs[0]], suites=["probe"])
    with pytest.raises(PoolingError, match="no 'correct' verdict"):
        pool_runs([_write_ppl_items(tmp_path / "ppl")], suites=["ppl"])
    other = _write_run(tmp_path / "other", {"a": 0}, {"a": 1})
    report = json.loads((other / "eval.json").read_text())
    for label in report["items"]:
        report["items"][label]["qa"][0]["question"] = "another question?"
    (other / "eval.json").write_text(json.dumps(report))
    with pytest.raises(PoolingError, match="item 'a' asks 'q a\\?' in .* but 'another question\\?'"):
        pool_runs([three_runs[0], other])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "eval.json").write_text("{not json")
    with pytest.raises(PoolingError, match="not valid JSON"):
        pool_runs([tmp_path / "broken"])


def _write_ppl_items(path):
    run = _write_run(path, {"a": 0}, {"a": 1})
    report = json.loads((run / "eval.json").read_text())
    for label in report["items"]:
        report["items"][label]["ppl"] = [{"id": "doc1", "nll": 3.0}]
    (run / "eval.json").write_text(json.dumps(report))
    return run


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("compare")(compare)
    app.command("unused")(lambda: None)  # two commands, so Typer keeps the 'compare' sub-command name
    return app


def test_cli_table_json_and_user_error(three_runs, tmp_path):
    runner = CliRunner()
    args = ["compare", *map(str, three_runs), "--before", "sft", "--after", "grpo", "--resamples", "300"]
    table = runner.invoke(_app(), args, env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "qa: sft -> grpo" in table.stdout and "pooled over items" in table.stdout and "4/1" in table.stdout
    payload = json.loads(runner.invoke(_app(), [*args, "--json"]).stdout)
    assert payload["suites"]["qa"]["pooled"]["pairs"]["n_resamples"] == 300
    missing = runner.invoke(_app(), ["compare", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no eval.json" in missing.stderr and "Traceback" not in missing.output
