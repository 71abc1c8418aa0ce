"""Forgetting measured as drift from the base model: mean per-token KL(P_base || P_tuned) on chosen positions.

Accuracy on a general probe only moves when an answer flips; the KL divergence of the next-token distributions
on general text moves with every change, so it shows forgetting early and on few items. Scoring the base model's
own answers to general prompts asks "how much less would the tuned model say what the base model said".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from ..data.chat_format import prompt_ids
from ..infer.generation import autocast_bf16
from .token_scoring import OwnerProgress, eval_mode, forward_target_logits, length_batches, pad_token_id, row_chunks


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but the metric itself does not need it
        return False
    return isinstance(model, PeftModel)


def _kl_rows(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_base || P_tuned) per row in fp32, converting a bounded number of rows at a time."""
    out = torch.empty(base_logits.shape[0], dtype=torch.float32, device=base_logits.device)
    for rows in row_chunks(base_logits.shape[0], base_logits.shape[-1]):
        log_p = torch.log_softmax(base_logits[rows].float(), dim=-1)
        log_q = torch.log_softmax(tuned_logits[rows].float(), dim=-1)
        out[rows] = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return out


def mean_token_kl(
    tuned_model,
    tokenizer,
    sequences: Sequence[tuple[list[int], int]],
    base_model=None,
    batch_size: int = 8,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Mean KL(P_base || P_tuned) over the scored positions of `sequences`.

    Each sequence is `(input_ids, score_from)`: the next-token distributions that predict tokens
    `input_ids[score_from:]` are compared (e.g. the answer tokens after a chat prompt), so `score_from` must be at
    least 1 and below the length. The KL is taken under the base model's distribution, so it weighs the tokens the
    base model found likely.

    With `base_model=None` and a PEFT `tuned_model`, the base distribution comes from the same model inside
    `disable_adapter()`, which keeps one copy of the weights in memory. Otherwise `base_model` is required; it must
    share the tokenizer. Only the scored positions' logits are taken to fp32. Sequences are not truncated: keep
    them within the model's context length. `on_batch` receives the number of sequences finished per batch.

    Returns {"kl_per_token", "tokens", "sequences", "per_sequence"}; `kl_per_token` weighs every scored token
    equally, `per_sequence` is each sequence's own mean.
    """
    if base_model is None:
        if not _is_peft_model(tuned_model):
            raise ValueError(
                "base_model is required unless tuned_model is a PEFT model (then its adapter is disabled to get "
                "the base distribution)"
            )
    if not sequences:
        raise ValueError("no sequences to score")
    rows: list[list[int]] = []
    n_targets: list[int] = []
    for i, (ids, score_from) in enumerate(sequences):
        ids = list(ids)
        if not 1 <= score_from < len(ids):
            raise ValueError(f"sequence {i}: score_from={score_from} must be in [1, {len(ids) - 1}]")
        rows.append(ids)
        n_targets.append(len(ids) - score_from)

    pad_id = pad_token_id(tokenizer)
    per_sequence: list[float] = [0.0] * len(rows)
    total = 0.0
    progress = OwnerProgress(range(len(rows)), on_batch)
    modes = contextlib.ExitStack()
    with modes:
        modes.enter_context(eval_mode(tuned_model))
        if base_model is not None:
            modes.enter_context(eval_mode(base_model))
        for batch in length_batches([len(r) for r in rows], batch_size):
            batch_rows = [rows[i] for i in batch]
            counts = [n_targets[i] for i in batch]
            with torch.inference_mode(), autocast_bf16(bf16):
                tuned_logits, _ = forward_target_logits(tuned_model, batch_rows, counts, pad_id)
                if base_model is None:
                    with tuned_model.disable_adapter():
                        base_logits, _ = forward_target_logits(tuned_model, batch_rows, counts, pad_id)
                else:
                    base_logits, _ = forward_target_logits(base_model, batch_rows, counts, pad_id)
                kl = _kl_rows(base_logits, tuned_logits.to(base_logits.device)).double().cpu()
            for i, part in zip(batch, torch.split(kl, counts), strict=True):
                per_sequence[i] = float(part.mean())
                total += float(part.sum())
            progress.done(batch)
    tokens = sum(n_targets)
    return {"kl_per_token": total / tokens, "tokens": tokens, "sequences": len(rows), "per_sequence": per_sequence}


def chat_sequences(tokenizer, chats: list[list[dict]], answers: list[str]) -> list[tuple[list[int], int]]:
    """`(input_ids, score_from)` pairs for `mean_token_kl`: each chat's prompt, then its answer and end of turn.

    The prompt is tokenized exactly as generation does (`prompt_ids`), and the answer as training does: the text
    the chat template renders for the assistant turn, up to and including its end-of-turn marker (trailing
    template whitespace dropped, as `chat_format.segment_conversation` does). So the scored tokens are the answer
    plus the end-of-turn token, and the template's own glue (e.g. an empty think block) comes along.
    """
    if len(chats) != len(answers):
        raise ValueError(f"{len(chats)} chats but {len(answers)} answers")
    out: list[tuple[list[int], int]] = []
    for chat, answer in zip(chats, answers, strict=True):
        prompt = prompt_ids(tokenizer, chat)
        prompt_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
        if full_text.startswith(prompt_text):
            target = tokenizer(full_text[len(prompt_text) :].rstrip(), add_special_tokens=False)["input_ids"]
        else:  # a template that rewrites history: fall back to the answer and the EOS token
            target = tokenizer(answer, add_special_tokens=False)["input_ids"]
            if tokenizer.eos_token_id is not None:
                target.append(tokenizer.eos_token_id)
        if not target:
            raise ValueError("an answer rendered to no tokens")
        out.append((prompt + target, len(prompt)))
    return out
