"""Decontamination: 13-word runs shared with eval texts, prompts that are eval questions, and the n-grams of every
loaded eval suite (QA, multiple choice, perplexity)."""

from __future__ import annotations

from domainsmith.data.decontaminate import EvalNgrams, decontam_tokens, eval_ngrams_for
from domainsmith.data.readers import Record
from domainsmith.evaluate.multiple_choice import MCItem
from domainsmith.evaluate.qa_suite import QAItem
from domainsmith.evaluate.suites import LoadedSuites

EVAL_TEXT = (
    "Brinavil is an oral anticoagulant made by Halvorsen Pharma that prevents strokes in patients with atrial "
    "fibrillation and is taken twice daily with food."
)
RUN_WORDS = EVAL_TEXT.split()


def _text(text: str) -> Record:
    return Record("train.jsonl", 1, "text", text=text, shape="text")


def _chat(*turns: str, system: str | None = None) -> Record:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return Record("train.jsonl", 1, "chat", messages=messages, shape="messages")


def _grams(n: int = 13) -> EvalNgrams:
    grams = EvalNgrams(n)
    grams.add_text("pharma-ppl", EVAL_TEXT)
    return grams


def test_tokens_are_lowercased_without_punctuation():
    assert decontam_tokens("Hello, World! It's 20-mg.") == ["hello", "world", "it", "s", "20", "mg"]
    assert decontam_tokens("你好，世界。") == ["你", "好", "世", "界"]


def test_a_shared_13_word_run_is_found():
    run = " ".join(RUN_WORDS[3:16])  # 13 words from the middle of the eval text
    record = _text(f"Unrelated opening words come first. {run.upper()}; and then something else entirely.")
    hit = _grams().find(record)
    assert hit is not None and "13-word run" in hit and "pharma-ppl" in hit
    assert " ".join(decontam_tokens(run)) in hit


def test_twelve_shared_words_are_not_found():
    run = " ".join(RUN_WORDS[3:15])  # 12 words
    assert len(run.split()) == 12
    record = _text(f"Unrelated opening words come first. {run} and then something else entirely.")
    assert _grams().find(record) is None
    # The same record is contaminated at n=12.
    assert _grams(12).find(record) is not None


def test_the_run_is_found_in_any_turn_of_a_chat():
    run = " ".join(RUN_WORDS[:13])
    assert _grams().find(_chat("Tell me about it.", f"Sure. {run}.")) is not None
    assert _grams().find(_chat("Tell me about it.", "It is a drug.", system=run)) is not None
    assert _grams().find(_chat("Tell me about it.", "It is a drug.")) is None


def test_a_prompt_that_is_an_eval_question_is_found():
    grams = EvalNgrams(13)
    grams.add_question("pharma-qa", "What is the usual dose of Brinavil?")
    hit = grams.find(_chat("  what is the usual DOSE of brinavil!!  ", "20 mg twice daily."))
    assert hit is not None and "question" in hit and "pharma-qa" in hit
    # Only user turns are compared whole; a short question is too short for a 13-word run.
    assert grams.find(_chat("Tell me a fact.", "What is the usual dose of Brinavil?")) is None
    assert grams.find(_text("What is the usual dose of Brinavil?")) is None
    assert grams.find(_chat("What is the usual dose of Brinavil for children?", "Ask a doctor.")) is None


def test_chinese_runs_count_characters():
    grams = EvalNgrams(13)
    grams.add_text("zh", "布里纳维尔是一种口服抗凝药，用于预防心房颤动患者的中风。")
    assert grams.find(_text("资料显示：布里纳维尔是一种口服抗凝药，用于预防中风。")) is not None  # 13+ chars shared
    assert grams.find(_text("资料显示：布里纳维尔是一种口服药。")) is None  # 10 characters shared


def test_eval_ngrams_for_loaded_suites():
    mc_question = "Which organ does the anticoagulant Brinavil mainly affect in the body of adult patients?"
    suites = LoadedSuites(
        qa={"pharma-qa": [QAItem(id="q1", question="Who makes Brinavil?", answers=["Halvorsen Pharma"])]},
        mc={
            "pharma-mc": (
                [MCItem(id="m1", question=mc_question, choices=["the heart", "the liver", "the blood"], answer=2)],
                [MCItem(id="d1", question="Dev question that is never checked?", choices=["a", "b"], answer=0)],
            )
        },
        texts={"pharma-ppl": [EVAL_TEXT]},
    )
    grams = eval_ngrams_for(suites, 13)
    assert grams.n == 13 and len(grams) > 0
    assert set(grams.questions.values()) == {"pharma-qa", "pharma-mc"}

    assert "pharma-qa" in grams.find(_chat("who makes BRINAVIL", "Halvorsen."))
    assert "pharma-mc" in grams.find(_chat(mc_question.lower(), "The blood."))
    # MC choices are part of the n-grams: the question's tail followed by the choices.
    tail = " ".join(mc_question.split()[-8:])
    assert "pharma-mc" in grams.find(_text(f"Quiz: {tail} the heart the liver the blood"))
    assert "pharma-ppl" in grams.find(_text(" ".join(RUN_WORDS[5:20])))
    # Dev items (few-shot examples) are not eval items.
    assert grams.find(_chat("Dev question that is never checked?", "a")) is None
    assert grams.find(_text("Nothing in common with any suite at all, just an ordinary training sentence.")) is None


def test_empty_suites():
    grams = eval_ngrams_for(LoadedSuites(), 13)
    assert len(grams) == 0
    assert grams.find(_text(EVAL_TEXT)) is None
