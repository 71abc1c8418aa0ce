"""Render conversations with the model's own chat template and mask labels to assistant tokens only.

Each conversation is cut into segments at assistant-turn boundaries, found by rendering growing prefixes of the
conversation. Segments are tokenized separately and concatenated, so the prompt tokens seen in training are
exactly those `apply_chat_template(..., add_generation_prompt=True)` produces at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelError

IGNORE_INDEX = -100  # label value that the loss ignores


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    role: str | None = None  # the source's role (domain / general), when the caller gave roles


@dataclass
class TokenizeStats:
    examples: int = 0
    truncated: int = 0  # longer than max_seq_len, cut at the end
    dropped_no_target: int = 0  # nothing left to learn after truncation
    tokens: int = 0
    target_tokens: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def segment_conversation(tokenizer, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_assistant_target) segments that concatenate to the whole."""
    full = _render(tokenizer, messages, generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(prompt) and len(prompt) >= pos):
            raise ModelError(
                "the model's chat template does not render conversations prefix-consistently, so assistant "
                "tokens cannot be located; use a template without history rewriting (e.g. no thinking removal)"
            )
        # Trailing whitespace after the end-of-turn token is template glue, not something the model should learn.
        end = len(prompt) + len(upto[len(prompt) :].rstrip())
        segments.append((full[pos : len(prompt)], False))
        segments.append((full[len(prompt) : end], True))
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    return [(text, target) for text, target in segments if text]


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], max_seq_len: int) -> TokenizedExample:
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_target in segment_conversation(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if is_target else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_seq_len
    return TokenizedExample(input_ids[:max_seq_len], labels[:max_seq_len], truncated)


def tokenize_conversations(
    tokenizer, conversations, max_seq_len: int, roles: list[str] | None = None
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenize many conversations; examples with no target token left after truncation are dropped and counted.

    `roles`, parallel to `conversations`, is carried onto each kept example.
    """
    stats = TokenizeStats()
    kept: list[TokenizedExample] = []
    for i, conv in enumerate(conversations):
        ex = tokenize_conversation(tokenizer, conv.messages, max_seq_len)
        ex.role = roles[i] if roles is not None else None
        stats.examples += 1
        stats.truncated += ex.truncated
        if all(label == IGNORE_INDEX for label in ex.labels):
            stats.dropped_no_target += 1
            continue
        stats.tokens += len(ex.input_ids)
        stats.target_tokens += sum(label != IGNORE_INDEX for label in ex.labels)
        kept.append(ex)
    return kept, stats


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a prompt ending with the assistant header, as used for generation."""
    return tokenizer(_render(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"]


def conversation_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a whole conversation rendered with the model's chat template."""
    return tokenizer(_render(tokenizer, messages, generation_prompt=False), add_special_tokens=False)["input_ids"]
