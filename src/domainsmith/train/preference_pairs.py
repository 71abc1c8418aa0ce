"""What the preference and RL stages (rm, dpo, grpo) share: their data read and split into training and held-out
sets, rejects written, and the TRL trainer set up and run (settings, callbacks, resume)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..data.preferences import read_preferences
from ..errors import DataError
from ..files import atomic_write_jsonl
from ..recipe import Recipe


def _read_pairs(path: Path, on_bad_record: str) -> tuple[list, list]:
    read = read_preferences(path, on_bad_record)
    return read.pairs, read.rejects


def load_split(recipe: Recipe, files: list[Path], heldout_file: Path | None, heldout_fraction: float, read,
               on_bad_record: str) -> tuple[list, list, list]:  # fmt: skip
    """(training items, held-out items, rejects) of records that have a `.prompt`: `read(path, on_bad_record)`
    gives (items, rejects) per file. Without a held-out file a seeded `heldout_fraction` is held out. Held-out
    prompts that also occur in training are dropped from training (an item must not be trained on and scored)."""
    train, rejects = [], []
    for path in files:
        items, bad = read(recipe.resolve(path), on_bad_record)
        train += items
        rejects += bad
    if heldout_file is not None:
        heldout, bad = read(recipe.resolve(heldout_file), on_bad_record)
        rejects += bad
    else:
        order = list(range(len(train)))
        random.Random(recipe.seed).shuffle(order)
        n = max(1, round(len(train) * heldout_fraction))
        held = set(order[:n])
        heldout = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
    held_prompts = {json.dumps(p.prompt, sort_keys=True) for p in heldout}
    train = [p for p in train if json.dumps(p.prompt, sort_keys=True) not in held_prompts]
    if not train:
        raise DataError(recipe.resolve(files[0]), "nothing is left to train on after holding out items")
    return train, heldout, rejects


def write_rejects(stage_dir: Path, rejects: list) -> None:
    if rejects:
        rows = [{"source": r.source, "line": r.line, "reason": r.reason, "record": r.record} for r in rejects]
        atomic_write_jsonl(stage_dir / "rejects.jsonl", rows)


def trainer_settings(recipe: Recipe, stage, ckpt_dir: Path, bf16: bool) -> dict:
    """TrainingArguments fields an rm or dpo stage sets the same way (TRL's configs take them all)."""
    import torch

    return {
        "output_dir": str(ckpt_dir),
        "use_cpu": not torch.cuda.is_available(),
        "bf16": bf16,  # TRL's configs default to bf16 even on CPU: always say
        "num_train_epochs": stage.epochs,
        "per_device_train_batch_size": stage.batch_size,
        "gradient_accumulation_steps": stage.grad_accum,
        "learning_rate": stage.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": stage.warmup_ratio,
        "max_grad_norm": stage.max_grad_norm,
        "max_length": stage.max_seq_len,
        "activation_checkpointing": False,  # TRL turns it on by default
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": stage.save_steps,
        "save_total_limit": 2,
        "report_to": [],
        "disable_tqdm": True,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
    }


def stage_callbacks(stage_dir: Path, label: str, show_progress: bool) -> list:
    from .callbacks import JsonlLossLogger, RichProgress

    return [JsonlLossLogger(stage_dir / "loss.jsonl")] + ([RichProgress(label)] if show_progress else [])


def train_resuming(trainer, stage_dir: Path, ckpt_dir: Path, logs: tuple[str, ...] = ("loss.jsonl",)):
    """Train from the last checkpoint if one exists (rows logged after it are dropped: they are trained again);
    return (TrainOutput, the checkpoint resumed from or None, seconds)."""
    import time

    from transformers.trainer_callback import PrinterCallback

    from .sft import _drop_logged_steps_after, _last_checkpoint

    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; loss.jsonl and the progress bar replace it
    resume = _last_checkpoint(ckpt_dir)
    if resume is not None:
        for name in logs:
            _drop_logged_steps_after(stage_dir / name, int(Path(resume).name.rsplit("-", 1)[-1]))
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume)
    return output, resume, time.time() - started


def stage_pairs(recipe: Recipe, stage, stage_dir: Path, on_bad_record: str, files: list[Path] | None = None,
                read=_read_pairs) -> tuple[list, list, list]:  # fmt: skip
    """A preference or RL stage's start: seeded, its dir made, its items (default: the stage's preference pairs)
    loaded and split, rejects written."""
    from transformers import set_seed

    set_seed(recipe.seed)
    stage_dir.mkdir(parents=True, exist_ok=True)
    files = stage.pairs if files is None else files
    train, heldout, rejects = load_split(recipe, files, stage.heldout, stage.heldout_fraction, read, on_bad_record)
    write_rejects(stage_dir, rejects)
    return train, heldout, rejects
