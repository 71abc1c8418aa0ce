"""Evaluation data must never leak into training: find eval questions that also appear as training prompts."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.instructions import Conversation
from .answer_match import normalize_tokens
from .qa_suite import QAItem


@dataclass
class Overlap:
    suite: str
    item_id: str
    question: str
    train_source: str
    train_line: int


def find_overlaps(suites: dict[str, list[QAItem]], conversations: list[Conversation]) -> list[Overlap]:
    """Eval items whose question equals (after normalization) any user turn in the training data."""
    seen: dict[tuple[str, ...], Conversation] = {}
    for conv in conversations:
        for message in conv.messages:
            if message["role"] == "user":
                seen.setdefault(tuple(normalize_tokens(message["content"])), conv)
    overlaps = []
    for suite, items in suites.items():
        for item in items:
            conv = seen.get(tuple(normalize_tokens(item.question)))
            if conv is not None:
                overlaps.append(Overlap(suite, item.id, item.question, conv.source, conv.line))
    return overlaps


# Decontamination practice (GPT-3, Llama 2 reports): a shared run of 13 normalized words means the text was seen.
TEXT_OVERLAP_WORDS = 13


def find_text_overlaps(
    texts: dict[str, list[str]], conversations: list[Conversation], n: int = TEXT_OVERLAP_WORDS
) -> list[Overlap]:
    """Held-out documents (perplexity suites) that share a run of `n` normalized words with any training turn."""
    if not texts:
        return []
    seen: dict[int, Conversation] = {}
    for conv in conversations:
        for message in conv.messages:
            for gram in _ngrams(normalize_tokens(message["content"]), n):
                seen.setdefault(gram, conv)
    overlaps = []
    for suite, docs in texts.items():
        for i, doc in enumerate(docs):
            conv = next((seen[g] for g in _ngrams(normalize_tokens(doc), n) if g in seen), None)
            if conv is not None:
                overlaps.append(Overlap(suite, f"document {i + 1}", doc[:80], conv.source, conv.line))
    return overlaps


def _ngrams(tokens: list[str], n: int):
    # Hashes, not tuples: the training side can hold millions of n-grams.
    return (hash(tuple(tokens[i : i + n])) for i in range(len(tokens) - n + 1))
