"""Each fine-tuning method trains, lowers the loss, and changes exactly the parameters it should."""

import json

import pytest
import torch

from domainsmith.data.chat_format import tokenize_conversations
from domainsmith.model_loading import load_causal_lm, load_tokenizer
from domainsmith.recipe import parse_recipe
from domainsmith.train.sft import run_sft


def _recipe(tmp_path, finetuning, extra=""):
    from conftest import write_jsonl

    rows = [{"instruction": f"Who makes drug {i}?", "output": f"Company {i % 3}."} for i in range(8)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    import yaml

    data = yaml.safe_load(f"""
name: t
data: [{{path: {tmp_path / "train.jsonl"}}}]
stages:
  - type: sft
    finetuning: {finetuning}
    lora: {{r: 4, alpha: 8}}
    freeze: {{trainable_layers: 1}}
    epochs: 4
    learning_rate: {5e-2 if finetuning == "lora" else 5e-3}
    batch_size: 4
    max_seq_len: 64
    precision: fp32
    save_steps: 3
{extra}
""")
    return parse_recipe(data)


def _loss(model, tok, recipe):
    from domainsmith.data.sources import load_instruction_sources
    from domainsmith.train.collate import PadCollator

    convs = load_instruction_sources(recipe).conversations
    examples, _ = tokenize_conversations(tok, convs, 64)
    batch = PadCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("finetuning", ["lora", "full", "freeze"])
def test_method_trains_only_intended_parameters(tmp_path, tiny_model_dir, finetuning):
    recipe = _recipe(tmp_path, finetuning)
    tok = load_tokenizer(str(tiny_model_dir))
    base = load_causal_lm(str(tiny_model_dir))
    before = {k: v.detach().clone() for k, v in base.named_parameters()}
    loss_before = _loss(base, tok, recipe)

    result = run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "stage", show_progress=False)
    stage = tmp_path / "stage"
    if finetuning == "lora":
        trained = load_causal_lm(str(tiny_model_dir), adapter=stage / "adapter")
    else:
        trained = load_causal_lm(str(stage / "model"))
    # A random tiny model's tied, frozen head bounds how far LoRA alone can move the loss; 0.2 nats is well
    # beyond noise (the same data, evaluated deterministically).
    assert _loss(trained, tok, recipe) < loss_before - 0.2
    assert result.metrics["steps"] == 8
    assert not (stage / "checkpoints").exists()  # removed once the stage completed

    after = {}
    for name, p in trained.named_parameters():
        if "lora_" in name:
            continue
        after[name.removeprefix("base_model.model.").replace(".base_layer", "")] = p.detach()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if finetuning == "lora":
        assert changed == set()
        lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: all of them learned
    elif finetuning == "full":
        assert changed == set(before)
    else:  # freeze with trainable_layers=1: exactly the last of the 2 decoder layers
        assert changed == {k for k in before if k.startswith("model.layers.1.")}


def test_saved_adapter_reloads_to_identical_logits(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, "lora")
    from domainsmith.train.finetuning import prepare_trainable

    model = prepare_trainable(load_causal_lm(str(tiny_model_dir), trainable=True), recipe.stages[0])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(tmp_path / "adapter")
    model.eval()
    reloaded = load_causal_lm(str(tiny_model_dir), adapter=tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_freeze_rejects_more_layers_than_model_has(tmp_path, tiny_model_dir):
    from domainsmith.errors import RecipeError
    from domainsmith.train.finetuning import apply_freeze

    recipe = _recipe(tmp_path, "freeze")
    settings = recipe.stages[0].freeze.model_copy(update={"trainable_layers": 5})
    with pytest.raises(RecipeError, match="only 2 layers"):
        apply_freeze(load_causal_lm(str(tiny_model_dir)), settings)


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tmp_path, tiny_model_dir):
    from domainsmith.train.finetuning import prepare_trainable
    from domainsmith.train.sft import _loraplus_optimizer

    recipe = _recipe(tmp_path, "lora")
    stage = recipe.stages[0]
    assert _loraplus_optimizer(stage, None) is None  # off unless asked for
    stage = stage.model_copy(update={"lora": stage.lora.model_copy(update={"loraplus_lr_ratio": 16.0})})
    model = prepare_trainable(load_causal_lm(str(tiny_model_dir), trainable=True), stage)
    cls, kwargs = _loraplus_optimizer(stage, model)
    slow, fast = kwargs["params"]
    assert fast["lr"] == 16 * slow["lr"] == 16 * stage.learning_rate
    n_b = sum(1 for n, p in model.named_parameters() if "lora_B" in n)
    assert len(fast["params"]) == n_b and len(slow["params"]) == n_b  # one A per B
    cls(kwargs["params"], lr=kwargs["lr"])  # a valid optimizer


