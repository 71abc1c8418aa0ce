"""Look at a recipe's data before planning: samples, tokens per role and per speaker, instructions vs raw text,
languages.

Tokens are *estimated* without a tokenizer (cheap, no model needed): one token per CJK character and about four
characters per token for everything else (Latin text). Real tokenizers differ by model; the plan says so.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ..data.readers import Malformed, iter_file_records, source_files
from ..errors import DataError
from ..recipe import Recipe

TOKEN_HEURISTIC = "estimated: 1 token per CJK character, ~4 characters per token otherwise (no tokenizer)"


# Letters per script, counted with C-speed regexes (a corpus can be large; a Python loop per character is slow).
_SCRIPTS = {
    "han": re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]"),
    "kana": re.compile("[\u3040-\u30ff]"),
    "hangul": re.compile("[\uac00-\ud7af\u1100-\u11ff]"),
    "latin": re.compile("[A-Za-z\u00c0-\u024f]"),
    "cyrillic": re.compile("[\u0400-\u04ff]"),
    "greek": re.compile("[\u0370-\u03ff]"),
    "arabic": re.compile("[\u0600-\u06ff]"),
    "hebrew": re.compile("[\u0590-\u05ff]"),
    "devanagari": re.compile("[\u0900-\u097f]"),
    "thai": re.compile("[\u0e00-\u0e7f]"),
}
_CJK_SCRIPTS = ("han", "kana", "hangul")
# CJK punctuation (。，、「」) and full-width forms are one token each too, but are not letters of a language.
_CJK_PUNCT = re.compile("[\u3000-\u303f\uff00-\uffef]")


class TextStats:
    """Running counts over many strings: characters, estimated tokens, letters per script."""

    def __init__(self) -> None:
        self.chars = 0
        self.cjk = 0
        self.scripts: Counter[str] = Counter()

    def add(self, text: str) -> int:
        """Count `text`; return its estimated tokens."""
        cjk = len(_CJK_PUNCT.findall(text))
        for script, pattern in _SCRIPTS.items():
            n = len(pattern.findall(text))
            if n:
                self.scripts[script] += n
                if script in _CJK_SCRIPTS:
                    cjk += n
        self.chars += len(text)
        self.cjk += cjk
        return estimate_tokens_counts(len(text), cjk)

    @property
    def tokens(self) -> int:
        return estimate_tokens_counts(self.chars, self.cjk)


def estimate_tokens_counts(chars: int, cjk_chars: int) -> int:
    """Estimated tokens from character counts: CJK characters one each, the rest four to a token (rounded up)."""
    return cjk_chars + -(-(chars - cjk_chars) // 4)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of `text`: CJK characters (and CJK punctuation) count one each, others four to a token."""
    stats = TextStats()
    return stats.add(text)


def languages(scripts: Counter[str]) -> dict:
    """Share of letters per script, and a coarse language guess from them."""
    total = sum(scripts.values())
    if not total:
        return {"scripts": {}, "guess": []}
    shares = {k: round(v / total, 3) for k, v in scripts.most_common()}
    guess = []
    if shares.get("kana", 0) > 0.05:
        guess.append("ja")
    elif shares.get("han", 0) > 0.05:
        guess.append("zh")
    if shares.get("hangul", 0) > 0.05:
        guess.append("ko")
    if shares.get("latin", 0) > 0.05:
        guess.append("latin-script (e.g. en)")
    for script in ("cyrillic", "arabic", "greek", "hebrew", "devanagari", "thai"):
        if shares.get(script, 0) > 0.05:
            guess.append(script)
    return {"scripts": shares, "guess": guess}


def inspect_source(path: Path, role: str, fmt: str = "auto", name: str | None = None, text_field: str = "text") -> dict:
    """Summarise one data source: kind, samples, estimated tokens (per speaker for instructions), languages.

    `name` is how the source is shown (the recipe's own relative path); defaults to `path`. Any format
    `data prepare` reads works here (instruction files, JSONL text records, Parquet, documents, folders).
    """
    stats = TextStats()
    by_speaker: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    turns = 0
    for file in source_files(path, fmt):
        for item in iter_file_records(file, fmt, text_field):
            if item is None:
                continue
            if isinstance(item, Malformed):
                raise DataError(item.source, item.reason, item.line)
            kinds[item.kind] += 1
            if item.kind == "text":
                by_speaker["text"] += stats.add(item.text)
                continue
            for message in item.messages:
                by_speaker[message["role"]] += stats.add(message["content"])
                turns += message["role"] == "assistant"
    if not kinds:
        raise DataError(path, "no records in source")
    is_text = kinds["text"] >= kinds["chat"]
    row = {
        "path": name or str(path),
        "role": role,
        "kind": "text" if is_text else "instructions",
        "samples": sum(kinds.values()),
        "tokens": sum(by_speaker.values()),
        "tokens_by_speaker": None if is_text else {k: v for k, v in by_speaker.items() if k != "text"},
        "chars": stats.chars,
        "languages": languages(stats.scripts),
        "_scripts": stats.scripts,
    }
    if not is_text:
        row["assistant_turns"] = turns
    return row


def inspect_recipe_data(recipe: Recipe) -> dict:
    """Every data source of the recipe, and totals per role (domain / general) and per kind."""
    # source: self is sampled by `data prepare`; there is nothing on disk to look at before that.
    sources = [
        inspect_source(recipe.resolve(s.path), s.role, s.format, str(s.path), s.text_field)
        for s in recipe.data
        if s.path is not None
    ]
    totals: dict[str, dict] = {}
    all_scripts: Counter[str] = Counter()
    for src in sources:
        role = totals.setdefault(
            src["role"], {"instruction_samples": 0, "instruction_tokens": 0, "text_documents": 0, "text_tokens": 0}
        )
        if src["kind"] == "instructions":
            role["instruction_samples"] += src["samples"]
            role["instruction_tokens"] += src["tokens"]
        else:
            role["text_documents"] += src["samples"]
            role["text_tokens"] += src["tokens"]
        all_scripts.update(src.pop("_scripts"))
    return {
        "sources": sources,
        "by_role": totals,
        "total_tokens": sum(s["tokens"] for s in sources),
        "languages": languages(all_scripts),
        "token_count": TOKEN_HEURISTIC,
    }
