"""The cleaning rules every source goes through, in order: unicode repair and normalization, length bounds, Gopher
quality, Gopher repetition, language, decontamination. Each rule is configurable; the first rule a record fails
is the reason it is removed (and counted under that rule)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ..recipe import CleanSettings, DecontaminateSettings
from .decontaminate import EvalNgrams
from .quality import gopher_quality, gopher_repetition, words
from .readers import Record

_LETTERS = re.compile(r"[^\W\d_]")
_FTFY_ASCII_WORK = re.compile(r"[&\x00-\x08\x0b-\x1f\x7f]")  # HTML entities, escapes, controls

# Rule names as counted in stats.json, in the order they run (dedup and mix come after cleaning).
RULES = ("length", "gopher_quality", "gopher_repetition", "language", "decontaminate")


@dataclass
class Verdict:
    rule: str | None  # None: kept
    reason: str = ""


class Cleaner:
    def __init__(
        self, settings: CleanSettings, decontaminate: DecontaminateSettings, eval_ngrams: EvalNgrams | None
    ) -> None:
        self.settings = settings
        self.eval_ngrams = eval_ngrams if decontaminate.enabled else None
        self._langid = None
        if settings.language is not None:
            from .language import LanguageIdentifier

            self._langid = LanguageIdentifier()

    def repair(self, record: Record) -> Record:
        """Unicode repair (ftfy) and normalization, applied to every text field of the record in place."""
        rule = self.settings.unicode
        if not rule.fix and rule.normalize == "none":
            return record
        fix = None
        if rule.fix:
            import ftfy

            fix = ftfy.fix_text

        def clean(text: str) -> str:
            # Plain ASCII without entities, escapes or control characters has nothing for ftfy to repair.
            if fix is not None and not (text.isascii() and not _FTFY_ASCII_WORK.search(text)):
                # Full-width forms and curly quotes are correct Chinese typography: ftfy must not fold them.
                text = fix(text, normalization=None, fix_character_width=False, uncurl_quotes=False)
            return text if rule.normalize == "none" else unicodedata.normalize(rule.normalize, text)

        if record.kind == "text":
            record.text = clean(record.text)
        else:
            for message in record.messages:
                message["content"] = clean(message["content"])
        return record

    def check(self, record: Record, text: str) -> Verdict:
        """The first rule `record` (whose joined text is `text`) fails, or Verdict(None) when it is kept."""
        s = self.settings
        tokens = words(text)
        n_words = len(tokens)
        if n_words < s.length.min_words:
            return Verdict("length", f"length: {n_words} words < {s.length.min_words}")
        if n_words > s.length.max_words:
            return Verdict("length", f"length: {n_words} words > {s.length.max_words}")
        if s.gopher_quality.enabled and record.kind in s.gopher_quality.applies_to:
            reason = gopher_quality(text, s.gopher_quality, tokens)
            if reason:
                return Verdict("gopher_quality", reason)
        if s.gopher_repetition.enabled and record.kind in s.gopher_repetition.applies_to:
            # In a conversation the reply restating the question is normal; what must not loop is the reply.
            replies = (
                text
                if record.kind == "text"
                else "\n".join(m["content"] for m in record.messages if m["role"] == "assistant")
            )
            reason = gopher_repetition(replies, s.gopher_repetition)
            if reason:
                return Verdict("gopher_repetition", reason)
        if self._langid is not None and len(_LETTERS.findall(text, 0, 4 * s.language.min_letters)) >= (
            s.language.min_letters
        ):
            lang, confidence = self._langid.identify(text)
            if lang not in s.language.keep or confidence < s.language.min_confidence:
                return Verdict("language", f"language: {lang} ({confidence:.2f}), keeping {s.language.keep}")
        if self.eval_ngrams is not None:
            hit = self.eval_ngrams.find(record)
            if hit:
                return Verdict("decontaminate", f"decontaminate: {hit}")
        return Verdict(None)
