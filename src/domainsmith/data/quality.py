"""Document quality heuristics: Gopher quality and Gopher repetition (Rae et al. 2021), made to work on Chinese.

Words: a CJK character is one word (Chinese has no spaces); any other run of non-space characters is a word.
Each check returns None when the text passes, or a short reason naming the failed threshold.
"""

from __future__ import annotations

import re

import numpy as np

from ..recipe import GopherQualityRule, GopherRepetitionRule

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORDS = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_PUNCT_WORDS = re.compile(r"^(?:[^\w\n]|_)+$", re.MULTILINE)  # words of punctuation or symbols only
_LETTER_WORDS = re.compile(r"^.*?[^\W\d_]", re.MULTILINE)  # words holding a letter (CJK counts)
_MD_HEADINGS = re.compile(r"^#{1,6}(?=\s)", re.MULTILINE)
_PARAGRAPHS = re.compile(r"\n\s*\n")
_BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "-", "*", "·", "‣", "⁃", "◦")
_ELLIPSES = ("...", "…")
STOP_WORDS_EN = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# The most frequent Chinese function characters, the analogue of Gopher's English list.
STOP_WORDS_ZH = frozenset("的是了在和有不这我也就都一上他她它们")
_STOP_EN = re.compile("^(?:" + "|".join(sorted(STOP_WORDS_EN)) + ")$", re.MULTILINE)
_STOP_ZH = re.compile("^[" + "".join(sorted(STOP_WORDS_ZH)) + "]$", re.MULTILINE)


def words(text: str) -> list[str]:
    """Words of `text`: CJK characters one each, other non-space runs as they are."""
    return _WORDS.findall(text)


