"""The `sft` stage: instruction tuning with LoRA, full or freeze fine-tuning on the HF Trainer.

Outputs in the stage dir: `adapter/` (LoRA) or `model/` (full, freeze), `merged/` on request, `loss.jsonl`
(every step), `rejects.jsonl` (skipped records, when skipping was asked for). `checkpoints/` holds Trainer
checkpoints while the stage runs, so re-running after a crash resumes; it is removed when the stage completes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.chat_format import tokenize_conversations
from ..data.instructions import OnBadRecord
from ..data.sources import LoadedSources, load_instruction_sources
from ..errors import DataError
from ..files import atomic_write_jsonl, atomic_write_text
from ..model_loading import load_causal_lm, load_tokenizer
from ..precision import use_bf16
from ..recipe import PROMPT_METHODS, Recipe, SFTStage
from .callbacks import JsonlLossLogger, RichProgress
from .collate import PadCollator
from .cpu_allocator import configure_for_training
from .document_attention import document_attention
from .finetuning import count_parameters, prepare_trainable
from .outputs import gathered_state_dict, save_stage_outputs
from .sft_packing import PackedCollator, pack_examples
from .target_loss import TargetLogitsTrainer


@dataclass
class SFTResult:
    artifact: str  # "adapter" or "model": the subdir of the stage dir to load
    metrics: dict


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def run_sft(
    recipe: Recipe,
    stage: SFTStage,
    model_path: str,
    stage_dir: Path,
    on_bad_record: OnBadRecord = "fail",
    show_progress: bool = True,
    sources: LoadedSources | None = None,
) -> SFTResult:
    """Train one SFT stage from `model_path` (a resolved base model or the previous stage's model).

    `sources` are the recipe's data, already read and checked by the caller; read here when not given.
    """
    from transformers import TrainingArguments, set_seed

    set_seed(recipe.seed)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if sources is None:
        sources = load_instruction_sources(recipe, on_bad_record)
    if sources.rejects:
        atomic_write_jsonl(
            stage_dir / "rejects.jsonl",
            [{"source": r.source, "line": r.line, "reason": r.reason, "record": r.record} for r in sources.rejects],
        )
    tokenizer = load_tokenizer(model_path, padding_side="right")
    examples, tok_stats = tokenize_conversations(tokenizer, sources.conversations, stage.max_seq_len, sources.roles)
    if not examples:
        raise DataError(recipe.source or "recipe", "no training example has an assistant token within max_seq_len")

    bf16 = use_bf16(stage.precision)
    # Frozen LoRA base weights need no fp32 master copy: holding them in bf16 saves memory and the per-step cast.
    base_dtype = "bfloat16" if bf16 and stage.finetuning == "lora" else "float32"
    model = load_causal_lm(model_path, dtype=base_dtype, trainable=True)
    model = prepare_trainable(model, stage, recipe.seed, model_path)
    params = count_parameters(model)

    import torch

    configure_for_training(on_cuda=torch.cuda.is_available())
    ckpt_dir = stage_dir / "checkpoints"
    args = TrainingArguments(
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(ckpt_dir),
        num_train_epochs=stage.epochs,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        learning_rate=stage.learning_rate,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
        bf16=bf16,
        logging_steps=1,
        save_strategy="steps",
        save_steps=stage.save_steps,
        save_total_limit=2,
        train_sampling_strategy="group_by_length",  # similar lengths per batch: less padding computed
        report_to="none",
        disable_tqdm=True,
        seed=recipe.seed,
        data_seed=recipe.seed,
        remove_unused_columns=False,
    )
    if stage.packing:
        dataset = pack_examples(examples, stage.max_seq_len)
        collator = PackedCollator(tokenizer.pad_token_id, with_distill=stage.general_kl > 0)
    else:
        dataset = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
        if stage.general_kl > 0:
            for row, ex in zip(dataset, examples, strict=True):
                row["distill"] = ex.role == "general"
        collator = PadCollator(tokenizer.pad_token_id)
    callbacks = [JsonlLossLogger(stage_dir / "loss.jsonl")]
    if show_progress:
        callbacks.append(RichProgress(f"sft:{stage.name}"))
    # Prompt-learning adapters prepend virtual tokens, which shifts the positions the target-only loss picks:
    # they train with the Trainer's own loss on full logits.
    trainer_cls = TargetLogitsTrainer if stage.finetuning not in PROMPT_METHODS else _PlainTrainer
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=callbacks,
        optimizer_cls_and_kwargs=_loraplus_optimizer(stage, model),
        general_kl=stage.general_kl,
    )
    extra = null_space_text_rows(recipe, stage, tokenizer) if stage.general_null_space is not None else []
    null_spaces = _constrain_to_general_null_space(trainer, stage, examples, extra, tokenizer.pad_token_id)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; loss.jsonl and the progress bar replace it
    resume = _last_checkpoint(ckpt_dir)
    if resume is not None:
        _drop_logged_steps_after(stage_dir / "loss.jsonl", int(Path(resume).name.rsplit("-", 1)[-1]))
    started = time.time()
    from peft.helpers import disable_input_dtype_casting

    # Packed rows on CPU: attention per example instead of a dense block-diagonal mask over the row. Under the
    # Trainer's bf16 autocast (around every forward it runs), PEFT's cast of each LoRA layer's bf16 input to the
    # adapter's fp32 is undone by autocast at once: a copy there and back per layer (about 2% of a packed step on
    # CPU), skipped: the adapter runs in bf16 either way. (DeepSpeed's bf16 holds the adapter in bf16 already.)
    no_input_cast = bf16 and stage.finetuning == "lora"
    with (
        document_attention(model, enabled=stage.packing) as per_document,
        disable_input_dtype_casting(model, active=no_input_cast),
    ):
        output = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - started

    artifact = "adapter" if stage.finetuning in ("lora", *PROMPT_METHODS) else "model"
    state_dict = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)
    if trainer.is_world_process_zero():
        save_stage_outputs(trainer.model, tokenizer, stage, stage_dir, artifact, state_dict)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    metrics = {
        "finetuning": stage.finetuning,
        "precision": "bf16" if bf16 else "fp32",
        "parameters": params,
        "data": {"sources": sources.per_source, "rejected": len(sources.rejects), **tok_stats.as_dict()},
        "packed_rows": len(dataset) if stage.packing else None,
        "packed_attention": ("per example" if per_document else "block-diagonal mask") if stage.packing else None,
        "train_loss": output.training_loss,
        "steps": output.global_step,
        "resumed_from": resume,
        "train_seconds": round(train_seconds, 1),
        "train_tokens": tok_stats.tokens * stage.epochs,
        "general_null_space": {
            **null_spaces.summary(stage.general_null_space),
            "directions": stage.null_space_directions,
            "text_rows": len(extra),
        }
        if null_spaces
        else None,
    }
    return SFTResult(artifact=artifact, metrics=metrics)


def null_space_text_rows(recipe: Recipe, stage: SFTStage, tokenizer) -> list[dict]:
    """The stage's `null_space_texts` as token rows of at most max_seq_len tokens (a longer text is cut into several
    windows, so all of it counts)."""
    from ..evaluate.perplexity import load_texts

    rows = []
    for path in stage.null_space_texts:
        for text in load_texts(recipe.resolve(path)):
            ids = tokenizer(text, verbose=False)["input_ids"]  # windows below, not truncation: no length warning
            for start in range(0, len(ids), stage.max_seq_len):
                window = ids[start : start + stage.max_seq_len]
                rows.append({"input_ids": window, "labels": window})
    return rows


def _constrain_to_general_null_space(trainer, stage: SFTStage, examples, extra_rows: list[dict], pad_token_id: int):
    """With `general_null_space`, project the LoRA adapters onto the null space of the inputs of the general
    examples and `extra_rows` (train/null_space.py) before training and after every optimizer step; returns the
    spaces, or None."""
    if stage.general_null_space is None:
        return None
    from ..errors import RecipeError
    from .null_space import domain_sample, general_null_spaces, main_process_spaces, null_space_callback

    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # Both keep their own (sharded or fp32 master) copies of the adapter weights, which an in-place projection
        # of the module's weights would not reach.
        raise RecipeError("general_null_space runs in one process or under DDP; DeepSpeed and FSDP are not supported")
    general = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples if ex.role == "general"]
    if not general:
        raise RecipeError(f"stage '{stage.name}': general_null_space needs general-role training data (role: general)")
    general += extra_rows
    device = next(p for p in trainer.model.parameters() if p.requires_grad).device
    collate = PadCollator(pad_token_id)

    def batches(rows):
        return (
            {k: v.to(device) for k, v in collate(rows[i : i + stage.batch_size]).items()}
            for i in range(0, len(rows), stage.batch_size)
        )

    domain = None
    if stage.null_space_directions == "domain_ratio":
        rows = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples if ex.role != "general"]
        general_tokens = sum(len(row["input_ids"]) for row in general)
        domain = batches(domain_sample(rows, general_tokens, trainer.args.seed))
    spaces = main_process_spaces(general_null_spaces(trainer.model, batches(general), stage.general_null_space, domain))
    trainer.add_callback(null_space_callback(trainer.model, spaces))
    return spaces


def _PlainTrainer(*args, general_kl: float = 0.0, **kwargs):
    from transformers import Trainer

    return Trainer(*args, **kwargs)


def _drop_logged_steps_after(log_path: Path, step: int) -> None:
    """Steps after the checkpoint are trained again on resume; their old log rows would appear twice."""
    if not log_path.is_file():
        return
    lines = log_path.read_text(encoding="utf-8").splitlines(keepends=True)
    atomic_write_text(log_path, "".join(line for line in lines if json.loads(line).get("step", 0) <= step))


def _loraplus_optimizer(stage: SFTStage, model):
    """LoRA+ (Hayou et al. 2024): B matrices learn `ratio` times faster than A; None keeps the Trainer's AdamW.

    The scheduler scales every group's lr by the same factor, so the ratio holds through warmup and decay.
    """
    if stage.finetuning != "lora" or stage.lora.loraplus_lr_ratio is None:
        return None
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fast = [p for n, p in trainable if "lora_B" in n]
    rest = [p for n, p in trainable if "lora_B" not in n]
    groups = [
        {"params": rest, "lr": stage.learning_rate},
        {"params": fast, "lr": stage.learning_rate * stage.lora.loraplus_lr_ratio},
    ]
    return torch.optim.AdamW, {"params": groups, "lr": stage.learning_rate, "weight_decay": stage.weight_decay}
