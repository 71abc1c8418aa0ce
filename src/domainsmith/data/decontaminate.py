"""Decontamination: training records that share a long word n-gram with an eval set, or whose prompt is an eval
question, are dropped before training (GPT-3 / Llama 2 practice: 13 normalized words)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .quality import words
from .readers import Record

_NON_WORD = re.compile(r"[^\w\s]")


def decontam_tokens(text: str) -> list[str]:
    """Lowercased words without punctuation, CJK characters one each (regex-only: corpora are large)."""
    return words(_NON_WORD.sub(" ", text.lower()))


@dataclass
class EvalNgrams:
    """The eval sets' n-grams (as joined strings: stable across worker processes, unlike hash()) and questions."""

    n: int
    ngrams: dict[str, str] = field(default_factory=dict)  # joined n-gram -> suite it came from
    questions: dict[str, str] = field(default_factory=dict)  # joined question tokens -> suite
    first_words: set[str] = field(default_factory=set)

    def add_text(self, suite: str, text: str) -> None:
        tokens = decontam_tokens(text)
        for i in range(len(tokens) - self.n + 1):
            self.ngrams.setdefault(" ".join(tokens[i : i + self.n]), suite)
            self.first_words.add(tokens[i])

    def add_question(self, suite: str, question: str) -> None:
        self.add_text(suite, question)
        self.questions.setdefault(" ".join(decontam_tokens(question)), suite)

    def __len__(self) -> int:
        return len(self.ngrams) + len(self.questions)

    def find(self, record: Record) -> str | None:
        """Why `record` is contaminated (which suite, what matched), or None."""
        if record.kind == "chat":
            for message in record.messages:
                if message["role"] == "user":
                    suite = self.questions.get(" ".join(decontam_tokens(message["content"])))
                    if suite is not None:
                        return f"a prompt is a question of eval suite '{suite}'"
        for content in record.contents():
            reason = self.find_in_text(content)
            if reason is not None:
                return reason
        return None

    def find_in_text(self, text: str) -> str | None:
        """Why `text` shares a run of n words with an eval set, or None."""
        n = self.n
        tokens = decontam_tokens(text)
        for i in range(len(tokens) - n + 1):
            if tokens[i] in self.first_words:
                gram = " ".join(tokens[i : i + n])
                suite = self.ngrams.get(gram)
                if suite is not None:
                    return f"shares a {n}-word run with eval suite '{suite}': {gram!r}"
        return None


def eval_ngrams_for(suites, n: int) -> EvalNgrams:
    """EvalNgrams of every loaded suite (evaluate.suites.LoadedSuites): QA and MC questions (MC choices too),
    and perplexity texts."""
    grams = EvalNgrams(n)
    for name, items in suites.qa.items():
        for item in items:
            grams.add_question(name, item.question)
    for name, (items, _dev) in suites.mc.items():
        for item in items:
            grams.add_question(name, item.question)
            grams.add_text(name, " ".join([item.question, *item.choices]))
    for name, texts in suites.texts.items():
        for text in texts:
            grams.add_text(name, text)
    return grams