def gopher_quality(text: str, rule: GopherQualityRule, tokens: list[str] | None = None) -> str | None:
    """`tokens` are `words(text)` when the caller has them already."""
    tokens = words(text) if tokens is None else tokens
    # One word per line, so each per-word test below is a single regex pass in C, not a Python loop.
    joined = "\n".join(tokens)
    punct = _PUNCT_WORDS.findall(joined)
    n = len(tokens) - len(punct)
    if n < rule.min_words:
        return f"gopher_quality: {n} words < {rule.min_words}"
    if n > rule.max_words:
        return f"gopher_quality: {n} words > {rule.max_words}"
    is_cjk = len(_CJK_CHAR.findall(text)) / n >= 0.3
    if not is_cjk:
        content_chars = len(joined) - (len(tokens) - 1) - sum(map(len, punct))
        mean = content_chars / n
        if not rule.min_mean_word_chars <= mean <= rule.max_mean_word_chars:
            bounds = f"[{rule.min_mean_word_chars:g}, {rule.max_mean_word_chars:g}]"
            return f"gopher_quality: mean word length {mean:.1f} chars outside {bounds}"
    # Markdown heading markers are structure, not the hashtags this rule is about.
    headings = sum(map(len, _MD_HEADINGS.findall(text)))
    symbols = text.count("#") - headings + sum(text.count(e) for e in _ELLIPSES)
    if symbols / n > rule.max_symbol_word_ratio:
        return f"gopher_quality: symbol/word ratio {symbols / n:.2f} > {rule.max_symbol_word_ratio:g}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        bullets = sum(ln.lstrip().startswith(_BULLETS) for ln in lines) / len(lines)
        if bullets > rule.max_bullet_lines:
            return f"gopher_quality: {bullets:.0%} of lines start with a bullet"
        ellipsis = sum(ln.rstrip().endswith(_ELLIPSES) for ln in lines) / len(lines)
        if ellipsis > rule.max_ellipsis_lines:
            return f"gopher_quality: {ellipsis:.0%} of lines end with an ellipsis"
    alpha = len(_LETTER_WORDS.findall(joined)) / n
    if alpha < rule.min_alpha_words:
        return f"gopher_quality: {alpha:.0%} of words have a letter < {rule.min_alpha_words:.0%}"
    found = len((_STOP_ZH if is_cjk else _STOP_EN).findall(joined if is_cjk else joined.lower()))
    if found < rule.min_stop_words:
        return f"gopher_quality: {found} stop words < {rule.min_stop_words}"
    return None


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(how many parts repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


class _NGrams:
    """Word n-grams of one text as 64-bit hashes, built up one n at a time with numpy (no Python loop per word)."""

    _P = np.uint64(0x100000001B3)

    def __init__(self, tokens: list[str]) -> None:
        # A dict, not np.array(tokens): fixed-width strings would cost words x longest word in memory.
        index: dict[str, int] = {}
        self.ids = np.fromiter((index.setdefault(t, len(index) + 1) for t in tokens), np.uint64, len(tokens))
        self.lengths = np.fromiter(map(len, tokens), np.int64, len(tokens))
        self.n = 1
        self.hashes = self.ids

    def grow_to(self, n: int) -> np.ndarray:
        """Hashes of the n-grams starting at each position (n must not shrink)."""
        while self.n < n:
            self.n += 1
            self.hashes = self.hashes[:-1] * self._P + self.ids[self.n - 1 :]
        return self.hashes

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (its length x count), as Gopher counts them."""
        h = self.grow_to(n)
        if len(h) == 0:
            return 0
        _, first, counts = np.unique(h, return_index=True, return_counts=True)
        most = int(counts.max())
        if most < 2:
            return 0
        start = int(first[counts == most].min())  # ties: the n-gram that appears first, as Counter.most_common
        return most * int(self.lengths[start : start + n].sum())

    def duplicated_chars(self, n: int) -> int:
        """Characters of words inside n-grams that occurred earlier in the text (each word counted once)."""
        h = self.grow_to(n)
        if len(h) == 0:
            return 0
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        starts = np.flatnonzero(first[inverse] != np.arange(len(h)))
        if len(starts) == 0:
            return 0
        size = len(self.ids) + 1
        depth = np.cumsum(np.bincount(starts, minlength=size) - np.bincount(starts + n, minlength=size))[:-1]
        return int(self.lengths[depth > 0].sum())


def gopher_repetition(text: str, rule: GopherRepetitionRule) -> str | None:
    total = len(text)
    if not total:
        return None
    paragraphs = [p.strip() for p in _PARAGRAPHS.split(text.strip()) if p.strip()]
    count, chars = _duplicates(paragraphs)
    if paragraphs and count / len(paragraphs) > rule.max_dup_para_frac:
        return f"gopher_repetition: {count / len(paragraphs):.0%} duplicate paragraphs"
    if chars / total > rule.max_dup_para_char_frac:
        return f"gopher_repetition: {chars / total:.0%} of characters in duplicate paragraphs"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    count, chars = _duplicates(lines)
    if lines and count / len(lines) > rule.max_dup_line_frac:
        return f"gopher_repetition: {count / len(lines):.0%} duplicate lines"
    if chars / total > rule.max_dup_line_char_frac:
        return f"gopher_repetition: {chars / total:.0%} of characters in duplicate lines"
    tokens = words(text)
    if not tokens or len(tokens) < rule.ngram_min_words:
        return None
    grams = _NGrams(tokens)
    word_chars = int(grams.lengths.sum()) or 1
    for n, limit in sorted(rule.max_top_ngram_char_frac.items()):
        frac = grams.top_chars(n) / word_chars
        if frac > limit:
            return f"gopher_repetition: top {n}-gram covers {frac:.0%} of characters > {limit:.0%}"
    for n, limit in sorted(rule.max_dup_ngram_char_frac.items()):
        frac = grams.duplicated_chars(n) / word_chars
        if frac > limit:
            return f"gopher_repetition: repeated {n}-grams cover {frac:.0%} of characters > {limit:.0%}"
    return None
