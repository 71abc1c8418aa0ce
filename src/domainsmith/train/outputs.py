"""Write a stage's trained weights: the adapter or model dir, and a merged model when asked (LoRA only)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..files import replace_dir


def save_stage_outputs(model, tokenizer, stage, stage_dir: Path, artifact: str) -> None:
    """Write `stage_dir/<artifact>` (and the tokenizer, so each dir loads on its own) atomically; with
    `stage.merge` and LoRA, also `stage_dir/merged`."""
    _save_dir(model, tokenizer, stage_dir, artifact)
    if stage.merge and stage.finetuning == "lora":
        _save_dir(model.merge_and_unload(), tokenizer, stage_dir, "merged")


def _save_dir(model, tokenizer, stage_dir: Path, name: str) -> None:
    tmp = stage_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, stage_dir / name)
