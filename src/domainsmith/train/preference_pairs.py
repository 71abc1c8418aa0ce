"""Preference pairs for a stage (dpo, rm): its pair files read, a held-out set split off, rejects written."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..data.preferences import read_preferences
from ..errors import DataError
from ..files import atomic_write_jsonl
from ..recipe import Recipe


def load_pairs(recipe: Recipe, stage, on_bad_record: str) -> tuple[list, list, list]:
    """(training pairs, held-out pairs, rejects). Held-out prompts that also occur in training are dropped from
    training (a pair must not be trained on and scored)."""
    train, rejects = [], []
    for path in stage.pairs:
        read = read_preferences(recipe.resolve(path), on_bad_record)
        train += read.pairs
        rejects += read.rejects
    if stage.heldout is not None:
        read = read_preferences(recipe.resolve(stage.heldout), on_bad_record)
        heldout, rejects = read.pairs, rejects + read.rejects
    else:
        order = list(range(len(train)))
        random.Random(recipe.seed).shuffle(order)
        n = max(1, round(len(train) * stage.heldout_fraction))
        held = set(order[:n])
        heldout = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
    held_prompts = {json.dumps(p.prompt, sort_keys=True) for p in heldout}
    train = [p for p in train if json.dumps(p.prompt, sort_keys=True) not in held_prompts]
    if not train:
        raise DataError(recipe.resolve(stage.pairs[0]), "no training pairs are left after holding out pairs")
    return train, heldout, rejects


def write_rejects(stage_dir: Path, rejects: list) -> None:
    if rejects:
        rows = [{"source": r.source, "line": r.line, "reason": r.reason, "record": r.record} for r in rejects]
        atomic_write_jsonl(stage_dir / "rejects.jsonl", rows)