def test_target_only_logits_loss_equals_full_loss(tmp_path, tiny_model_dir):
    """The LM head on target positions only gives the same loss and gradients as the plain forward."""
    from transformers import TrainingArguments

    from domainsmith.train.collate import PadCollator
    from domainsmith.train.target_loss import TargetLogitsTrainer

    recipe = _recipe(tmp_path, "full")
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), trainable=True)
    from domainsmith.data.sources import load_instruction_sources

    examples, _ = tokenize_conversations(tok, load_instruction_sources(recipe).conversations, 64)
    batch = PadCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples[:3]])
    trainer = TargetLogitsTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none")
    )
    ours = trainer.compute_loss(model, dict(batch))
    ours.backward()
    grad_ours = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    reference = model(**batch).loss
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-6)
    assert torch.allclose(grad_ours, model.model.embed_tokens.weight.grad, atol=1e-6)


def test_interrupted_stage_resumes_from_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    from conftest import SimulatedKill, kill_sft_at_step

    recipe = _recipe(tmp_path, "lora")  # save_steps: 3
    stage_dir = tmp_path / "stage"
    kill_sft_at_step(monkeypatch, 5)
    with pytest.raises(SimulatedKill):
        run_sft(recipe, recipe.stages[0], str(tiny_model_dir), stage_dir, show_progress=False)
    assert (stage_dir / "checkpoints" / "checkpoint-3").is_dir()
    assert not (stage_dir / "adapter").exists()

    monkeypatch.undo()
    result = run_sft(recipe, recipe.stages[0], str(tiny_model_dir), stage_dir, show_progress=False)
    assert result.metrics["resumed_from"].endswith("checkpoint-3")
    assert result.metrics["steps"] == 8
    rows = [json.loads(line) for line in (stage_dir / "loss.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # steps 4-5 were trained again, logged once


def test_kl_to_reference_matches_torch_kl_div():
    from domainsmith.train.target_loss import kl_to_reference

    torch.manual_seed(0)
    logits, reference = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    expected = (
        torch.nn.functional.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none")
        .sum(-1)[mask]
        .sum()
    )
    assert torch.allclose(kl_to_reference(logits, reference, mask), expected, atol=1e-6)
    assert kl_to_reference(reference, reference, mask).abs() < 1e-6


def _lora_batch_and_trainer(tmp_path, tiny_model_dir, general_kl: float):
    """A tiny LoRA model whose adapter already differs from the base, a padded batch, and our trainer."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from domainsmith.data.sources import load_instruction_sources
    from domainsmith.train.collate import PadCollator
    from domainsmith.train.target_loss import TargetLogitsTrainer

    recipe = _recipe(tmp_path, "lora")
    tok = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(load_causal_lm(str(tiny_model_dir), trainable=True), config)
    examples, _ = tokenize_conversations(tok, load_instruction_sources(recipe).conversations, 64)
    features = [{"input_ids": e.input_ids, "labels": e.labels, "distill": i != 1} for i, e in enumerate(examples[:3])]
    batch = PadCollator(tok.pad_token_id)(features)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none")
    return model, batch, TargetLogitsTrainer(model=model, args=args, general_kl=general_kl)


def test_general_kl_adds_the_kl_to_the_base_on_distill_rows_only(tmp_path, tiny_model_dir):
    import torch.nn.functional as F

    model, batch, trainer = _lora_batch_and_trainer(tmp_path, tiny_model_dir, general_kl=2.0)
    ours = trainer.compute_loss(model, dict(batch))

    labels, rows = batch["labels"], torch.tensor([0, 2])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1]
        with model.disable_adapter():
            base_logits = model(**inputs).logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum")
    log_p, log_q = logits[rows].log_softmax(-1), base_logits[rows].log_softmax(-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)[mask[rows]].sum()
    assert kl > 1e-3  # the adapter is not the identity, so the term is live
    assert torch.allclose(ours, (ce + 2.0 * kl) / mask.sum(), rtol=1e-5)


def test_general_kl_gradient_pulls_the_adapter_back_to_the_base(tmp_path, tiny_model_dir):
    model, batch, trainer = _lora_batch_and_trainer(tmp_path, tiny_model_dir, general_kl=1.0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    from domainsmith.train.target_loss import target_positions

    keep = target_positions(batch["labels"])
    targets = batch["labels"][:, 1:][:, keep]

    def kl_now():
        logits = model(**inputs, logits_to_keep=keep).logits.float()
        return trainer._kl_term(model, inputs, keep, logits, targets, batch["distill"])

    before = kl_now()
    before.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad / p.grad.norm().clamp(min=1e-12)
    assert kl_now() < before.detach()


def test_general_kl_is_logged_during_training(tmp_path, tiny_model_dir):
    from conftest import write_jsonl

    write_jsonl(tmp_path / "general.jsonl", [{"instruction": f"Name colour {i}.", "output": "Blue."} for i in range(4)])
    recipe = _recipe(tmp_path, "lora", "    general_kl: 1.0\n")
    recipe.data.append(recipe.data[0].model_copy(update={"path": tmp_path / "general.jsonl", "role": "general"}))
    run_sft(recipe, recipe.stages[0], str(tiny_model_dir), tmp_path / "stage", show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "stage" / "loss.jsonl").read_text().splitlines()]
    assert any(r.get("general_kl_per_token", 0) > 0 for r in rows)


def test_general_kl_is_refused_without_lora(tmp_path):
    from domainsmith.errors import RecipeError

    with pytest.raises(RecipeError, match="general_kl needs finetuning: lora"):
        _recipe(tmp_path, "full", "    general_kl: 1.0\n")
