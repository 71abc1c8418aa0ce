"""A `pt` or `cpt` stage end to end: the prepared text packed once, the model built (pt) or loaded (cpt), the
optimizer steps run (pretrain.py), the trained weights saved."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError, DomainsmithError
from ..precision import use_bf16
from ..recipe import PretrainStage, Recipe
from .outputs import gathered_state_dict, save_stage_outputs
from .packing import load_packed, pack_documents
from .pretrain import PretrainResult, make_accelerator, remove_checkpoints, train_packed


def prepared_texts(recipe: Recipe, tokenizer):
    """Documents from `data prepare`'s shards (its output must exist: the pipeline prepares first)."""
    if recipe.prepare is None or not (recipe.prepared_dir / "stats.json").is_file():
        raise DomainsmithError(
            "pt/cpt stages train on prepared text: add a prepare: section (and text sources) to the recipe"
        )
    return (text for _, text in prepared_documents(recipe.prepared_dir, tokenizer))


def prepared_documents(prepared_dir: Path, tokenizer):
    """(role, text) of every record `data prepare` wrote to `prepared_dir`: text records as they are,
    conversations rendered with the model's chat template (instruction data mixed into CPT)."""
    stats = json.loads((prepared_dir / "stats.json").read_text())
    if stats["output"]["format"] != "jsonl":
        raise DomainsmithError("pt/cpt read prepared data as JSONL: set prepare.output_format: jsonl")
    for shard in stats["output"]["shards"]:
        with open(prepared_dir / shard["file"], encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if "text" in row:
                    yield row["role"], row["text"]
                else:
                    yield row["role"], tokenizer.apply_chat_template(row["messages"], tokenize=False)


def _build_model(recipe: Recipe, stage: PretrainStage, model_path: str):
    """cpt: the input model; pt: a fresh model with the input model's architecture, resized as the stage says."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..model_loading import load_causal_lm

    if stage.type == "cpt":
        return load_causal_lm(model_path, trainable=True)
    config = AutoConfig.from_pretrained(model_path)
    for key, value in (stage.architecture.model_dump(exclude_none=True) if stage.architecture else {}).items():
        if not hasattr(config, key):
            raise DomainsmithError(f"stage '{stage.name}': architecture.{key} is not in {type(config).__name__}")
        setattr(config, key, value)
    torch.manual_seed(recipe.seed)
    return AutoModelForCausalLM.from_config(config)


def run_pretrain(
    recipe: Recipe, stage: PretrainStage, model_path: str, stage_dir: Path, show_progress: bool = True, log=print
) -> PretrainResult:
    from accelerate.utils import set_seed

    from ..model_loading import load_tokenizer
    from .finetuning import count_parameters, prepare_trainable

    bf16 = use_bf16(stage.precision)
    accelerator = make_accelerator(stage, bf16)
    set_seed(recipe.seed)
    tokenizer = load_tokenizer(model_path)
    pack_dir = stage_dir / "packed"
    if accelerator.is_main_process and load_packed(pack_dir) is None:
        pack_dir.mkdir(parents=True, exist_ok=True)
        texts = prepared_texts(recipe, tokenizer)
        summary = pack_documents(texts, tokenizer, pack_dir, stage.max_seq_len, stage.packing)
        log(f"packed {summary['documents']:,} documents into {summary['sequences']:,} sequences of "
            f"{stage.max_seq_len} tokens ({stage.packing} mode)")  # fmt: skip
    accelerator.wait_for_everyone()
    packed = load_packed(pack_dir)
    if packed is None or packed.num_sequences == 0:
        raise DataError(recipe.prepared_dir, "the prepared data holds no text records to pretrain on")
    model = prepare_trainable(_build_model(recipe, stage, model_path), stage, recipe.seed)
    params = count_parameters(model)
    model, run = train_packed(accelerator, model, packed, stage, stage_dir, recipe.seed, show_progress, log)
    artifact = "adapter" if stage.finetuning == "lora" else "model"
    # Sharded engines (ZeRO-3, FSDP) hold a shard per rank: every rank takes part in gathering the full weights.
    state_dict = gathered_state_dict(accelerator, model)
    if accelerator.is_main_process:
        save_stage_outputs(accelerator.unwrap_model(model), tokenizer, stage, stage_dir, artifact, state_dict)
        remove_checkpoints(stage_dir)
    accelerator.wait_for_everyone()
    metrics = {
        "type": stage.type,
        "finetuning": stage.finetuning,
        "precision": "bf16" if bf16 else "fp32",
        "parameters": params,
        "packing": stage.packing,
        "processes": accelerator.num_processes,
        **run,
        "train_tokens": run["tokens"],
    }
    return PretrainResult(artifact, metrics)
