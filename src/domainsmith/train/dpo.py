"""A `dpo` stage: direct preference optimization on TRL's DPOTrainer, with the guards a preference run needs.

- The reference is the stage's input model. With LoRA, TRL computes it with the adapter switched off (one copy
  of the weights); with full training it is a second, frozen copy.
- Held-out pairs (the stage's `heldout` file, else a seeded slice of `pairs`) are scored before and after: the
  implicit-reward accuracy (beta x log-ratio to the reference, chosen above rejected) that DPO optimizes, and the
  plain log-likelihood preference of the policy (sum log p(chosen) > sum log p(rejected)), which is meaningful
  before training too (the implicit reward is zero for every reply while the policy equals its reference).
- Reference-free losses, on TRL's experimental trainers: `orpo` (Hong et al. 2024, ORPOTrainer), the SFT loss on
  the chosen reply plus `beta` times an odds-ratio penalty on the rejected one; `simpo` (Meng et al. 2024,
  CPOTrainer), length-normalized log-likelihood margins scaled by `beta` against a target margin `simpo_gamma`.
  The guards still measure against the stage's input model (with full training, a frozen copy kept for them).
- Drift: every `kl.every` steps, the mean per-token KL(reference || policy) on the held-out prompts and chosen
  replies; over `kl.ceiling` it warns or stops the run (the weights so far are kept). Every measure goes to
  kl.jsonl and the manifest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data.preferences import PreferencePair
from ..errors import DataError
from ..precision import use_bf16
from ..recipe import DPOStage, Recipe
from .kl_guard import KLGuard, resumed_measures
from .outputs import gathered_state_dict, save_stage_outputs
from .preference_pairs import stage_callbacks, stage_pairs, train_resuming, trainer_settings

REFERENCE_FREE_LOSSES = ("orpo", "simpo")


@dataclass
class DPOResult:
    artifact: str
    metrics: dict


def _sequences(tokenizer, pairs: list[PreferencePair], reply: str, max_len: int) -> list[tuple[list[int], int]]:
    """(input ids, first reply token) of prompt + reply, rendered with the model's chat template."""
    from ..data.chat_format import conversation_ids, prompt_ids

    out = []
    for pair in pairs:
        prompt = prompt_ids(tokenizer, pair.prompt)
        full = conversation_ids(tokenizer, [*pair.prompt, {"role": "assistant", "content": getattr(pair, reply)}])
        full = full[:max_len]
        if len(prompt) < len(full):
            out.append((full, len(prompt)))
    return out


