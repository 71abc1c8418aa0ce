"""Build a RAG prompt from retrieved passages and check the citations in the answer.

Sources are numbered in rank order and added whole while they fit a token budget counted with the generator's
own tokenizer (the embedding model's tokenizer counts differently). The passage read is the parent passage of
the small chunk that was searched, once per parent. The instruction asks for [n] citations and for a fixed
sentence when the sources do not answer, so abstention can be scored without a judge model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import PurePath

NO_ANSWER = "The sources do not say."
CITATION = re.compile(r"\[(\d+)\]")

INSTRUCTION = (
    "Answer the question using only the numbered sources below. Cite the source you use as [1], [2], ... "
    f'If the sources do not answer the question, reply exactly: "{NO_ANSWER}"'
)


@dataclass
class Source:
    number: int
    source: str
    text: str
    heading_path: str = ""
    score: float | None = None  # retrieval score of the best hit read from this passage (None: given, not found)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RagPrompt:
    messages: list[dict[str, str]]
    sources: list[Source]
    source_tokens: int  # generator tokens spent on the sources


def _passages(hits) -> list[tuple[str, str, str, float | None]]:
    """(source, passage, heading_path, score) in rank order, one per parent passage (the best hit's score)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for hit in hits:
        passage = (getattr(hit, "parent_text", None) or hit.text).strip()
        key = (hit.source, passage)
        if key in seen:
            continue
        seen.add(key)
        score = getattr(hit, "score", None)
        out.append((hit.source, passage, getattr(hit, "heading_path", "") or "", score))
    return out


def source_label(source: str) -> str:
    """What the model reads as a source's name: a file's name, not where the KB's documents happen to live (a full
    path would make answers depend on the directory a project is checked out in); URLs and custom names as given."""
    if "://" in source:
        return source
    return PurePath(source.replace("\\", "/")).name or source


def _source_block(number: int, source: str, passage: str) -> str:
    return f"[{number}] ({source_label(source)})\n{passage}"


def build_rag_prompt(question: str, hits, tokenizer, budget_tokens: int = 1024, system: str | None = None) -> RagPrompt:
    """Numbered sources, filled by rank within `budget_tokens` of the generator's tokenizer.

    A passage that does not fit is skipped and later, shorter ones may still go in; if even the best passage is
    over budget, it is cut to the budget so the model never answers from nothing when something was found.
    """
    sources: list[Source] = []
    blocks: list[str] = []
    used = 0
    for source, passage, heading, score in _passages(hits):
        block = _source_block(len(sources) + 1, source, passage)
        cost = len(tokenizer(block + "\n\n", add_special_tokens=False)["input_ids"])
        if used + cost > budget_tokens:
            if sources:
                continue
            ids = tokenizer(passage, add_special_tokens=False)["input_ids"][: max(budget_tokens - 16, 1)]
            passage = tokenizer.decode(ids)
            block = _source_block(1, source, passage)
            cost = len(tokenizer(block + "\n\n", add_special_tokens=False)["input_ids"])
        sources.append(Source(len(sources) + 1, source, passage, heading, None if score is None else float(score)))
        blocks.append(block)
        used += cost
    body = "\n\n".join(blocks) if blocks else "(no sources found)"
    user = f"{INSTRUCTION}\n\nSources:\n{body}\n\nQuestion: {question}"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return RagPrompt(messages, sources, used)


@dataclass
class CitationCheck:
    cited: list[Source]  # sources the answer cites, in order of first citation
    invalid: list[int]  # [n] markers with no such source
    valid: bool  # every [n] exists


def check_citations(answer: str, sources: list[Source]) -> CitationCheck:
    by_number = {s.number: s for s in sources}
    cited: list[Source] = []
    invalid: list[int] = []
    for match in CITATION.finditer(answer):
        n = int(match.group(1))
        if n in by_number:
            if by_number[n] not in cited:
                cited.append(by_number[n])
        elif n not in invalid:
            invalid.append(n)
    return CitationCheck(cited, invalid, not invalid)


def is_abstention(answer: str) -> bool:
    """The model said the sources do not answer (the fixed sentence, case and punctuation aside)."""
    squash = re.sub(r"[^a-z ]", "", answer.lower())
    return re.sub(r"[^a-z ]", "", NO_ANSWER.lower()) in squash
