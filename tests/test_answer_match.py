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


def test_qa_suite_scores_items_with_optional_system_prompt(monkeypatch, tmp_path):
    import domainsmith.evaluate.qa_suite as qa

    seen = []

    def fake_generate(model, tok, chats, *args, **kwargs):
        seen.extend(chats)
        return ["The maker is Halvorsen Pharma.", "No idea."]

    monkeypatch.setattr(qa, "generate_batch", fake_generate)
    items = [qa.QAItem("a", "Who makes X?", ["Halvorsen Pharma"]), qa.QAItem("b", "Who makes Y?", ["Quilby"])]
    result = qa.score_qa(None, None, items, system="You are the formulary assistant.")
    assert result["accuracy"] == 0.5 and [r["correct"] for r in result["items"]] == [True, False]
    assert seen[0] == [
        {"role": "system", "content": "You are the formulary assistant."},
        {"role": "user", "content": "Who makes X?"},
    ]
    before = {"items": [{"id": "a", "correct": False}, {"id": "b", "correct": True}]}
    assert qa.paired_flips(before, result) == {"n": 2, "learned": 1, "forgotten": 1}
