"""Strategy advice and recipe inspection of `domainsmith plan`: rules, their sources, and the data they read."""

import json

import pytest
from conftest import write_jsonl
from rich.console import Console

from domainsmith.plan import PlanRequest, plan_command
from domainsmith.plan.advice import Situation, advise, rank_strategies
from domainsmith.plan.choices import base_or_chat, choose_method, choose_precision
from domainsmith.plan.inspect import estimate_tokens
from domainsmith.plan.render import render_plan


def by_name(ranked: list[dict]) -> dict[str, dict]:
    return {r["strategy"]: r for r in ranked}


@pytest.mark.parametrize(
    "samples,choice",
    [(0, "chat"), (800, "chat"), (5_000, "chat"), (50_000, "either"), (100_000, "base"), (400_000, "base")],
)
def test_5k_samples_tune_the_chat_model_100k_the_base_model(samples, choice):
    answer = base_or_chat(samples)
    assert answer["choice"] == choice
    assert answer["heuristic"] is True and answer["source"]
    if choice == "chat" and samples:
        assert "chat template" in answer["reason"]


def test_rag_ranks_first_when_knowledge_changes_often_or_must_be_cited():
    common = dict(
        params=7_000_000_000,
        context_tokens=8192,
        domain_text_tokens=200_000_000,
        domain_instruction_samples=3000,
        domain_instruction_tokens=900_000,
        pretraining_tokens=200_000_000,
    )
    changing = rank_strategies(Situation(**common, knowledge_changes_often=True))
    assert changing[0]["strategy"] == "rag" and changing[0]["verdict"] == "recommended"
    rag_reasons = " ".join(r["reason"] for r in changing[0]["reasons"])
    assert "re-indexing" in rag_reasons
    assert all(r["source"] for r in changing[0]["reasons"])
    cited = rank_strategies(Situation(**common, needs_citations=True))
    assert cited[0]["strategy"] == "rag"
    # Without either need, 200M tokens of unseen text makes CPT outrank RAG: the rule is what moved RAG up.
    neither = by_name(rank_strategies(Situation(**common)))
    assert neither["cpt"]["points"] > neither["rag"]["points"]


def test_from_scratch_is_refused_for_small_data_or_small_budget():
    small_data = by_name(rank_strategies(Situation(params=7_000_000_000, pretraining_tokens=2_000_000_000)))
    assert small_data["from_scratch"]["verdict"] == "advise against"
    assert "hundreds of billions" in small_data["from_scratch"]["reasons"][0]["reason"]

    big_data_small_budget = Situation(
        params=7_000_000_000,
        pretraining_tokens=400_000_000_000,
        budget_gpu_hours=5_000,
        from_scratch_gpu_hours=1_900_000,
        gpu_name="A100-80G",
    )
    row = by_name(rank_strategies(big_data_small_budget))["from_scratch"]
    assert row["verdict"] == "advise against"
    assert "1,900,000 GPU-hours" in row["reasons"][0]["reason"] and "5,000" in row["reasons"][0]["reason"]

    funded = Situation(
        params=7e9, pretraining_tokens=400e9, budget_gpu_hours=3e6, from_scratch_gpu_hours=1.9e6, gpu_name="H100"
    )
    assert by_name(rank_strategies(funded))["from_scratch"]["verdict"] != "advise against"


def test_from_scratch_refusal_through_the_command_uses_the_6pt_arithmetic():
    plan = plan_command(PlanRequest(params="7B", tokens="300B", gpu="A100-80G", gpus=8, budget_gpu_hours=10_000))
    row = by_name(plan["advice"]["strategies"])["from_scratch"]
    need = plan["compute"]["gpu_hours"]  # same P, T, GPU and MFU as the from-scratch check
    assert row["verdict"] == "advise against" and f"{need:,.0f}" in row["reasons"][0]["reason"]


def test_icl_when_the_domain_fits_the_context_and_cpt_with_lots_of_text():
    small = by_name(rank_strategies(Situation(context_tokens=128_000, domain_text_tokens=20_000)))
    assert small["icl"]["verdict"] == "recommended"
    big = by_name(rank_strategies(Situation(context_tokens=8192, domain_text_tokens=2_000_000_000)))
    assert big["icl"]["points"] < 0 and big["cpt"]["points"] > 0


def test_sft_is_for_behaviour_and_format():
    ranked = by_name(rank_strategies(Situation(domain_instruction_samples=2000, domain_instruction_tokens=400_000)))
    reason = ranked["sft"]["reasons"][0]
    assert "behaviour and format" in reason["reason"] and "LIMA" in reason["source"]


