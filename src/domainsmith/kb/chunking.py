"""Sentence-aware parent/child chunking, sized in tokens of the embedding model's tokenizer.

Small child chunks (default at most 128 tokens) are what gets embedded and searched; each points to its parent
passage (default at most 512 tokens), which is what a reader (or an LLM prompt) gets. Sentences end at . ! ? and at
。！？； and stay whole unless one sentence alone is longer than a child chunk: then it is cut at clause marks
(, ， 、 : ： ;) and, as a last resort, between tokens. Chunks never cross a markdown section, so each has one
heading path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .sections import Section


class TokenCounter(Protocol):
    """The embedding model's tokenizer, as far as chunking needs it."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of `text`."""
        ...


@dataclass(frozen=True)
class ChunkingConfig:
    child_tokens: int = 128
    """Most embedding-model tokens in a searchable chunk (must fit the embedding model's input)."""
    parent_tokens: int = 512
    """Most embedding-model tokens in the passage a chunk points to (returned for reading, never embedded)."""

    def __post_init__(self) -> None:
        if self.child_tokens < 8:
            raise ValueError(f"child_tokens must be at least 8, got {self.child_tokens}")
        if self.parent_tokens < self.child_tokens:
            raise ValueError(
                f"parent_tokens ({self.parent_tokens}) must be at least child_tokens ({self.child_tokens})"
            )


@dataclass(frozen=True)
class Passage:
    text: str
    heading_path: str


@dataclass(frozen=True)
class Chunk:
    text: str
    parent: int  # index into ChunkedDocument.parents
    heading_path: str
    tokens: int  # embedding-model tokens of `text`


@dataclass
class ChunkedDocument:
    parents: list[Passage]
    chunks: list[Chunk]


@dataclass(frozen=True)
class _Unit:
    start: int  # character offsets into the section text; a unit owns the whitespace before it
    end: int
    tokens: int


_SENTENCE_END = re.compile(
    r"[.!?]+[\"'”’)\]]*(?=\s|$)"  # Latin end punctuation (+ closing quotes) before a space: "3.5" does not end one
    r"|[。！？；]+[”’」』）\"')]*"  # Chinese ends need no space after them
)
_LINE_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:[-*+>|]|\d+[.)])[ \t])")  # paragraph, or a list/table/quote line
_CLAUSE_END = re.compile(r"[,，、:：;]+")
# "e.g. the" is not the end of a sentence; a lone "etc." or "no." often is, so they are not listed.
_ABBREVIATIONS = {"e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "vs", "fig", "cf", "approx", "al"}
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans that cover `text` end to end; each span is leading whitespace + one sentence."""
    cuts = {0, len(text)}
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith(".") and len(match.group()) == 1:
            word = _WORD_BEFORE.search(text, 0, match.start())
            if word and word.group(1).lower() in _ABBREVIATIONS:
                continue
        cuts.add(match.end())
    cuts.update(m.start() for m in _LINE_BREAK.finditer(text))
    ordered = sorted(cuts)
    spans: list[tuple[int, int]] = []
    for start, end in zip(ordered, ordered[1:], strict=False):
        if spans and not text[spans[-1][0] : spans[-1][1]].strip():
            spans[-1] = (spans[-1][0], end)  # whitespace alone joins the sentence after it
        else:
            spans.append((start, end))
    return spans


def chunk_sections(sections: Sequence[Section], config: ChunkingConfig, counter: TokenCounter) -> ChunkedDocument:
    """Pack each section's sentences greedily into parents, then each parent's sentences into child chunks."""
    doc = ChunkedDocument(parents=[], chunks=[])
    for section in sections:
        units = _units(section.text, config.child_tokens, counter)
        for parent_units in _pack(units, config.parent_tokens):
            parent_text = _slice(section.text, parent_units)
            if not parent_text:
                continue
            doc.parents.append(Passage(parent_text, section.heading))
            for child_units in _pack(parent_units, config.child_tokens):
                child_text = _slice(section.text, child_units)
                if child_text:
                    tokens = sum(u.tokens for u in child_units)
                    doc.chunks.append(Chunk(child_text, len(doc.parents) - 1, section.heading, tokens))
    return doc


def _units(text: str, max_tokens: int, counter: TokenCounter) -> list[_Unit]:
    """Sentences with their token counts; a sentence over `max_tokens` is cut into clauses, then token runs."""
    spans = split_sentences(text)
    counts = counter.count_tokens([text[s:e] for s, e in spans])
    units: list[_Unit] = []
    for (start, end), tokens in zip(spans, counts, strict=True):
        if tokens <= max_tokens:
            units.append(_Unit(start, end, tokens))
        else:
            units += _split_long(text, start, end, max_tokens, counter)
    return units


def _split_long(text: str, start: int, end: int, max_tokens: int, counter: TokenCounter) -> list[_Unit]:
    piece = text[start:end]
    cuts = sorted({0, len(piece)} | {m.end() for m in _CLAUSE_END.finditer(piece)})
    clauses = [(start + a, start + b) for a, b in zip(cuts, cuts[1:], strict=False)]
    counts = counter.count_tokens([text[a:b] for a, b in clauses])
    units: list[_Unit] = []
    for (a, b), tokens in zip(clauses, counts, strict=True):
        if tokens <= max_tokens:
            units.append(_Unit(a, b, tokens))
            continue
        # No clause mark close enough: cut between tokens, max_tokens at a time.
        offsets = counter.token_offsets(text[a:b])
        starts = [a] + [a + offsets[i][0] for i in range(max_tokens, len(offsets), max_tokens)] + [b]
        for i, (x, y) in enumerate(zip(starts, starts[1:], strict=False)):
            units.append(_Unit(x, y, min(max_tokens, len(offsets) - i * max_tokens)))
    # Clauses are packed back together up to the limit, so a long sentence becomes as few chunks as possible.
    return [_Unit(group[0].start, group[-1].end, sum(u.tokens for u in group)) for group in _pack(units, max_tokens)]


def _pack(units: Sequence[_Unit], max_tokens: int) -> list[list[_Unit]]:
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    total = 0
    for unit in units:
        if current and total + unit.tokens > max_tokens:
            groups.append(current)
            current, total = [], 0
        current.append(unit)
        total += unit.tokens
    if current:
        groups.append(current)
    return groups


def _slice(text: str, units: Sequence[_Unit]) -> str:
    return text[units[0].start : units[-1].end].strip()
