"""Training checkpoints through accelerate (model, optimizer, scheduler, RNG states of every rank; sharded under
DeepSpeed / FSDP) plus our trainer state (step, data position, spike-guard history, LR scale, skipped batches).

A checkpoint is written to a temp dir and renamed when complete, so a crash mid-save leaves the previous one;
only the last `keep` are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from ..files import atomic_write_json

TRAINER_STATE = "trainer_state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_STATE).is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with _quiet_accelerate():
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / TRAINER_STATE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states from `path`; return its trainer state."""
    with _quiet_accelerate():
        accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text())


@contextlib.contextmanager
def _quiet_accelerate():
    """accelerate logs every file it writes and warns about tied embeddings at each save: noise in a long run."""
    loggers = [logging.getLogger(name) for name in ("accelerate", "accelerate.checkpointing", "accelerate.accelerator")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
