"""End to end on the tiny model through the CLI: run, reuse, eval, leakage refusal, bad-input exit codes."""

import json

from typer.testing import CliRunner

from domainsmith.cli import app

runner = CliRunner()


def test_run_writes_summary_then_reuses_everything(tiny_project):
    recipe = str(tiny_project / "recipe.yaml")
    first = runner.invoke(app, ["run", recipe, "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    for suite in ("domain_qa", "general_probe"):
        row = summary[suite]
        assert set(row) >= {"before", "after", "n"} and 0 <= row["before"] <= 1 and 0 <= row["after"] <= 1
    assert summary["domain_qa"]["n"] == 3
    saved = json.loads((tiny_project / "runs" / "summary.json").read_text())
    assert saved["domain_qa"] == summary["domain_qa"]
    assert (tiny_project / "runs" / "sft" / "adapter" / "adapter_config.json").is_file()
    assert (tiny_project / "runs" / "sft" / "loss.jsonl").read_text().count("\n") >= 3

    second = runner.invoke(app, ["run", recipe, "--json"])
    assert second.exit_code == 0
    assert "stage 'sft': up to date, reusing" in second.stderr
    assert "eval 'base': up to date" in second.stderr and "eval 'sft': up to date" in second.stderr
    assert json.loads(second.stdout)["domain_qa"] == summary["domain_qa"]


def test_changed_recipe_retrains_and_eval_covers_trained_stages(tiny_project):
    recipe_path = tiny_project / "recipe.yaml"
    assert runner.invoke(app, ["train", str(recipe_path), "--json"]).exit_code == 0
    recipe_path.write_text(recipe_path.read_text().replace("epochs: 2", "epochs: 1"))
    result = runner.invoke(app, ["eval", str(recipe_path), "--json"])
    assert result.exit_code == 0, result.output
    assert "not trained with the current recipe" in result.stderr
    assert list(json.loads(result.stdout)["variants"]) == ["base"]
    result = runner.invoke(app, ["train", str(recipe_path), "--json"])
    assert "stage 'sft': training" in result.stderr
    assert json.loads(result.stdout)["stages"]["sft"]["steps"] == 3


def test_eval_item_in_training_data_is_refused(tiny_project):
    qa = tiny_project / "qa.jsonl"
    qa.write_text(qa.read_text() + json.dumps({"question": "Who makes Zorvil?", "answer": "x"}) + "\n")
    result = runner.invoke(app, ["train", str(tiny_project / "recipe.yaml")])
    assert result.exit_code == 2
    assert "also appear in training data" in result.stderr and "train.jsonl:1" in result.stderr


def test_malformed_training_file_stops_before_training(tiny_project):
    train = tiny_project / "train.jsonl"
    train.write_text(train.read_text() + '{"instruction": "q", "output": 5}\n')
    result = runner.invoke(app, ["train", str(tiny_project / "recipe.yaml")])
    assert result.exit_code == 2
    assert "train.jsonl:7" in result.stderr and "must be a string" in result.stderr
    assert "Traceback" not in result.output
    assert not (tiny_project / "runs" / "sft").exists()


def test_skip_mode_trains_and_writes_rejects(tiny_project):
    train = tiny_project / "train.jsonl"
    train.write_text(train.read_text() + "{broken\n")
    result = runner.invoke(app, ["train", str(tiny_project / "recipe.yaml"), "--on-bad-record", "skip", "--json"])
    assert result.exit_code == 0, result.output
    rejects = (tiny_project / "runs" / "sft" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and json.loads(rejects[0])["line"] == 7


def test_bad_recipe_exits_2_with_hint(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nstagez: []\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "did you mean 'stages'" in result.stderr


def test_ask_json_with_adapter(tiny_project, tiny_model_dir):
    assert runner.invoke(app, ["train", str(tiny_project / "recipe.yaml"), "--json"]).exit_code == 0
    adapter = tiny_project / "runs" / "sft" / "adapter"
    result = runner.invoke(
        app,
        [
            "ask",
            "Who makes Zorvil?",
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(adapter),
            "--max-new-tokens",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["question"] == "Who makes Zorvil?" and isinstance(out["answer"], str)


def test_models_list_json():
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["aliases"][0]["alias"] == "smollm2-135m-instruct"


def test_chat_streams_replies_and_keeps_history(tiny_model_dir):
    result = runner.invoke(
        app, ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"], input="hello\n/reset\nagain\n\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("bot> ") == 2


def test_bad_data_is_caught_before_any_stage_dir_even_without_eval_suites(tiny_project):
    recipe = tiny_project / "recipe.yaml"
    recipe.write_text(recipe.read_text().split("eval:")[0])  # no eval suites: no leakage pass reads the data
    train = tiny_project / "train.jsonl"
    train.write_text(train.read_text() + "[1, 2]\n")
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 2 and "train.jsonl:7" in result.stderr and "must be a JSON object" in result.stderr
    assert not (tiny_project / "runs").exists()


def test_another_build_of_the_code_warns_for_stages_and_rescores_evals(tiny_project, monkeypatch):
    from domainsmith.code_version import results_code_version

    recipe = str(tiny_project / "recipe.yaml")
    assert runner.invoke(app, ["run", recipe, "--json"]).exit_code == 0
    manifest_path = tiny_project / "runs" / "sft" / "manifest.json"
    assert json.loads(manifest_path.read_text())["code"] == results_code_version()
    for module in ("pipeline", "evaluation"):
        monkeypatch.setattr(f"domainsmith.{module}.results_code_version", lambda: "another build")

    again = runner.invoke(app, ["run", recipe, "--json"])
    assert again.exit_code == 0, again.output
    # The adapter is kept (retraining is the user's call), with a warning; scores are recomputed.
    assert "stage 'sft': up to date, reusing" in again.stderr and "stage 'sft': training" not in again.stderr
    assert f"trained by code {results_code_version()}" in again.stderr and "delete" in again.stderr
    assert "eval 'base': up to date" not in again.stderr and "eval 'sft': up to date" not in again.stderr

    # A stage that died under one build and is resumed by another says so, and keeps the build that started it.
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="running", code="0123456789abcdef")
    manifest_path.write_text(json.dumps(manifest))
    resumed = runner.invoke(app, ["train", recipe, "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert "stage 'sft': resuming" in resumed.stderr and "started by code 0123456789abcdef" in resumed.stderr
    assert json.loads(manifest_path.read_text())["code"] == "0123456789abcdef"
