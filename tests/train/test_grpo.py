"""Prompts with gold answers, the rewards, and the grpo stage on a tiny model: it trains, measures held-out
accuracy, rewards and drift, fires the length alarm on a length-biased reward, stops at the KL ceiling,
and takes a trained rm stage as its reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainsmith.data.verifiable import read_verifiable
from domainsmith.errors import DataError, RecipeError
from domainsmith.recipe import parse_recipe


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_prompt_format_reads_to_the_same_prompt_and_gold(tmp_path):
    rows = [
        {"system": "S", "question": "Q?", "answer": "A", "aliases": ["B"]},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}], "answer": "A",
         "aliases": ["B"]},
        {"system": "S", "instruction": "Q?", "input": "", "output": "A", "aliases": ["B"]},
        {"system": "S", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}],
         "aliases": ["B"]},
    ]  # fmt: skip
    prompts = read_verifiable(_write(tmp_path / "p.jsonl", rows)).prompts
    assert len(prompts) == 4
    for p in prompts:
        assert p.prompt == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
        assert p.answers == ["A", "B"]
    plain = read_verifiable(_write(tmp_path / "s.jsonl", [{"prompt": "Q?", "answer": "A"}])).prompts[0]
    assert plain.with_system("T").prompt == [{"role": "system", "content": "T"}, {"role": "user", "content": "Q?"}]
    assert prompts[0].with_system("T").prompt[0]["content"] == "S"  # a prompt's own system prompt wins


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"question": "Q?"}, "missing field 'answer'"),
        ({"question": "Q?", "answer": " "}, "'answer' is empty"),
        ({"question": "Q?", "answer": "A", "aliases": "B"}, "'aliases' must be a list"),
        ({"prompt": [{"role": "assistant", "content": "x"}], "answer": "A"}, "expected 'user'"),
        ({"text": "Q?"}, "a prompt needs question/answer"),
        ("[1, 2", "invalid JSON"),
    ],
)
def test_bad_prompts_name_file_line_and_reason(tmp_path, row, reason):
    path = _write(tmp_path / "p.jsonl", [{"question": "Q?", "answer": "A"}, row])
    with pytest.raises(DataError, match=reason) as info:
        read_verifiable(path)
    assert "p.jsonl" in str(info.value) and ":2" in str(info.value)
    skipped = read_verifiable(path, "skip")
    assert len(skipped.prompts) == 1 and skipped.rejects[0].line == 2


@pytest.mark.parametrize(
    "reward, message",
    [
        ({"kind": "regex"}, "needs pattern"),
        ({"kind": "contains", "pattern": "x"}, "takes no pattern"),
        ({"kind": "function", "function": "rewards:score"}, "FILE.py:NAME"),
        ({"kind": "model", "model": "later"}, "not an rm stage before it"),
        ({"kind": "model", "model": "sft"}, "not an rm stage before it"),
    ],
)
def test_reward_settings_are_checked(reward, message):
    recipe = {
        "name": "r",
        "stages": [
            {"type": "sft", "name": "sft"},
            {"type": "grpo", "prompts": ["p.jsonl"], "rewards": [reward]},
            {"type": "rm", "name": "later", "pairs": ["pairs.jsonl"]},
        ],
    }
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe)


def test_rule_rewards_score_against_every_gold_answer(tmp_path):
    from domainsmith.recipe import GRPOStage, RewardSettings
    from domainsmith.train.rewards import RewardLog, build_rewards

    (tmp_path / "mine.py").write_text("def score(completions, answers, prompts):\n"
                                      "    return [float(len(c)) for c in completions]\n")  # fmt: skip
    recipe = parse_recipe({"name": "r"}, tmp_path / "recipe.yaml")
    kinds = [
        RewardSettings(kind="exact_match"),
        RewardSettings(kind="contains"),
        RewardSettings(kind="regex", pattern=r"\(Source: \w+\.md\)"),
        RewardSettings(kind="regex", pattern=r"^{answer}"),
        RewardSettings(kind="function", function="mine.py:score"),
    ]
    stage = GRPOStage(type="grpo", prompts=[Path("p.jsonl")], rewards=kinds)
    log = RewardLog(tmp_path / "rewards.jsonl")
    rewards = build_rewards(recipe, stage, log, bf16=False)
    assert [r.__name__ for r in rewards] == ["exact_match", "contains", "regex_2", "regex_3", "function"]
    completions = [
        [{"role": "assistant", "content": t}]
        for t in ["Halvorsen Pharma", "It is made by the Halvorsen pharma.", "Quilby (Source: x.md)", "H. P. Ltd"]
    ]
    answers = [["Halvorsen Pharma", "H. P."]] * 4
    ids = [[1] * n for n in (2, 9, 6, 4)]
    got = [r(prompts=[[]] * 4, completions=completions, completion_ids=ids, answers=answers) for r in rewards]
    assert got[0] == [1.0, 0.0, 0.0, 0.0]  # the whole reply must be an answer
    assert got[1] == [1.0, 1.0, 0.0, 1.0]  # normalized, whole words, aliases count
    assert got[2] == [0.0, 0.0, 1.0, 0.0]
    assert got[3] == [1.0, 0.0, 0.0, 1.0]  # {answer} is each gold answer, matched literally
    assert got[4] == [16.0, 35.0, 21.0, 9.0]
    correlations = log.length_correlations()
    assert correlations["function"]["completions"] == 4 and correlations["function"]["length_correlation"] > 0.99


_TWO_RANKS_SCORING = """
import sys
from pathlib import Path
from types import SimpleNamespace