def preference_scores(model, tokenizer, pairs: list[PreferencePair], max_len: int, bf16: bool, reference=None):
    """Per pair: summed log-likelihood of chosen and rejected under `model`, and under `reference` when given
    (None with a PEFT model: the adapter switched off). Returns accuracies and the mean margin."""
    chosen = _sequences(tokenizer, pairs, "chosen", max_len)
    rejected = _sequences(tokenizer, pairs, "rejected", max_len)
    if len(chosen) != len(rejected) or not chosen:
        raise DataError(pairs[0].source, "held-out pairs must have reply tokens within max_seq_len")
    policy_c, policy_r = (sequence_logprobs(model, tokenizer, s, bf16=bf16) for s in (chosen, rejected))
    result = {
        "pairs": len(chosen),
        "loglik_accuracy": sum(c > r for c, r in zip(policy_c, policy_r, strict=True)) / len(chosen),
    }
    if reference is not None or _is_peft(model):
        ref_c, ref_r = (
            sequence_logprobs(reference, tokenizer, s, bf16=bf16) if reference is not None
            else _with_adapter_off(model, lambda s=s: sequence_logprobs(model, tokenizer, s, bf16=bf16))
            for s in (chosen, rejected)
        )  # fmt: skip
        margins = [(pc - rc) - (pr - rr) for pc, rc, pr, rr in zip(policy_c, ref_c, policy_r, ref_r, strict=True)]
        result["implicit_reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        result["implicit_reward_margin"] = sum(margins) / len(margins)  # in log-ratio units (x beta = reward)
    return result


def sequence_logprobs(model, tokenizer, sequences, bf16: bool) -> list[float]:
    """Summed log-probability of each sequence's tokens from its `score_from` on."""
    from ..evaluate.token_scoring import pad_token_id, score_requests

    rows = [ids for ids, _ in sequences]
    counts = [len(ids) - start for ids, start in sequences]
    scores = score_requests(model, rows, counts, list(range(len(rows))), pad_token_id(tokenizer), 8, bf16, None)
    return [sum(s) for s in scores]


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _with_adapter_off(model, fn):
    with model.disable_adapter():
        return fn()


def run_dpo(
    recipe: Recipe,
    stage: DPOStage,
    model_path: str,
    stage_dir: Path,
    on_bad_record: str = "fail",
    show_progress: bool = True,
    log=print,
) -> DPOResult:
    from datasets import Dataset

    from ..model_loading import load_causal_lm, load_tokenizer
    from .finetuning import count_parameters, lora_config

    train_pairs, heldout, rejects = stage_pairs(recipe, stage, stage_dir, on_bad_record)
    tokenizer = load_tokenizer(model_path)
    bf16 = use_bf16(stage.precision)
    model = load_causal_lm(model_path, trainable=True)
    reference = None
    peft_config = None
    if stage.finetuning == "lora":
        peft_config = lora_config(model, stage.lora)
    else:
        reference = load_causal_lm(model_path)
        reference.requires_grad_(False)

    before = preference_scores(model, tokenizer, heldout, stage.max_seq_len, bf16)
    log(f"stage '{stage.name}': {len(train_pairs)} training pairs, {len(heldout)} held out; before: log-likelihood "
        f"prefers chosen in {before['loglik_accuracy']:.1%}")  # fmt: skip

    ckpt_dir = stage_dir / "checkpoints"
    settings = {**trainer_settings(recipe, stage, ckpt_dir, bf16), "beta": stage.beta}
    kl_sequences = _sequences(tokenizer, heldout, "chosen", stage.max_seq_len)
    # Reference-free trainers hold no reference, so the guards get ours (None with LoRA: the adapter switched off).
    reference_free = stage.loss_type in REFERENCE_FREE_LOSSES
    kl_guard = KLGuard(stage, tokenizer, kl_sequences, bf16, stage_dir / "kl.jsonl", log, recipe.seed,
                       reference if reference_free else None)  # fmt: skip
    common = {
        "model": model,
        "train_dataset": Dataset.from_list([p.as_trl() for p in train_pairs]),
        "processing_class": tokenizer,
        "peft_config": peft_config,
        "callbacks": [*stage_callbacks(stage_dir, f"dpo:{stage.name}", show_progress), kl_guard],
    }
    if stage.loss_type == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(args=ORPOConfig(**settings), **common)
    elif stage.loss_type == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**settings, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=stage.simpo_gamma)
        trainer = CPOTrainer(args=args, **common)
    else:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**settings, per_device_eval_batch_size=stage.batch_size, loss_type=stage.loss_type)
        trainer = DPOTrainer(ref_model=reference, args=args, **common)
    kl_guard.trainer = trainer
    output, resume, train_seconds = train_resuming(trainer, stage_dir, ckpt_dir, ("loss.jsonl", "kl.jsonl"))
    if resume:
        resumed_measures(kl_guard, stage_dir / "kl.jsonl")

    policy = trainer.model
    after = preference_scores(policy, tokenizer, heldout, stage.max_seq_len, bf16,
                              reference=reference if reference_free else trainer.ref_model)  # fmt: skip
    log(f"stage '{stage.name}': held out after: implicit-reward accuracy {after['implicit_reward_accuracy']:.1%}, "
        f"log-likelihood prefers chosen in {after['loglik_accuracy']:.1%}")  # fmt: skip
    artifact = "adapter" if stage.finetuning == "lora" else "model"
    state_dict = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)
    if trainer.is_world_process_zero():
        save_stage_outputs(policy, tokenizer, stage, stage_dir, artifact, state_dict)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    metrics = {
        "finetuning": stage.finetuning,
        "loss_type": stage.loss_type,
        "beta": stage.beta,
        "precision": "bf16" if bf16 else "fp32",
        "parameters": count_parameters(policy),
        "pairs": {"train": len(train_pairs), "heldout": len(heldout), "rejected": len(rejects)},
        "heldout_before": before,
        "heldout_after": after,
        "kl": {"measured": kl_guard.rows, "ceiling": stage.kl.ceiling, "event": kl_guard.fired},
        "train_loss": output.training_loss,
        "steps": output.global_step,
        "resumed_from": resume,
        "train_seconds": round(train_seconds, 1),
    }
    return DPOResult(artifact, metrics)
