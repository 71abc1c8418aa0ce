from domainsmith.evaluate.answer_match import contains_match, exact_match, normalize_tokens


def test_normalization_drops_case_punctuation_articles():
    assert normalize_tokens("The dose is 35 MG.") == ["dose", "is", "35", "mg"]


def test_contains_matches_whole_tokens_only():
    assert contains_match("One dose of Ossarix is 35 mg.", ["35 mg"])
    assert not contains_match("One dose is 135 mg.", ["35 mg"])
    assert contains_match("It treats hollow-ear syndrome", ["hollow-ear syndrome"])
    assert not contains_match("anything", [""])


def test_exact_match_and_aliases():
    assert exact_match("Paris.", ["paris"])
    assert not exact_match("It is Paris.", ["Paris"])
    assert contains_match("There are seven days.", ["7", "seven"])


def test_cjk_is_one_token_per_character():
    assert normalize_tokens("北京是首都。") == ["北", "京", "是", "首", "都"]
    assert contains_match("中国的首都是北京。", ["北京"])
