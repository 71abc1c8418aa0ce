"""Keyword tokens for BM25: lowercased English words without stop words, Chinese segmented with jieba.

The same function runs at ingest and at query time, and the store only ever sees space-joined tokens, so keyword
search behaves the same whatever engine indexes them (default tokenizers treat a Chinese clause as one "word").
"""

from __future__ import annotations

import logging
import re
from functools import cache

# CJK Unified Ideographs (+ extension A and compatibility ideographs): the runs that jieba segments.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"\w+")

ENGLISH_STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves s t d ll m re ve
    """.split()
)

# Function words that jieba emits as tokens and that match almost every Chinese passage.
CHINESE_STOP_WORDS = frozenset(
    """
    的 了 和 是 在 也 就 都 而 及 与 或 着 之 其 这 那 这个 那个 这些 那些 一个 一种 有 没有 我 你 他 她 它 我们 你们
    他们 什么 怎么 怎样 如何 哪 哪些 吗 呢 吧 啊 把 被 让 给 对 从 向 到 于 以 为 为了 因为 所以 但 但是 如果 就是
    还 又 很 更 最 等 等等 个 上 下 中 里 时 后 前
    """.split()
)


@cache
def _jieba():
    import jieba

    # jieba logs its dictionary loading at INFO on the root of its own logger; keep CLI output clean.
    jieba.setLogLevel(logging.WARNING)
    return jieba


def keyword_tokens(text: str) -> list[str]:
    """BM25 tokens of `text`: jieba search-mode words for Chinese runs, lowercased `\\w+` words elsewhere."""
    tokens: list[str] = []
    pos = 0
    for match in _CJK_RUN.finditer(text):
        tokens += _latin_tokens(text[pos : match.start()])
        # lcut_for_search also emits the sub-words of long words (中华人民共和国 -> 中华, 人民, 共和国 ...) for recall.
        tokens += [w for w in _jieba().lcut_for_search(match.group()) if w not in CHINESE_STOP_WORDS]
        pos = match.end()
    tokens += _latin_tokens(text[pos:])
    return tokens


def _latin_tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]