from accelerate import PartialState

from domainsmith.train.rewards import RewardLog, _Reward

state = PartialState(cpu=True)
rank = state.process_index
log = RewardLog(Path(sys.argv[1]))
# Rank r's completions are r + 1 characters long and score r: within one rank the reward is constant.
reward = _Reward("by_rank", lambda texts, answers, prompts: [float(rank)] * len(texts), log)
for step in range(2):
    trainer_state = SimpleNamespace(global_step=step, is_world_process_zero=state.is_main_process)
    completions = [[{"role": "assistant", "content": "x" * (rank + 1)}]] * 3
    reward(prompts=[[]] * 3, completions=completions, completion_ids=[[1]] * 3, answers=[["x"]] * 3,
           trainer_state=trainer_state)
# Leave together and close the group: a rank exiting while gloo still holds the group aborts the other.
state.wait_for_everyone()
state.destroy_process_group()
"""


def test_the_reward_log_covers_every_rank_under_two_processes(tmp_path):
    from domainsmith.train.rewards import RewardLog

    script = _write(tmp_path / "score.py", [_TWO_RANKS_SCORING])
    from conftest import launch_two_processes

    result = launch_two_processes([script, tmp_path / "rewards.jsonl"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # written once per batch, by rank 0
    assert all(sorted(r["length"]) == [1, 1, 1, 2, 2, 2] for r in rows)
    correlation = RewardLog(tmp_path / "rewards.jsonl").length_correlations()["by_rank"]
    # Rank 0's samples alone have a constant reward (no correlation); both ranks' together correlate fully.
    assert correlation["completions"] == 12 and correlation["length_correlation"] > 0.99


def _project(tmp_path: Path, model: Path, stage: str, extra_stages: str = "") -> Path:
    rows = [{"question": f"Name item {i}.", "answer": f"item {i}"} for i in range(12)]
    _write(tmp_path / "prompts.jsonl", rows)
    (tmp_path / "shaping.py").write_text(
        "def letter_e(completions, answers, prompts):\n"
        "    return [c.count('e') / max(1, len(c)) for c in completions]\n\n\n"
        "def length(completions, answers, prompts):\n"
        "    return [float(len(c)) for c in completions]\n"
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: grpo
model: {model}
run_dir: {tmp_path / "run"}
stages:
{extra_stages}{stage}
""")
    return path


def _train(recipe_path: Path) -> dict:
    from domainsmith.pipeline import train_recipe
    from domainsmith.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    variants = train_recipe(recipe, log=lambda m: None, show_progress=False)
    assert variants[-1].name == "grpo"
    return json.loads((recipe.out_dir / "grpo" / "manifest.json").read_text())["result"]["metrics"]


