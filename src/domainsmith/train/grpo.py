"""A `grpo` stage: RL with verifiable rewards on TRL's GRPOTrainer, with the guards an RL run needs.

For each training prompt the policy samples `num_generations` completions; the rewards (exact match, contains,
regex against the gold answers, a reward model, or the user's own function) score them, and each completion's
advantage is its reward against its group's mean. What is measured:
- Held-out prompts (the stage's `heldout` file, else a seeded slice) answered greedily before and after and scored
  like a QA suite (accuracy, exact match, F1, items learned and forgotten); every answer goes to
  heldout_answers.jsonl.
- Each reward per step (loss.jsonl, from TRL's logs) and, over every sampled completion, its correlation with the
  completion's length: above `length_alarm` the policy is being paid for length (a reward-hacking alarm).
- Drift: KL(reference || policy) on the held-out prompts with their gold answers every `kl.every` steps, with a
  ceiling that warns or stops (kl.jsonl), as in the dpo stage.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data.verifiable import VerifiablePrompt, read_verifiable
from ..errors import DomainsmithError
from ..precision import use_bf16
from ..recipe import GRPOStage, Recipe
from .kl_guard import KLGuard, resumed_measures
from .outputs import gathered_state_dict, save_stage_outputs
from .preference_pairs import stage_callbacks, stage_pairs, train_resuming, trainer_settings
from .rewards import RewardLog, build_rewards


@dataclass
class GRPOResult:
    artifact: str
    metrics: dict


def _read_prompts(path: Path, on_bad_record: str) -> tuple[list, list]:
    read = read_verifiable(path, on_bad_record)
    return read.prompts, read.rejects


def heldout_answers(model, tokenizer, prompts: list[VerifiablePrompt], stage: GRPOStage, bf16: bool) -> dict:
    """Greedy answers to the held-out prompts, scored against their gold answers as a QA suite scores them."""
    from ..evaluate.qa_suite import QAItem, score_qa

    items = [QAItem(f"{Path(p.source).name}:{p.line}", p.prompt[-1]["content"], p.answers) for p in prompts]
    return score_qa(model, tokenizer, items, stage.match, stage.max_completion_length, bf16=bf16,
                    chats=[p.prompt for p in prompts])  # fmt: skip


def _unsolved(model, tokenizer, prompts: list[VerifiablePrompt], stage: GRPOStage, bf16: bool) -> list[int]:
    """Indices of the prompts the model answers wrong (greedy). Every rank must train on the same prompts, so the
    main process's answers decide (kernels may differ in the last bit across devices)."""
    from accelerate.utils import broadcast_object_list

    scored = heldout_answers(model, tokenizer, prompts, stage, bf16)
    decided = [[i for i, item in enumerate(scored["items"]) if not item["correct"]]]
    broadcast_object_list(decided, from_process=0)
    return decided[0]


def _summary(scored: dict) -> dict:
    return {k: scored[k] for k in ("accuracy", "correct", "n", "exact_match", "f1")}


def _reward_curve(loss_log: Path, names: list[str]) -> dict[str, list]:
    """Each reward's batch mean per logged generation step (TRL logs rewards/<name>/mean), and the weighted total."""
    rows = [json.loads(line) for line in loss_log.read_text().splitlines()] if loss_log.is_file() else []
    rows = [r for r in rows if r.get("reward") is not None]
    curve = {"step": [r["step"] for r in rows], "total": [r["reward"] for r in rows]}
    for name in names:
        curve[name] = [r.get(f"rewards/{name}/mean") for r in rows]
    return curve


