"""Preference data and the dpo stage: every accepted format, bad records with file and line, and a few DPO steps
on a tiny model (LoRA and full) with held-out scores and the KL guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainsmith.data.preferences import read_preferences
from domainsmith.errors import DataError


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_preference_format_reads_to_the_same_pair(tmp_path):
    rows = [
        {"system": "S", "instruction": "Q?", "input": "", "chosen": "good", "rejected": "bad"},
        {"system": "S", "conversations": [{"from": "human", "value": "Q?"}],
         "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
         "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]},
    ]  # fmt: skip
    pairs = read_preferences(_write(tmp_path / "p.jsonl", rows)).pairs
    assert len(pairs) == 3
    for pair in pairs:
        assert pair.prompt == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
        assert (pair.chosen, pair.rejected) == ("good", "bad")
    plain = read_preferences(_write(tmp_path / "s.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"}]))
    assert plain.pairs[0].prompt == [{"role": "user", "content": "Q?"}]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"instruction": "Q?", "chosen": "a"}, "missing field 'rejected'"),
        ({"instruction": "Q?", "chosen": "a", "rejected": "a"}, "the same reply"),
        ({"instruction": "Q?", "chosen": 3, "rejected": "b"}, "must be a string"),
        ({"prompt": "Q?", "chosen": {"from": "human", "value": "a"}, "rejected": "b"}, "assistant turn"),
        ({"output": "x", "chosen": "a", "rejected": "b"}, "unknown record shape"),
        ({"prompt": "Q?", "chosen": "a", "rejected": "b", "category": 3}, "'category' must be a string"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_pairs_name_file_line_and_reason(tmp_path, row, reason):
    good = {"prompt": "Q?", "chosen": "a", "rejected": "b"}
    path = _write(tmp_path / "p.jsonl", [good, row])
    with pytest.raises(DataError, match=reason) as info:
        read_preferences(path)
    assert "p.jsonl" in str(info.value) and ":2" in str(info.value)
    skipped = read_preferences(path, "skip")
    assert len(skipped.pairs) == 1 and skipped.rejects[0].line == 2


def test_accuracy_is_broken_down_by_the_pairs_categories(tmp_path):
    from domainsmith.data.preferences import accuracy_by_category

    rows = [{"prompt": f"Q{i}?", "chosen": "a", "rejected": "b", "category": c} for i, c in enumerate("xxy")]
    rows.append({"prompt": "Q3?", "chosen": "a", "rejected": "b"})  # no category: counted in no group
    pairs = read_preferences(_write(tmp_path / "p.jsonl", rows)).pairs
    assert [p.category for p in pairs] == ["x", "x", "y", None]
    assert accuracy_by_category(pairs, [True, False, True, False]) == {
        "x": {"pairs": 2, "accuracy": 0.5}, "y": {"pairs": 1, "accuracy": 1.0}}  # fmt: skip
    assert accuracy_by_category(pairs[3:], [True]) is None


def _project(tmp_path: Path, model: Path, stage: str) -> Path:
    rows = [
        {"instruction": f"What colour is item {i}?", "chosen": f"Item {i} is blue.", "rejected": f"Item {i} is red."}
        for i in range(24)
    ]
    _write(tmp_path / "pairs.jsonl", rows)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: dpo
model: {model}
run_dir: {tmp_path / "run"}
stages:
{stage}
""")
    return path


def _train(recipe_path: Path):
    from domainsmith.pipeline import train_recipe
    from domainsmith.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    train_recipe(recipe, log=lambda m: None, show_progress=False)
    return json.loads((recipe.out_dir / "dpo" / "manifest.json").read_text())["result"]["metrics"]


