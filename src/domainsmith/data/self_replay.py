"""Self-replay: general instruction data sampled from the model itself, for when its training data is unknown.

Magpie-style (Xu et al. 2024): give an aligned chat model only its chat template's pre-query prefix (system turn
and the opening of a user turn) and let it write the user's message; then let it answer greedily. Training on such
pairs pulls the tuned model back towards its own behaviour on the prompts it considers typical.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..evaluate.answer_match import normalize_tokens
from ..infer.generation import generate_batch

_PLACEHOLDER = "\u2063QUERY\u2063"  # a string no template contains, to find where the user's text starts


def pre_query_prefix(tokenizer) -> str:
    """The rendered chat up to where the first user message's text begins (default system prompt included)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _PLACEHOLDER}], tokenize=False)
    return rendered[: rendered.index(_PLACEHOLDER)]


def ended_within_budget(tokenizer, reply: str, max_new_tokens: int) -> bool:
    """False for a reply that used (nearly) its whole token budget: it was cut off, and training on it would teach
    the model to stop mid-sentence. The 2-token margin absorbs re-tokenization differences of decoded text."""
    return len(tokenizer(reply, add_special_tokens=False)["input_ids"]) < max_new_tokens - 2


@dataclass
class ReplayPair:
    instruction: str
    output: str


def sample_user_turns(model, tokenizer, n: int, seed: int, max_new_tokens: int = 48, batch_size: int = 32) -> list[str]:
    """Sample up to `n` user messages from the pre-query prefix (temperature 1, top-p 0.95), reproducibly.

    Gives up after 4x the batches `n` needs, so a model that never closes its turn cannot loop forever.
    """
    import torch

    prefix = tokenizer(pre_query_prefix(tokenizer), add_special_tokens=False, return_tensors="pt")["input_ids"]
    end_id = tokenizer.eos_token_id
    out: list[str] = []
    generator_seed = seed
    max_batches = 4 * -(-n // batch_size)
    while len(out) < n and generator_seed - seed < max_batches:
        torch.manual_seed(generator_seed)
        generator_seed += 1
        ids = prefix.repeat(batch_size, 1).to(next(model.parameters()).device)
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=end_id,
            )
        for row in gen[:, ids.shape[1] :]:
            tokens = row.tolist()
            if end_id not in tokens:
                continue  # ran out of budget mid-sentence: not a complete question
            text = tokenizer.decode(tokens[: tokens.index(end_id)], skip_special_tokens=True).strip()
            if 10 <= len(text) <= 300:
                out.append(text)
    return out[:n]


def self_replay_pairs(
    model,
    tokenizer,
    n: int,
    seed: int,
    exclude: list[str] = (),
    answer_tokens: int = 96,
    batch_size: int = 32,
) -> list[ReplayPair]:
    """Up to `n` (question, the model's own complete answer) pairs; duplicates and `exclude`d questions dropped.

    `exclude` holds evaluation questions: none of them may become training data.
    """
    banned = {tuple(normalize_tokens(q)) for q in exclude}
    seen: set[tuple[str, ...]] = set()
    questions = []
    for q in sample_user_turns(model, tokenizer, n, seed, batch_size=batch_size):
        key = tuple(normalize_tokens(q))
        if key in banned or key in seen:
            continue
        seen.add(key)
        questions.append(q)
    chats = [[{"role": "user", "content": q}] for q in questions]
    answers = generate_batch(model, tokenizer, chats, max_new_tokens=answer_tokens, batch_size=batch_size)
    pairs = []
    for q, a in zip(questions, answers, strict=True):
        if a and ended_within_budget(tokenizer, a, answer_tokens):
            pairs.append(ReplayPair(q, a))
    return pairs
