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
