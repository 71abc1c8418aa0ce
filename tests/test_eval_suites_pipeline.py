"""End to end on the tiny model: QA, multiple-choice and perplexity suites in one eval, forgetting KL, paired
bootstrap CIs, the strategy matrix with training cost, and the leakage checks for MC questions and held-out text."""

import json

from conftest import write_jsonl
from typer.testing import CliRunner

from domainsmith.cli import app

runner = CliRunner()


def _add_suites(project, extra: str = "") -> str:
    write_jsonl(
        project / "mc.jsonl",
        [
            {"id": "m1", "question": "Zorvil's maker is", "A": "Halvorsen Pharma", "B": "Quilby Labs", "answer": "A"},
            {"id": "m2", "question": "The maker of Quenmyra is", "choices": ["Marrowgate Labs", "Quilby Labs"],
             "answer": 1},
        ],
    )  # fmt: skip
    (project / "held_out.md").write_text("Paris is the capital of France. Rome is the capital of Italy.\n")
    recipe = project / "recipe.yaml"
    recipe.write_text(
        recipe.read_text()
        + """    - kind: mc
      name: domain_mc
      path: mc.jsonl
      role: domain
    - kind: perplexity
      name: general_text
      path: held_out.md
      role: general
      max_length: 32
"""
        + extra
    )
    return str(recipe)


def test_eval_scores_every_suite_kind_with_cis_kl_and_costs(tiny_project, tiny_model_dir):
    recipe = _add_suites(tiny_project, "  bootstrap_resamples: 500\n")
    text = (tiny_project / "recipe.yaml").read_text()
    judged = text.replace("      path: qa.jsonl\n", f"      path: qa.jsonl\n      judge: {{model: {tiny_model_dir}}}\n")
    (tiny_project / "recipe.yaml").write_text(judged)
    result = runner.invoke(app, ["run", recipe, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_project / "runs" / "eval.json").read_text())

    base, sft = report["variants"]["base"]["suites"], report["variants"]["sft"]["suites"]
    assert base["domain_mc"]["kind"] == "mc" and base["domain_mc"]["n"] == 2
    assert 0 <= base["domain_mc"]["acc"] <= 1 and 0 <= base["domain_mc"]["acc_norm"] <= 1
    assert base["general_text"]["kind"] == "perplexity" and base["general_text"]["perplexity"] > 1
    assert base["domain_qa"]["kind"] == "qa" and 0 <= base["domain_qa"]["f1"] <= 1
    judge = base["domain_qa"]["judge"]  # opt-in: only the suite that asked for it
    assert 0 <= judge["accuracy"] <= 1 and 0 <= judge["agrees_with_match"] <= 1 and "judge" not in base["general_probe"]
    records = report["items"]["base"]["domain_qa"]
    assert all(0 < r["judge_p_yes"] < 1 and r["judge_correct"] == (r["judge_p_yes"] >= 0.5) for r in records)
    assert sft["general_text"]["tokens"] == base["general_text"]["tokens"]  # same text, same tokens

    cmp = report["comparisons"]
    for name in ("domain_qa", "general_probe", "domain_mc"):
        diff = cmp[name]["diff"]
        assert diff["n"] == cmp[name]["n"] and diff["diff"] == cmp[name]["after"] - cmp[name]["before"]
        lo, hi = diff["ci95"]
        assert lo <= diff["diff"] <= hi
    ppl = cmp["general_text"]
    assert ppl["metric"] == "perplexity" and ppl["higher_is_better"] is False
    assert ppl["diff"]["ci95"] is not None and "flips" not in ppl

    kl = report["forgetting"]["kl"]["sft"]
    assert kl["kl_per_token"] > 0 and kl["tokens"] > 0 and kl["suites"] == ["general_probe"]
    rows = {row["strategy"]: row for row in report["strategies"]}
    assert rows["base"]["train_seconds"] == 0 and rows["base"]["train_tokens"] == 0
    assert rows["sft"]["train_seconds"] > 0 and rows["sft"]["train_tokens"] > 0
    assert rows["sft"]["kl_per_token"] == kl["kl_per_token"] and "kl_per_token" not in rows["base"]
    assert {"domain_mc", "general_text"} <= set(rows["sft"])

    summary = json.loads(result.stdout)
    assert summary["domain_mc"]["diff"]["ci95"] == cmp["domain_mc"]["diff"]["ci95"]
    assert summary["forgetting_kl"] == {"sft": kl["kl_per_token"]}

    again = runner.invoke(app, ["eval", recipe, "--json"])
    assert again.exit_code == 0, again.output
    assert "forgetting KL 'sft': up to date" in again.stderr and "eval 'sft': up to date" in again.stderr


def test_mc_question_that_is_a_training_prompt_is_refused(tiny_project):
    recipe = _add_suites(tiny_project)
    write_jsonl(tiny_project / "mc.jsonl", [{"question": "Who makes Zorvil?", "A": "x", "B": "y", "answer": "A"}])
    result = runner.invoke(app, ["train", recipe])
    assert result.exit_code == 2
    assert "suite 'domain_mc'" in result.stderr and "train.jsonl:1" in result.stderr


def test_held_out_text_seen_in_training_is_refused(tiny_project):
    recipe = _add_suites(tiny_project)
    seen = "Zorvil is a small white tablet made by Halvorsen Pharma in the north of the country since last year"
    (tiny_project / "held_out.md").write_text(f"Some other words first. {seen}.\n")
    with (tiny_project / "train.jsonl").open("a") as f:
        f.write(json.dumps({"instruction": "Describe Zorvil.", "input": "", "output": seen + "."}) + "\n")
    result = runner.invoke(app, ["train", recipe])
    assert result.exit_code == 2
    assert "suite 'general_text'" in result.stderr and "train.jsonl:7" in result.stderr


def test_eval_question_among_null_space_texts_is_refused(tiny_project):
    # Texts that only shape the null space still decide what the adapters leave alone: no eval item among them.
    write_jsonl(tiny_project / "general.jsonl", [{"instruction": "Name a colour.", "output": "Blue."}])
    write_jsonl(tiny_project / "texts.jsonl", [{"text": "A river."}, {"text": "What is the capital of France?"}])
    recipe = tiny_project / "recipe.yaml"
    general = "    role: domain\n  - path: general.jsonl\n    role: general\nstages:"
    text = recipe.read_text().replace("    role: domain\nstages:", general)
    null_space = "    general_null_space: 0.99\n    null_space_texts: [texts.jsonl]\n"
    text = text.replace("    precision: fp32\n", "    precision: fp32\n" + null_space)
    recipe.write_text(text)
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 2
    assert "suite 'general_probe'" in result.stderr and "texts.jsonl:2" in result.stderr
