"""One proxy run: continued pretraining from the start model on `budget` tokens at one domain share, then general
and domain validation loss (nats per token). Every share trains from the same start, on the same budget, with the
same stage settings; only the mix differs. The run is the ordinary pt/cpt loop (pretrain.py), so it checkpoints and
an interrupted share resumes where it stopped."""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.mixing import draw_order
from ..errors import DomainsmithError
from ..precision import use_bf16
from ..recipe import MixSearchSettings, PretrainStage, Recipe
from .pool import ROLES, Pool


def proxy_stage(recipe: Recipe, settings: MixSearchSettings) -> PretrainStage:
    """The recipe's cpt stage (named by mix_search.stage, else its first cpt stage, else cpt defaults), one pass
    over each proxy's budget."""
    if settings.stage is not None:
        base = recipe.stage(settings.stage)
        if not isinstance(base, PretrainStage) or base.type != "cpt":
            raise DomainsmithError(f"mix_search.stage '{settings.stage}' is not a cpt stage")
    else:
        base = next((s for s in recipe.stages if isinstance(s, PretrainStage) and s.type == "cpt"), None)
    stage = base or PretrainStage(type="cpt")
    # One pass in the blended order that mixed_documents lays out.
    return stage.model_copy(
        update={"name": "proxy", "epochs": 1.0, "max_steps": None, "merge": False, "shuffle": False}
    )


def mixed_documents(pool: Pool, ratio: float, budget: int, seed: int) -> tuple[list[str], dict]:
    """`budget` training tokens, `ratio` of them domain, in training order: each role's documents repeated or
    subsampled to its share, then blended so both roles run evenly through the whole run.

    The draw is nested: a role's documents are drawn in one seeded order that does not depend on the share, so a
    smaller share's documents are a prefix of a larger one's (common random numbers). The blend places every
    document at the middle of its span in its own role's stream, as a fraction of that stream, and trains in that
    order (the proxy stage does not shuffle): every stretch of the run holds about `ratio` domain tokens, and a
    document's place in the schedule moves smoothly with the share. With a random order, where the few domain
    documents of a small share happened to land (early, at the peak learning rate, or late) moved the domain loss
    as much as which documents they were (README). Other seeds draw other orders: the run-to-run spread."""
    placed: list[tuple[float, int, str]] = []
    report = {}
    for index, role in enumerate(ROLES):
        share = ratio if role == "domain" else 1 - ratio
        counts = pool.train_tokens[role]
        drawn = draw_order(counts, budget * share, np.random.default_rng([seed, index]))
        lengths = counts[drawn]
        total = int(lengths.sum())
        middles = (np.cumsum(lengths) - lengths / 2) / max(total, 1)
        placed.extend((float(m), index, pool.train[role][d]) for m, d in zip(middles, drawn, strict=True))
        report[role] = {"tokens": total, "repeats": round(len(drawn) / len(counts), 3)}
    total = sum(r["tokens"] for r in report.values())
    for role in ROLES:
        report[role]["share"] = round(report[role]["tokens"] / total, 4) if total else 0.0
    placed.sort(key=lambda item: item[:2])
    return [text for _, _, text in placed], report


def validation_losses(model, tokenizer, pool: Pool, max_length: int, bf16: bool) -> dict[str, float]:
    """Mean negative log-likelihood per token of each role's validation documents."""
    from ..evaluate.perplexity import perplexity

    model.eval()
    return {
        f"{role}_loss": perplexity(model, tokenizer, pool.validation[role], max_length=max_length, bf16=bf16)[
            "nll_per_token"
        ]
        for role in ROLES
    }


def start_losses(model_path: str, tokenizer, pool: Pool, stage: PretrainStage) -> dict[str, float]:
    """The start model's validation losses: the reference the tolerance is measured against."""
    import torch

    from ..model_loading import load_causal_lm

    model = load_causal_lm(model_path)
    if torch.cuda.is_available():  # where the proxy runs measure too
        model.to("cuda")
    try:
        return validation_losses(model, tokenizer, pool, stage.max_seq_len, use_bf16(stage.precision))
    finally:
        del model
        gc.collect()


def run_proxy(
    model_path: str,
    tokenizer,
    pool: Pool,
    ratio: float,
    budget: int,
    stage: PretrainStage,
    seed: int,
    run_dir: Path,
    show_progress: bool,
    log,
    save: Callable[[dict], None],
) -> None:
    """Train one share and measure it; the main process hands the point to `save` before every process moves on
    (so all of them can read it). The run dir keeps only checkpoints while training, and no trained weights."""
    import torch
    from accelerate.utils import set_seed

    from ..model_loading import load_causal_lm
    from ..train.finetuning import prepare_trainable
    from ..train.packing import load_packed, pack_documents
    from ..train.pretrain import make_accelerator, remove_checkpoints, train_packed

    bf16 = use_bf16(stage.precision)
    accelerator = make_accelerator(stage, bf16)
    set_seed(seed)
    pack_dir = run_dir / "packed"
    mix_path = run_dir / "mix.json"
    if accelerator.is_main_process and load_packed(pack_dir) is None:
        from ..files import atomic_write_json

        pack_dir.mkdir(parents=True, exist_ok=True)
        texts, mix = mixed_documents(pool, ratio, budget, seed)
        atomic_write_json(mix_path, mix)  # before the pack, whose completion marks the share's data as ready
        pack_documents(texts, tokenizer, pack_dir, stage.max_seq_len, stage.packing)
    accelerator.wait_for_everyone()
    packed = load_packed(pack_dir)
    started = time.time()
    model = prepare_trainable(load_causal_lm(model_path, trainable=True), stage, seed)
    model, run = train_packed(accelerator, model, packed, stage, run_dir, seed, show_progress, log)
    # Every rank evaluates (the same documents): under ZeRO-3 or FSDP a forward needs every rank's shard, and
    # under DDP the other ranks would otherwise wait at the barrier for the whole evaluation.
    losses = validation_losses(model, tokenizer, pool, stage.max_seq_len, bf16)
    if accelerator.is_main_process:
        import json

        point = {
            "ratio": ratio,
            **losses,
            "mix": json.loads(mix_path.read_text()),
            "steps": run["steps"],
            "train_tokens": run["tokens"],
            "seconds": round(time.time() - started, 1),
        }
        save(point)
        remove_checkpoints(run_dir)
        shutil.rmtree(pack_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    # The accelerator holds the model and optimizer until freed: the next share must not find them in memory.
    accelerator.free_memory()
    del model, accelerator
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
