"""Keyword tokens for BM25 and reciprocal rank fusion, on hand-made examples."""

import pytest

from domainsmith.kb import rrf_fuse
from domainsmith.kb.keywords import keyword_tokens


def test_english_tokens_are_lowercased_words_without_stop_words():
    assert keyword_tokens("What is the DOSE of Brinavil-20, in mg?") == ["dose", "brinavil", "20", "mg"]


def test_chinese_is_segmented_and_function_words_dropped():
    tokens = keyword_tokens("中华人民共和国的首都是北京。Insulin控制血糖")
    assert {"中华", "人民", "共和国", "中华人民共和国", "首都", "北京", "insulin", "控制", "血糖"} <= set(tokens)
    assert "的" not in tokens and "是" not in tokens and "。" not in tokens


def test_rrf_orders_by_summed_reciprocal_ranks():
    dense = ["a", "b", "c"]
    keyword = ["c", "a", "d"]
    fused = rrf_fuse([dense, keyword], k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_k_trades_one_top_rank_against_agreement_and_ties_are_stable():
    rankings = [["a", "b", "c"], ["d", "e", "b"]]
    # k=0: a's single first place (1/1) beats b's 1/2 + 1/3; k=60 flattens ranks, so b, found by both, wins.
    assert rrf_fuse(rankings, k=0)[0][0] == "a"
    assert rrf_fuse(rankings, k=60)[0][0] == "b"
    assert [i for i, _ in rrf_fuse([["p"], ["q"]])] == ["p", "q"]  # equal scores: first seen first
    assert [i for i, _ in rrf_fuse([["p"], ["q"]], weights=[1.0, 2.0])] == ["q", "p"]
