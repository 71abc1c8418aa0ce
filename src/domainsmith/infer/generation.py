"""Greedy batched generation (for evaluation and `ask`) and streaming generation (for `chat`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from ..data.chat_format import prompt_ids


def autocast_bf16(bf16: bool):
    import torch

    if not bf16:
        return contextlib.nullcontext()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16)


def generate_batch(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers, one per conversation (each ends with a user turn). Order is preserved.

    Prompts are sorted by length so each batch pads little; padding is on the left so every row ends where
    generation starts.
    """
    import torch

    encoded = [prompt_ids(tokenizer, conv) for conv in conversations]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = encoded[i]
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        with torch.inference_mode(), autocast_bf16(bf16):
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        if on_batch:
            on_batch(len(idx))
    return answers


def stream_reply(
    model, tokenizer, conversation: list[dict[str, str]], max_new_tokens: int = 256, temperature: float = 0.0
) -> Iterator[str]:
    """Yield the reply text piece by piece as it is generated."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    ids = torch.tensor([prompt_ids(tokenizer, conversation)], device=next(model.parameters()).device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    thread = threading.Thread(target=lambda: _generate_no_grad(model, kwargs))
    thread.start()
    yield from streamer
    thread.join()


def _generate_no_grad(model, kwargs) -> None:
    import torch

    with torch.inference_mode():
        model.generate(**kwargs)