def run_grpo(
    recipe: Recipe,
    stage: GRPOStage,
    model_path: str,
    stage_dir: Path,
    on_bad_record: str = "fail",
    show_progress: bool = True,
    log=print,
) -> GRPOResult:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ..evaluate.kl_divergence import chat_sequences
    from ..evaluate.qa_suite import paired_flips
    from ..model_loading import load_causal_lm, load_tokenizer
    from .finetuning import count_parameters, lora_config

    train, heldout, rejects = stage_pairs(recipe, stage, stage_dir, on_bad_record, stage.prompts, _read_prompts)
    train = [p.with_system(stage.system) for p in train]
    heldout = [p.with_system(stage.system) for p in heldout]
    tokenizer = load_tokenizer(model_path)
    bf16 = use_bf16(stage.precision)
    model = load_causal_lm(model_path, trainable=True)
    peft_config = lora_config(model, stage.lora) if stage.finetuning == "lora" else None
    reference = None
    if stage.finetuning == "full" and stage.beta == 0:  # TRL keeps no reference then; the KL guard needs one
        reference = load_causal_lm(model_path)
        reference.requires_grad_(False)

    solved = None
    if stage.drop_solved:
        unsolved = _unsolved(model, tokenizer, train, stage, bf16)
        solved = len(train) - len(unsolved)
        train = [train[i] for i in unsolved]
        log(f"stage '{stage.name}': the start model already answers {solved} training prompts; training on the "
            f"other {len(train)}")  # fmt: skip
        if not train:
            raise DomainsmithError(f"stage '{stage.name}': every training prompt is already solved; nothing to learn")
    before = heldout_answers(model, tokenizer, heldout, stage, bf16)
    log(f"stage '{stage.name}': {len(train)} training prompts x {stage.num_generations} samples, {len(heldout)} "
        f"held out; before: held-out accuracy {before['accuracy']:.1%}")  # fmt: skip

    reward_log = RewardLog(stage_dir / "rewards.jsonl")
    rewards = build_rewards(recipe, stage, reward_log, bf16)
    ckpt_dir = stage_dir / "checkpoints"
    settings = trainer_settings(recipe, stage, ckpt_dir, bf16)
    del settings["max_length"]  # GRPO bounds the completions instead (prompts are never cut)
    settings["per_device_train_batch_size"] = stage.batch_size * stage.num_generations  # TRL counts completions
    args = GRPOConfig(
        **settings,
        num_generations=stage.num_generations,
        max_completion_length=stage.max_completion_length,
        temperature=stage.temperature,
        beta=stage.beta,
        loss_type=stage.loss_type,
        reward_weights=[r.weight for r in stage.rewards],
    )
    kl_sequences = chat_sequences(tokenizer, [p.prompt for p in heldout], [p.answers[0] for p in heldout])
    kl_guard = KLGuard(stage, tokenizer, kl_sequences, bf16, stage_dir / "kl.jsonl", log, recipe.seed, reference)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p.prompt, "answers": p.answers} for p in train]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[*stage_callbacks(stage_dir, f"grpo:{stage.name}", show_progress), kl_guard],
    )
    kl_guard.trainer = trainer
    logs = ("loss.jsonl", "kl.jsonl", "rewards.jsonl")
    output, resume, train_seconds = train_resuming(trainer, stage_dir, ckpt_dir, logs)
    if resume:
        resumed_measures(kl_guard, stage_dir / "kl.jsonl")

    policy = trainer.model
    after = heldout_answers(policy, tokenizer, heldout, stage, bf16)
    names = [r.__name__ for r in rewards]
    correlations = reward_log.length_correlations()
    hacked = [
        name for name, c in correlations.items()
        if max(abs(c["length_correlation"] or 0), abs(c["late_length_correlation"] or 0)) > stage.length_alarm
    ]  # fmt: skip
    log(f"stage '{stage.name}': held-out accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}"
        + "".join(f"; {n} vs length {c['length_correlation']:+.2f}" for n, c in correlations.items()
                  if c["length_correlation"] is not None)
        + (f"; LENGTH-HACKING ALARM on {', '.join(hacked)}: above {stage.length_alarm}" if hacked else ""))  # fmt: skip
    artifact = "adapter" if stage.finetuning == "lora" else "model"
    state_dict = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)
    if trainer.is_world_process_zero():
        rows = [{"id": b["id"], "question": b["question"], "gold": b["gold"], "before": b["prediction"],
                 "after": a["prediction"], "correct_before": b["correct"], "correct_after": a["correct"]}
                for b, a in zip(before["items"], after["items"], strict=True)]  # fmt: skip
        from ..files import atomic_write_jsonl

        atomic_write_jsonl(stage_dir / "heldout_answers.jsonl", rows)
        save_stage_outputs(policy, tokenizer, stage, stage_dir, artifact, state_dict)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    metrics = {
        "finetuning": stage.finetuning,
        "loss_type": stage.loss_type,
        "beta": stage.beta,
        "num_generations": stage.num_generations,
        "precision": "bf16" if bf16 else "fp32",
        "parameters": count_parameters(policy),
        "prompts": {"train": len(train), "heldout": len(heldout), "rejected": len(rejects), "dropped_solved": solved},
        "heldout_before": _summary(before),
        "heldout_after": _summary(after),
        "heldout_flips": paired_flips(before, after),
        "rewards": {
            name: {"kind": r.kind, "weight": r.weight, **correlations.get(name, {})}
            for name, r in zip(names, stage.rewards, strict=True)
        },
        "reward_curve": _reward_curve(stage_dir / "loss.jsonl", names),
        "length_alarm": {"threshold": stage.length_alarm, "fired": bool(hacked), "rewards": hacked},
        "kl": {"measured": kl_guard.rows, "ceiling": stage.kl.ceiling, "event": kl_guard.fired},
        "train_loss": output.training_loss,
        "steps": output.global_step,
        "resumed_from": resume,
        "train_seconds": round(train_seconds, 1),
    }
    return GRPOResult(artifact, metrics)