def test_every_piece_of_advice_carries_a_source_and_heuristics_are_marked():
    situation = Situation(
        params=7e9,
        context_tokens=4096,
        domain_text_tokens=5e8,
        domain_instruction_samples=8000,
        domain_instruction_tokens=2e6,
        general_tokens=2e6,
        needs_citations=True,
        pretraining_tokens=5e8,
        fits_by_method={"full": [], "lora": ["ddp"], "qlora": ["ddp"], "freeze": ["ddp"]},
        gpu_name="RTX4090",
        gpu_has_bf16=True,
    )
    advice = advise(situation)
    json.dumps(advice)
    for row in advice["strategies"]:
        for reason in row["reasons"]:
            assert reason["source"] and isinstance(reason["heuristic"], bool)
    for item in [advice["base_or_chat"], advice["method"], advice["precision"], *advice["mix"]]:
        assert item["source"] and isinstance(item["heuristic"], bool)
    assert all(m["heuristic"] for m in advice["mix"])
    assert any("domainsmith mix search" in m["next"] for m in advice["mix"])
    assert advice["mix"][0]["current"] == "current data: domain:general = 1:0.004 (tokens)"


def test_method_lora_when_memory_is_short_full_with_offload_otherwise():
    short = choose_method(Situation(fits_by_method={"full": [], "lora": ["ddp", "zero2"], "qlora": ["ddp"]}))
    assert short["choice"] == "lora" and "P-tuning" in short["reason"]
    offload = choose_method(Situation(fits_by_method={"full": ["zero3_offload"], "lora": ["ddp"]}))
    assert offload["choice"] == "full" and offload["setup"] == "zero3_offload" and "offload" in offload["reason"]
    assert "LoRA fits without it" in offload["reason"]
    # LoRA with a null space whose moments do not fit: the advice must not claim LoRA fits.
    no_lora = choose_method(Situation(fits_by_method={"full": ["zero3_offload"], "lora": []}))
    assert no_lora["choice"] == "full" and "LoRA" not in no_lora["reason"]
    roomy = choose_method(Situation(fits_by_method={"full": ["zero2", "zero3"], "lora": ["ddp"]}))
    assert roomy["choice"] == "full" and roomy["setup"] == "zero2" and "forgets less" in roomy["reason"]


def test_bf16_when_the_gpu_has_it():
    assert choose_precision(Situation(gpu_name="H100", gpu_has_bf16=True))["choice"] == "bf16"
    assert "fp16" in choose_precision(Situation(gpu_name="V100", gpu_has_bf16=False))["choice"]


def test_token_estimate_counts_cjk_per_character_and_latin_per_four():
    assert estimate_tokens("中文医学知识") == 6
    assert estimate_tokens("a" * 40) == 10
    assert estimate_tokens("药品 dose") == 2 + 2  # 2 CJK + ceil(5 other characters / 4)


def test_recipe_plan_inspects_instructions_and_raw_text(tmp_path):
    write_jsonl(
        tmp_path / "domain.jsonl",
        [{"instruction": f"What treats condition {i}?", "output": f"Drug {i} treats it."} for i in range(30)],
    )
    write_jsonl(
        tmp_path / "general.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}] * 10,
    )
    (tmp_path / "handbook.txt").write_text("阿司匹林用于止痛。" * 50, encoding="utf-8")
    (tmp_path / "recipe.yaml").write_text(
        "name: t\n"
        "data:\n"
        "  - {path: domain.jsonl, role: domain}\n"
        "  - {path: general.jsonl, role: general}\n"
        "  - {path: handbook.txt, role: domain}\n"
        "stages:\n"
        "  - {type: sft, finetuning: lora, epochs: 2, batch_size: 4, max_seq_len: 256, general_null_space: 0.99,\n"
        "     null_space_directions: domain_ratio}\n",
        encoding="utf-8",
    )
    plan = plan_command(PlanRequest(recipe=tmp_path / "recipe.yaml", params="1B", gpu="L40S", detect_hardware=False))
    json.dumps(plan)
    domain = plan["data"]["by_role"]["domain"]
    assert domain["instruction_samples"] == 30 and domain["text_documents"] == 1
    assert domain["text_tokens"] == 9 * 50  # one token per CJK character (the full stop 。 included)
    sources = {s["path"]: s for s in plan["data"]["sources"]}
    assert sources["handbook.txt"]["kind"] == "text" and "zh" in sources["handbook.txt"]["languages"]["guess"]
    assert set(sources["domain.jsonl"]["tokens_by_speaker"]) == {"user", "assistant"}
    assert plan["memory"]["method"] == "lora" and plan["memory"]["numbers"]["seq_len"] == 256
    assert plan["compute"]["inputs"]["T"] == plan["data"]["total_tokens"] * 2  # two epochs
    assert plan["advice"]["base_or_chat"]["choice"] == "chat"
    # The stage's null space reaches the memory estimate and the printed table.
    assert plan["memory"]["numbers"]["null_space"] == "domain_ratio"
    rows = {r["setup"]: r for r in plan["memory"]["per_gpu"]}
    assert rows["ddp"]["null_space_gib"] > 0 and rows["ddp"]["refused"] is None and rows["zero3"]["refused"]
    console = Console(record=True, width=200)
    render_plan(plan, console)
    printed = console.export_text()
    assert "general_null_space (domain_ratio)" in printed and "no*" in printed