def test_lora_grpo_trains_and_measures(tmp_path, tiny_model_dir):
    stage = """  - type: grpo
    prompts: [prompts.jsonl]
    heldout_fraction: 0.25
    rewards: [{kind: function, function: "shaping.py:letter_e"}, {kind: contains, weight: 0.5}]
    num_generations: 4
    batch_size: 2
    max_completion_length: 8
    epochs: 1
    learning_rate: 1.0e-2
    precision: fp32
    lora: {r: 8, alpha: 16}
    kl: {every: 2}"""
    metrics = _train(_project(tmp_path, tiny_model_dir, stage))
    assert metrics["prompts"] == {"train": 9, "heldout": 3, "rejected": 0, "dropped_solved": None}
    assert metrics["steps"] == 4 and metrics["train_loss"] == metrics["train_loss"]  # finite
    curve = metrics["reward_curve"]
    assert curve["step"] == [1, 2, 3, 4] and set(curve) == {"step", "total", "function", "contains"}
    assert all(0 <= v <= 1 for v in curve["function"]) and curve["contains"] == [0.0] * 4  # random text
    assert metrics["heldout_after"]["n"] == 3 and metrics["heldout_flips"]["n"] == 3
    kl = metrics["kl"]["measured"]
    assert [r["step"] for r in kl] == [2, 4] and all(r["kl_per_token"] > 0 for r in kl)  # the policy moved
    assert metrics["rewards"]["function"]["completions"] == 4 * 8
    assert metrics["rewards"]["contains"]["length_correlation"] == 0.0  # a constant reward has no correlation
    out = tmp_path / "run" / "grpo"
    from safetensors.torch import load_file

    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero: trained
    assert len((out / "heldout_answers.jsonl").read_text().splitlines()) == 3


def test_length_alarm_and_kl_ceiling(tmp_path, tiny_model_dir):
    # A reward that pays for length: the alarm must fire. Full training with no KL penalty (beta 0): the guard
    # measures against its own frozen copy and stops the run at the ceiling.
    stage = """  - type: grpo
    prompts: [prompts.jsonl]
    rewards: [{kind: function, function: "shaping.py:length"}]
    finetuning: full
    beta: 0.0
    num_generations: 4
    batch_size: 2
    max_completion_length: 12
    epochs: 1
    learning_rate: 1.0e-3
    precision: fp32
    kl: {every: 1, ceiling: 1.0e-6, action: stop}"""
    metrics = _train(_project(tmp_path, tiny_model_dir, stage))
    assert metrics["length_alarm"]["fired"] and metrics["length_alarm"]["rewards"] == ["function"]
    assert metrics["rewards"]["function"]["length_correlation"] > 0.5
    event = metrics["kl"]["event"]
    assert event["action"] == "stop" and event["step"] == metrics["steps"] <= 2
    assert (tmp_path / "run" / "grpo" / "model" / "config.json").is_file()


def test_a_trained_reward_model_serves_as_the_reward(tmp_path, tiny_model_dir):
    pairs = [{"instruction": f"Name item {i}.", "chosen": f"item {i}", "rejected": f"thing {i}"} for i in range(8)]
    _write(tmp_path / "pairs.jsonl", pairs)
    rm = """  - type: rm
    name: rm
    pairs: [pairs.jsonl]
    finetuning: full
    epochs: 1
    batch_size: 4
    precision: fp32
"""
    stage = """  - type: grpo
    prompts: [prompts.jsonl]
    rewards: [{kind: model, model: rm}]
    num_generations: 4
    batch_size: 2
    max_completion_length: 6
    epochs: 1
    learning_rate: 1.0e-3
    precision: fp32"""
    path = _project(tmp_path, tiny_model_dir, stage, rm)
    metrics = _train(path)
    assert metrics["rewards"]["model"]["completions"] == metrics["steps"] * 8
    assert all(v == v for v in metrics["reward_curve"]["model"])  # the reward model scored every batch
    # Retraining the reward model (new pairs) makes the policy stage stale.
    from domainsmith.manifest import stage_state

    fingerprint = json.loads((tmp_path / "run" / "grpo" / "manifest.json").read_text())["fingerprint"]
    _write(tmp_path / "pairs.jsonl", pairs[:6])
    _train(path)
    assert json.loads((tmp_path / "run" / "grpo" / "manifest.json").read_text())["fingerprint"] != fingerprint
    assert stage_state(tmp_path / "run" / "grpo", fingerprint).status != "complete"
