"""SQuAD-style token F1 on normalized tokens (CJK one token per character), max over gold answers."""

from __future__ import annotations

import pytest

from domainsmith.evaluate.answer_match import token_f1


def test_exact_answer_scores_one_after_normalization():
    assert token_f1("The Paris.", ["paris"]) == 1.0


def test_partial_overlap_is_harmonic_mean_of_precision_and_recall():
    # prediction tokens: dose is 35 mg (4), gold: 35 mg (2) -> precision 1/2, recall 1
    assert token_f1("The dose is 35 mg.", ["35 mg"]) == pytest.approx(2 / 3)
    assert token_f1("135 mg", ["35 mg"]) == pytest.approx(0.5)
    assert token_f1("Rome", ["Paris"]) == 0.0


def test_repeated_tokens_count_once_each():
    # overlap is min(count): "mg" once in gold -> 1 common token out of 3 predicted
    assert token_f1("mg mg mg", ["mg"]) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_cjk_counts_one_token_per_character():
    # 北京市 vs 北京: 2 common characters, precision 2/3, recall 1
    assert token_f1("北京市", ["北京"]) == pytest.approx(0.8)
    assert token_f1("首都是北京。", ["北京"]) == pytest.approx(2 * (2 / 5) / (2 / 5 + 1))


def test_best_gold_wins_and_empty_cases():
    assert token_f1("seven days", ["7", "seven days a week", "seven days"]) == 1.0
    assert token_f1("anything", []) == 0.0
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("...", ["the"]) == 1.0  # both normalize to nothing, as in SQuAD
