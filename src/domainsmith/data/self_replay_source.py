"""The `source: self` data source: general instruction pairs sampled from the recipe's model (self_replay.py),
written once as an alpaca file that `data prepare` then cleans and deduplicates like any other source."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..files import atomic_write_text, json_sha256
from ..recipe import Recipe


def self_replay_file(recipe: Recipe, n: int, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """Path of an alpaca JSONL with up to `n` self-sampled pairs; sampled only when no file for these inputs
    exists. Eval questions are excluded from the sampled prompts."""
    from ..evaluate.suites import load_suites
    from ..model_loading import load_for_inference
    from ..models import resolve_model
    from .self_replay import self_replay_pairs

    model_path = resolve_model(recipe.model, on_convert=log)
    questions = [item.question for items in load_suites(recipe).questions().values() for item in items]
    key = json_sha256({"model": recipe.model, "path": model_path, "n": n, "seed": recipe.seed, "exclude": questions})
    path = cache_dir / f"self-replay-{key[:16]}.jsonl"
    if path.is_file():
        log(f"self-replay: reusing {path.name}")
        return path
    log(f"self-replay: sampling {n} general instructions from {recipe.model} (Magpie-style)")
    tokenizer, model = load_for_inference(recipe.model, on_convert=log)
    pairs = self_replay_pairs(model, tokenizer, n, recipe.seed, exclude=questions)
    if not pairs:
        from ..errors import DomainsmithError

        raise DomainsmithError(
            f"self-replay: {recipe.model} produced no complete instruction pairs; is it an instruction-tuned chat "
            "model? (the pre-query prefix of its chat template must make it write a user turn)"
        )
    rows = [json.dumps({"instruction": p.instruction, "output": p.output}, ensure_ascii=False) for p in pairs]
    atomic_write_text(path, "\n".join(rows) + "\n")
    log(f"self-replay: kept {len(pairs)} of {n} requested pairs (complete, distinct, not eval questions)")
    return path
