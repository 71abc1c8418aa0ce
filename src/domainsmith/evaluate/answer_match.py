"""Score a generated answer against gold answers without a judge model.

Normalization follows SQuAD-style practice (lowercase, drop punctuation and articles, collapse spaces) and
tokenizes CJK text one character per token, so the same rules work for Chinese.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

_ARTICLES = {"a", "an", "the"}
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af])")
_PUNCT = set(string.punctuation) | {
    "。",
    "，",
    "、",
    "！",
    "？",
    "；",
    "：",
    "“",
    "”",
    "‘",
    "’",
    "（",
    "）",
    "《",
    "》",
}


def normalize_tokens(text: str) -> list[str]:
    """Lowercased tokens without punctuation or English articles; each CJK character is its own token."""
    text = unicodedata.normalize("NFKC", text).lower()
    # Keep hyphens inside words ("hollow-ear") as spaces so "hollow ear" and "hollow-ear" match.
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _CJK.sub(r" \1 ", text)
    return [tok for tok in text.split() if tok not in _ARTICLES]


def exact_match(prediction: str, golds: list[str]) -> bool:
    pred = normalize_tokens(prediction)
    return any(pred == normalize_tokens(g) for g in golds)


def contains_match(prediction: str, golds: list[str]) -> bool:
    """True when some gold answer appears in the prediction as a whole-token run ("35 mg" is not in "135 mg")."""
    pred = normalize_tokens(prediction)
    for gold in golds:
        g = normalize_tokens(gold)
        if g and any(pred[i : i + len(g)] == g for i in range(len(pred) - len(g) + 1)):
            return True
    return False


def token_f1(prediction: str, golds: list[str]) -> float:
    """SQuAD-style token F1 against the closest gold answer (0.0 when there is no gold).

    Partial credit tells a long answer that contains the fact apart from a wrong one where `contains_match` is too
    coarse. Tokens come from `normalize_tokens`, so each CJK character counts as one token and Chinese answers get
    graded on characters rather than on whole unsegmented runs. As in SQuAD, when either side normalizes to no
    tokens the score is 1.0 if both do and 0.0 otherwise.
    """
    pred = normalize_tokens(prediction)
    best = 0.0
    for gold in golds:
        ref = normalize_tokens(gold)
        if not pred or not ref:
            score = float(pred == ref)
        else:
            overlap = sum((Counter(pred) & Counter(ref)).values())
            if overlap == 0:
                score = 0.0
            else:
                precision, recall = overlap / len(pred), overlap / len(ref)
                score = 2 * precision * recall / (precision + recall)
        best = max(best, score)
    return best
