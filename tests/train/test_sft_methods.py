"""SFT additions: prompt tuning, P-tuning and prefix tuning through PEFT; freeze by layer range; packing."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import write_jsonl

from domainsmith.data.chat_format import IGNORE_INDEX, tokenize_conversations
from domainsmith.data.sources import load_instruction_sources
from domainsmith.evaluate.token_scoring import forward_target_logits
from domainsmith.model_loading import load_causal_lm, load_tokenizer
from domainsmith.recipe import parse_recipe
from domainsmith.train.collate import PadCollator
from domainsmith.train.sft import run_sft
from domainsmith.train.sft_packing import PackedCollator, pack_examples


def _recipe(tmp_path, stage: str):
    rows = [{"instruction": f"Who makes drug {i}?", "output": f"Company {i % 3}."} for i in range(8)]
    rows += [{"instruction": f"Spell {w}.", "output": " ".join(w)} for w in ("river", "stone", "lamp")]
    write_jsonl(tmp_path / "train.jsonl", rows)
    return parse_recipe(yaml.safe_load(f"name: t\ndata: [{{path: {tmp_path / 'train.jsonl'}}}]\nstages:\n{stage}"))


def _examples(recipe, tok, max_len=64):
    convs = load_instruction_sources(recipe).conversations
    return tokenize_conversations(tok, convs, max_len, ["domain"] * len(convs))[0]


def _loss(model, tok, recipe) -> float:
    examples = _examples(recipe, tok)
    batch = PadCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_prompt_learning_trains_only_virtual_tokens_and_reloads(tmp_path, tiny_model_dir, method):
    stage = f"""  - type: sft
    finetuning: {method}
    prompt: {{num_virtual_tokens: 8, encoder_hidden_size: 32}}
    epochs: 10
    learning_rate: {3.0e-1 if method == "prompt_tuning" else 3.0e-2}
    batch_size: 4
    max_seq_len: 64
    precision: fp32"""
    recipe = _recipe(tmp_path, stage)
    tok = load_tokenizer(str(tiny_model_dir))
    base = load_causal_lm(str(tiny_model_dir))
    before = {k: v.detach().clone() for k, v in base.named_parameters()}
    loss_before = _loss(base, tok, recipe)
    result = run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "stage", show_progress=False)
    assert result.artifact == "adapter"
    trained = load_causal_lm(str(tiny_model_dir), adapter=tmp_path / "stage" / "adapter", merge=True)
    assert _loss(trained, tok, recipe) < loss_before - 0.1  # a few thousand trained values move a random model
    base_after = dict(trained.get_base_model().named_parameters())
    assert all(torch.equal(before[k], base_after[k]) for k in before)  # the model itself is untouched
    # Log-likelihood scoring (MC, perplexity, KL) reads the input's logits, not the virtual tokens'.
    ids = tok("Who makes drug 3? Company 0.", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        scored, _ = forward_target_logits(trained, [ids], [3], tok.pad_token_id)
        direct = trained(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    assert torch.allclose(scored, direct.logits[0, -4:-1], atol=1e-5)


def test_prompt_learning_stage_must_be_last_and_cannot_merge_or_pack(tmp_path):
    with pytest.raises(Exception, match="must be the last stage"):
        _recipe(tmp_path, "  - {type: sft, name: a, finetuning: prompt_tuning}\n  - {type: sft, name: b}")
    with pytest.raises(Exception, match="nothing to merge"):
        _recipe(tmp_path, "  - {type: sft, finetuning: p_tuning, merge: true}")
    with pytest.raises(Exception, match="packing does not combine"):
        _recipe(tmp_path, "  - {type: sft, finetuning: prefix_tuning, packing: true}")


def test_freeze_by_layer_range_trains_exactly_those_layers(tmp_path, tiny_model_dir):
    stage = """  - type: sft
    finetuning: freeze
    freeze: {layers: "0-0", trainable_modules: [model.norm.]}
    epochs: 2
    learning_rate: 5.0e-3
    batch_size: 4
    max_seq_len: 64
    precision: fp32"""
    recipe = _recipe(tmp_path, stage)
    before = {k: v.detach().clone() for k, v in load_causal_lm(str(tiny_model_dir)).named_parameters()}
    run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "stage", show_progress=False)
    after = dict(load_causal_lm(str(tmp_path / "stage" / "model")).named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("model.layers.0.") or k == "model.norm.weight"}


def test_packed_rows_keep_every_target_and_never_attend_across_examples(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, "  - {type: sft}")
    tok = load_tokenizer(str(tiny_model_dir))
    examples = _examples(recipe, tok)
    rows = pack_examples(examples, max_len=128)
    assert len(rows) < len(examples) and all(len(r["input_ids"]) <= 128 for r in rows)
    assert sum(r["examples"] for r in rows) == len(examples)
    targets = sorted(t for e in examples for t in e.labels if t != IGNORE_INDEX)
    assert sorted(t for r in rows for t in r["labels"] if t != IGNORE_INDEX) == targets
    # The logits of every example inside a packed row equal its logits alone.
    model = load_causal_lm(str(tiny_model_dir))
    batch = PackedCollator(tok.pad_token_id)(rows[:2])
    with torch.no_grad():
        packed = model(**{k: batch[k] for k in ("input_ids", "position_ids")}, use_cache=False).logits
        row, start = 0, 0
        for length in _lengths(rows[0]):
            alone = model(input_ids=batch["input_ids"][row : row + 1, start : start + length]).logits[0]
            assert torch.allclose(packed[row, start : start + length], alone, atol=1e-4)
            start += length


def _lengths(row: dict) -> list[int]:
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


# bf16: LoRA on bf16 base weights under the Trainer's autocast, as the stage runs where the CPU or GPU has bf16
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_sft_trains_and_rows_stay_role_pure(tmp_path, tiny_model_dir, precision):
    stage = f"""  - type: sft
    packing: true
    lora: {{r: 4, alpha: 8}}
    epochs: 3
    learning_rate: 5.0e-2
    batch_size: 2
    max_seq_len: 128
    precision: {precision}
    general_kl: 1.0"""
    recipe = _recipe(tmp_path, stage)
    write_jsonl(
        tmp_path / "general.jsonl", [{"instruction": f"Add {i} and 1.", "output": str(i + 1)} for i in range(6)]
    )
    recipe.data.append(recipe.data[0].model_copy(update={"path": tmp_path / "general.jsonl", "role": "general"}))
    tok = load_tokenizer(str(tiny_model_dir))
    loss_before = _loss(load_causal_lm(str(tiny_model_dir)), tok, recipe)
    result = run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "stage", show_progress=False)
    assert result.metrics["packed_rows"] < result.metrics["data"]["examples"]
    trained = load_causal_lm(str(tiny_model_dir), adapter=tmp_path / "stage" / "adapter")
    assert _loss(trained, tok, recipe) < loss_before - 0.2
    convs = load_instruction_sources(recipe)
    examples = tokenize_conversations(tok, convs.conversations, 128, convs.roles)[0]
    assert {r["role"] for r in pack_examples(examples, 128)} == {"domain", "general"}
