"""Write a stage's trained weights: the adapter or model dir, and a merged model when asked (LoRA only)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import DomainsmithError
from ..files import replace_dir


def save_stage_outputs(model, tokenizer, stage, stage_dir: Path, artifact: str, state_dict=None) -> None:
    """Write `stage_dir/<artifact>` (and the tokenizer, so each dir loads on its own) atomically; with
    `stage.merge` and LoRA, also `stage_dir/merged`. `state_dict`: the full weights gathered from every rank when
    the model is sharded (ZeRO-3, FSDP), where `model` alone holds only this rank's shard."""
    _save_dir(model, tokenizer, stage_dir, artifact, state_dict)
    if stage.merge and stage.finetuning == "lora":
        if state_dict is not None:
            raise DomainsmithError(
                f"stage '{stage.name}': merge needs the whole model in one process; train LoRA under DDP "
                "(configs/accelerate/ddp.yaml) or merge later with the saved adapter"
            )
        _save_dir(model.merge_and_unload(), tokenizer, stage_dir, "merged")


def _save_dir(model, tokenizer, stage_dir: Path, name: str, state_dict=None) -> None:
    tmp = stage_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, stage_dir / name)


def gathered_state_dict(accelerator, model):
    """Under ZeRO-3 or FSDP no rank holds the whole model: gather the full weights (every rank must call this;
    the result is complete on rank 0). None where the unwrapped model already holds them."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    zero3 = kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3
    if kind != DistributedType.FSDP and not zero3:
        return None
    return accelerator.get_state_dict(model)