def test_lora_dpo_learns_the_preference_and_measures_drift(tmp_path, tiny_model_dir):
    stage = """  - type: dpo
    pairs: [pairs.jsonl]
    heldout_fraction: 0.25
    epochs: 3
    batch_size: 4
    learning_rate: 5.0e-3
    precision: fp32
    lora: {r: 8, alpha: 16}
    kl: {every: 2}"""
    metrics = _train(_project(tmp_path, tiny_model_dir, stage))
    assert metrics["pairs"] == {"train": 18, "heldout": 6, "rejected": 0}
    assert metrics["steps"] == 15 and metrics["train_loss"] == metrics["train_loss"]  # finite
    after = metrics["heldout_after"]
    # The held-out items share the training pattern (blue over red): DPO must rank them right.
    assert after["implicit_reward_accuracy"] >= 0.8 and after["implicit_reward_margin"] > 0
    assert after["loglik_accuracy"] >= metrics["heldout_before"]["loglik_accuracy"]
    kl = metrics["kl"]["measured"]
    assert [r["step"] for r in kl] == [2, 4, 6, 8, 10, 12, 14, 15] and kl[-1]["kl_per_token"] > kl[0]["kl_per_token"]
    assert (tmp_path / "run" / "dpo" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("loss, finetuning", [("orpo", "lora"), ("orpo", "full"), ("simpo", "lora")])
def test_reference_free_losses_learn_the_preference_and_are_still_measured_against_the_input_model(
    tmp_path, tiny_model_dir, loss, finetuning
):
    stage = f"""  - type: dpo
    loss_type: {loss}
    beta: {2.0 if loss == "simpo" else 0.1}
    finetuning: {finetuning}
    pairs: [pairs.jsonl]
    heldout_fraction: 0.25
    epochs: 3
    batch_size: 4
    learning_rate: {5.0e-3 if finetuning == "lora" else 1.0e-3}
    precision: fp32
    lora: {{r: 8, alpha: 16}}
    kl: {{every: 5}}"""
    metrics = _train(_project(tmp_path, tiny_model_dir, stage))
    assert metrics["loss_type"] == loss and metrics["steps"] == 15
    assert metrics["train_loss"] == metrics["train_loss"]  # finite
    before, after = metrics["heldout_before"], metrics["heldout_after"]
    # Both push the chosen reply's likelihood above the rejected one's: held-out items follow, measured as the
    # log-ratio to the stage's input model.
    assert after["implicit_reward_accuracy"] >= 0.8 and after["implicit_reward_margin"] > 0
    assert after["loglik_accuracy"] >= before["loglik_accuracy"]
    kl = metrics["kl"]["measured"]
    assert [r["step"] for r in kl] == [5, 10, 15] and kl[-1]["kl_per_token"] > 0
    artifact = "adapter/adapter_config.json" if finetuning == "lora" else "model/config.json"
    assert (tmp_path / "run" / "dpo" / artifact).is_file()


def test_kl_ceiling_stops_the_run_and_keeps_the_weights(tmp_path, tiny_model_dir):
    stage = """  - type: dpo
    pairs: [pairs.jsonl]
    finetuning: full
    epochs: 3
    batch_size: 4
    learning_rate: 1.0e-3
    precision: fp32
    kl: {every: 1, ceiling: 1.0e-6, action: stop}"""
    metrics = _train(_project(tmp_path, tiny_model_dir, stage))
    event = metrics["kl"]["event"]
    # The first step moves nothing (warmup starts the LR at 0); the first that does passes the ceiling and stops.
    assert event["action"] == "stop" and event["step"] == metrics["steps"] <= 2
    assert metrics["kl"]["measured"][-1]["kl_per_token"] > 1e-6
    assert (tmp_path / "run" / "dpo" / "model" / "config.json").is_file()


def _rm_project(tmp_path: Path, model: Path, rows: list[dict]) -> Path:
    _write(tmp_path / "pairs.jsonl", rows)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: rm
model: {model}
run_dir: {tmp_path / "run"}
stages:
  - type: rm
    pairs: [pairs.jsonl]
    heldout_fraction: 0.25
    epochs: 4
    batch_size: 4
    learning_rate: 3.0e-3
    precision: fp32
    finetuning: full
""")
    return path


def _train_rm(path: Path) -> dict:
    from domainsmith.pipeline import train_recipe
    from domainsmith.recipe import load_recipe

    recipe = load_recipe(path)
    variants = train_recipe(recipe, log=lambda m: None, show_progress=False)
    assert [v.name for v in variants] == ["base"]  # a reward model is not a chat variant
    assert (recipe.out_dir / "rm" / "model" / "config.json").is_file()
    return json.loads((recipe.out_dir / "rm" / "manifest.json").read_text())["result"]["metrics"]


def test_reward_model_learns_the_preference_without_a_length_alarm(tmp_path, tiny_model_dir):
    # Same length, opposite words: only the content tells chosen from rejected.
    rows = [{"instruction": f"Is item {i} safe?", "chosen": f"Item {i} is safe.", "rejected": f"Item {i} is toxic.",
             "category": ("even", "odd")[i % 2]} for i in range(32)]  # fmt: skip
    metrics = _train_rm(_rm_project(tmp_path, tiny_model_dir, rows))
    after = metrics["heldout_after"]
    assert after["accuracy"] >= 0.9 and metrics["train_loss"] == metrics["train_loss"]
    assert not metrics["length_alarm"]["fired"]
    groups = after["by_category"]
    assert set(groups) <= {"even", "odd"} and sum(g["pairs"] for g in groups.values()) == after["pairs"]
    assert sum(g["accuracy"] * g["pairs"] for g in groups.values()) == pytest.approx(after["accuracy"] * after["pairs"])


def test_length_alarm_fires_on_a_length_biased_reward(tmp_path, tiny_model_dir):
    # The chosen reply is always the longer one: the reward model learns length, and the alarm must say so.
    rows = [{"instruction": f"Describe item {i}.", "chosen": f"Item {i} is " + "very " * (3 + i % 5) + "good.",
             "rejected": f"Item {i} is good."} for i in range(32)]  # fmt: skip
    metrics = _train_rm(_rm_project(tmp_path, tiny_model_dir, rows))
    assert metrics["heldout_after"]["reward_length_correlation"] > 0.5 and metrics["length_alarm"]["fired"]
