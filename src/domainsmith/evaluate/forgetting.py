"""Drift from the base model on general prompts: mean per-token KL(base || variant), per trained variant.

Accuracy on a general probe only moves when an answer flips; KL moves with every change to the distribution, so it
shows forgetting early and on items the probe does not cover. The sequences are the general QA suites' questions
(closed book, with each suite's system prompt) followed by the base model's own answers from the same evaluation,
so no extra generation is needed and the KL is measured on text the base model itself produces (the gold answer
stands in where the base reply was empty).
"""

from __future__ import annotations

from collections.abc import Callable

from ..files import atomic_write_json, json_sha256, read_if_current
from ..recipe import QASuite, Recipe
from .modes import mode_prompts
from .suites import LoadedSuites

Log = Callable[[str], None]


def kl_from_base(recipe: Recipe, variants: list, suites: LoadedSuites, scored: dict, log: Log, show_progress) -> dict:
    """{variant name: {"kl_per_token", "tokens", "sequences", ...}} for every variant after the base."""
    if recipe.eval.kl_prompts == "none" or len(variants) < 2:
        return {}
    general = [s for s in recipe.eval.suites if isinstance(s, QASuite) and s.role == "general" and s.runs_in("closed")]
    base = variants[0]
    if not general or base.name not in scored:
        if general:
            log("forgetting KL: skipped (the base model was not evaluated closed-book)")
        return {}
    chats, answers = [], []
    for suite in general:
        predictions = {r["id"]: r["prediction"] for r in scored[base.name][suite.name]["items"]}
        items = suites.qa[suite.name]
        chats += mode_prompts("closed", items, None, None, suite.system)[0]  # the prompts the base model answered
        answers += [predictions.get(it.id, "").strip() or it.answers[0] for it in items]  # an empty reply: the gold
    if not chats:
        return {}
    from ..code_version import results_code_version
    from ..precision import use_bf16

    bf16 = use_bf16("auto")
    prompts_fp = json_sha256([chats, answers])
    code = results_code_version()
    out = {}
    for variant in variants[1:]:
        fp = json_sha256(
            {
                "base": base.fingerprint,
                "variant": variant.fingerprint,
                "prompts": prompts_fp,
                "bf16": bf16,
                "code": code,
            }
        )
        cache = recipe.out_dir / "eval" / f"{variant.name}.kl.json"
        cached = read_if_current(cache, fp)
        if cached is not None:
            log(f"forgetting KL '{variant.name}': up to date, reusing {cache}")
            out[variant.name] = cached["kl"]
            continue
        result = _measure(base, variant, chats, answers, recipe.eval.batch_size, bf16, show_progress)
        result["suites"] = [s.name for s in general]
        atomic_write_json(cache, {"fingerprint": fp, "kl": result})
        log(f"forgetting KL '{variant.name}': {result['kl_per_token']:.4f} nats/token over {result['tokens']} tokens")
        out[variant.name] = result
    return out


def _measure(base, variant, chats, answers, batch_size: int, bf16: bool, show_progress: bool) -> dict:
    from ..evaluation import progress_bar
    from ..model_loading import load_causal_lm, load_tokenizer
    from .kl_divergence import chat_sequences, mean_token_kl

    tokenizer = load_tokenizer(base.model_path, padding_side="right")
    sequences = chat_sequences(tokenizer, chats, answers)
    if variant.adapter is not None and variant.model_path == base.model_path:
        # The adapter switched off is the base model: one copy of the weights in memory (matters at 7B+).
        tuned, reference = load_causal_lm(variant.model_path, adapter=variant.adapter), None
    else:
        tuned = load_causal_lm(variant.model_path, adapter=variant.adapter, merge=True)
        reference = load_causal_lm(base.model_path)
    with progress_bar(f"KL base -> {variant.name}", len(sequences), show_progress) as advance:
        return mean_token_kl(tuned, tokenizer, sequences, reference, batch_size, bf16, advance)
