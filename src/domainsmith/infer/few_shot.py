"""In-context learning: the most similar solved examples from an instruction file, as few-shot turns.

Every (question, answer) turn of the file is a candidate; candidates are ranked by cosine similarity of the
embedding model's vectors (the KB's model by default) and added, best first, while they fit a token budget
counted with the generator's tokenizer. Example embeddings are cached per file content and embedding model,
so repeated `ask --mode icl` calls embed only the question.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import file_sha256
from ..models import domainsmith_home

# Role headers and end-of-turn markers a chat template adds around one user/assistant pair (ChatML: ~10).
TURN_PAIR_GLUE_TOKENS = 10


@dataclass(frozen=True)
class SolvedExample:
    question: str
    answer: str


def solved_examples(conversations) -> list[SolvedExample]:
    """Each user turn with the assistant reply that follows it; duplicates kept once."""
    seen: set[tuple[str, str]] = set()
    out: list[SolvedExample] = []
    for conv in conversations:
        messages = conv.messages
        for prev, msg in zip(messages, messages[1:], strict=False):
            if prev["role"] == "user" and msg["role"] == "assistant":
                key = (prev["content"].strip(), msg["content"].strip())
                if key not in seen:
                    seen.add(key)
                    out.append(SolvedExample(*key))
    return out


class ExamplePool:
    """Solved examples with their question embeddings, ready for nearest-neighbour selection."""

    def __init__(self, path: Path, embedder, examples: list[SolvedExample]):
        self.path = path
        self.embedder = embedder
        self.examples = examples
        self.vectors = self._vectors()

    @classmethod
    def from_file(cls, path: Path, embedder, on_bad_record: str = "fail") -> ExamplePool:
        from ..data.instructions import read_instructions

        conversations = read_instructions(Path(path), on_bad_record=on_bad_record).conversations
        return cls.from_conversations(Path(path), embedder, conversations)

    @classmethod
    def from_conversations(cls, path: Path, embedder, conversations) -> ExamplePool:
        """A pool from `path`'s conversations, already read (the path keys the embedding cache)."""
        from ..errors import DataError

        examples = solved_examples(conversations)
        if not examples:
            raise DataError(str(path), "no user -> assistant turn to use as an example")
        return cls(Path(path), embedder, examples)

    def _cache_path(self) -> Path:
        key = hashlib.sha256(f"{file_sha256(self.path)}:{self.embedder.fingerprint}".encode()).hexdigest()[:32]
        return domainsmith_home() / "icl" / f"{key}.npy"

    def _vectors(self) -> np.ndarray:
        cache = self._cache_path()
        if cache.is_file():
            vectors = np.load(cache)
            if vectors.shape == (len(self.examples), self.embedder.dimension):
                return vectors
        vectors = self.embedder.embed_documents([e.question for e in self.examples])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(cache)  # atomic: a concurrent reader sees the old file or the whole new one
        return vectors

    def nearest(self, question: str, exclude_question: bool = True) -> list[tuple[SolvedExample, float]]:
        """All examples, most similar question first. The question itself is never its own example."""
        scores = self.vectors @ self.embedder.embed_query(question)
        order = np.argsort(-scores, kind="stable")
        asked = question.strip().lower()
        return [
            (self.examples[i], float(scores[i]))
            for i in order
            if not (exclude_question and self.examples[i].question.lower() == asked)
        ]


@dataclass
class FewShotPrompt:
    messages: list[dict[str, str]]
    examples: list[tuple[SolvedExample, float]]
    example_tokens: int


def build_few_shot_prompt(
    question: str,
    pool: ExamplePool,
    tokenizer,
    k: int = 4,
    budget_tokens: int = 1024,
    system: str | None = None,
) -> FewShotPrompt:
    """Up to k nearest examples within `budget_tokens`, placed most-similar-last (nearest the question)."""
    chosen: list[tuple[SolvedExample, float]] = []
    used = 0
    for example, score in pool.nearest(question):
        if len(chosen) == k:
            break
        text_tokens = len(tokenizer(example.question + example.answer, add_special_tokens=False)["input_ids"])
        cost = text_tokens + TURN_PAIR_GLUE_TOKENS
        if used + cost > budget_tokens:
            continue
        chosen.append((example, score))
        used += cost
    messages = [{"role": "system", "content": system}] if system else []
    for example, _ in reversed(chosen):
        messages += [{"role": "user", "content": example.question}, {"role": "assistant", "content": example.answer}]
    messages.append({"role": "user", "content": question})
    return FewShotPrompt(messages, chosen, used)
