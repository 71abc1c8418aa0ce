"""An `rm` stage: a reward model on preference pairs (TRL's RewardTrainer), with a length-hacking alarm.

The model is the stage's input model with a scalar head (AutoModelForSequenceClassification, one label), trained
so that reward(prompt + chosen) > reward(prompt + rejected). On the held-out pairs it reports pairwise accuracy
before and after, and the correlation of the reward with the reply's length over every held-out reply: a reward
model that mostly measures length invites a policy to grow its answers instead of improving them (reward
hacking), so a |correlation| above `length_alarm` is flagged in the metrics and the log.
Output: <stage>/model, a full sequence-classification model (LoRA is merged), ready to score or to serve as a
reward for RL.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data.preferences import PreferencePair, accuracy_by_category
from ..errors import DomainsmithError
from ..precision import use_bf16
from ..recipe import Recipe, RewardModelStage
from .outputs import gathered_state_dict
from .preference_pairs import stage_callbacks, stage_pairs, train_resuming, trainer_settings


@dataclass
class RewardModelResult:
    artifact: str
    metrics: dict


def reward_scores(model, tokenizer, texts_ids: list[list[int]], bf16: bool, batch_size: int = 8) -> list[float]:
    """The scalar reward of each token sequence (right-padded batches; the head reads the last real token)."""
    import torch

    from ..evaluate.token_scoring import eval_mode, model_device, pad_token_id
    from ..infer.generation import autocast_bf16

    pad = pad_token_id(tokenizer)
    out: list[float] = []
    device = model_device(model)
    with eval_mode(model), torch.inference_mode(), autocast_bf16(bf16):
        for start in range(0, len(texts_ids), batch_size):
            rows = texts_ids[start : start + batch_size]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out += logits.float().squeeze(-1).cpu().tolist()
    return out


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def score_pairs(model, tokenizer, pairs: list[PreferencePair], max_len: int, bf16: bool) -> dict:
    """Held-out pairwise accuracy, mean margin, and the reward-length correlation over every reply."""
    from ..data.chat_format import conversation_ids

    def ids(pair: PreferencePair, reply: str) -> list[int]:
        return conversation_ids(tokenizer, [*pair.prompt, {"role": "assistant", "content": reply}])[-max_len:]

    chosen = reward_scores(model, tokenizer, [ids(p, p.chosen) for p in pairs], bf16)
    rejected = reward_scores(model, tokenizer, [ids(p, p.rejected) for p in pairs], bf16)
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for p in pairs for r in (p.chosen, p.rejected)]
    rewards = [r for pair in zip(chosen, rejected, strict=True) for r in pair]
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    result = {
        "pairs": len(pairs),
        "accuracy": sum(wins) / len(pairs),
        "margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(pairs),
        "reward_length_correlation": pearson(rewards, [float(n) for n in lengths]),
    }
    by_category = accuracy_by_category(pairs, wins)
    if by_category is not None:
        result["by_category"] = by_category
    return result


def run_reward_model(
    recipe: Recipe,
    stage: RewardModelStage,
    model_path: str,
    stage_dir: Path,
    on_bad_record: str = "fail",
    show_progress: bool = True,
    log=print,
) -> RewardModelResult:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from ..files import replace_dir
    from ..model_loading import load_tokenizer
    from .finetuning import count_parameters, lora_config

    train_pairs, heldout, rejects = stage_pairs(recipe, stage, stage_dir, on_bad_record)
    tokenizer = load_tokenizer(model_path)
    bf16 = use_bf16(stage.precision)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if stage.finetuning == "lora":
        # SEQ_CLS makes PEFT train the new score head in full next to the adapters.
        peft_config = lora_config(model, stage.lora, task_type="SEQ_CLS")
    before = score_pairs(model, tokenizer, heldout, stage.max_seq_len, bf16)

    ckpt_dir = stage_dir / "checkpoints"
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(**trainer_settings(recipe, stage, ckpt_dir, bf16)),
        train_dataset=Dataset.from_list([p.as_trl() for p in train_pairs]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=stage_callbacks(stage_dir, f"rm:{stage.name}", show_progress),
    )
    output, resume, train_seconds = train_resuming(trainer, stage_dir, ckpt_dir)

    trained = trainer.model
    after = score_pairs(trained, tokenizer, heldout, stage.max_seq_len, bf16)
    alarm = abs(after["reward_length_correlation"]) > stage.length_alarm
    warning = f"; LENGTH-HACKING ALARM: above {stage.length_alarm}, the reward mostly measures length"
    log(
        f"stage '{stage.name}': held-out pairwise accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}; "
        f"reward-length correlation {after['reward_length_correlation']:+.2f}" + (warning if alarm else "")
    )
    if "by_category" in after:
        log(f"stage '{stage.name}': held-out accuracy by category: " + ", ".join(
            f"{name} {c['accuracy']:.1%} ({c['pairs']})" for name, c in after["by_category"].items()))  # fmt: skip
    params = count_parameters(trained)  # before merging, which folds the adapters away
    state_dict = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)
    if state_dict is not None and peft_config is not None:
        raise DomainsmithError(
            f"stage '{stage.name}': a LoRA reward model is saved merged, which needs the whole model in one process; "
            "train it under DDP (configs/accelerate/ddp.yaml) or with finetuning: full"
        )
    if trainer.is_world_process_zero():
        full = trained.merge_and_unload() if peft_config is not None else trained
        tmp = stage_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        full.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, stage_dir / "model")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    metrics = {
        "finetuning": stage.finetuning,
        "precision": "bf16" if bf16 else "fp32",
        "parameters": params,
        "pairs": {"train": len(train_pairs), "heldout": len(heldout), "rejected": len(rejects)},
        "heldout_before": before,
        "heldout_after": after,
        "length_alarm": {"threshold": stage.length_alarm, "fired": alarm},
        "train_loss": output.training_loss,
        "steps": output.global_step,
        "resumed_from": resume,
        "train_seconds": round(train_seconds, 1),
    }
    return RewardModelResult("model", metrics)
