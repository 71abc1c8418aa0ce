"""The opt-in judge: P(yes) from next-token probabilities after the grading prompt, deterministic and exact."""

import math

import pytest
import torch

from domainsmith.data.chat_format import prompt_ids
from domainsmith.evaluate.judge import _prompt, _verdict_token, judge_answers
from domainsmith.evaluate.qa_suite import QAItem
from domainsmith.model_loading import load_causal_lm, load_tokenizer

ITEMS = [QAItem("a", "Who makes Zorvil?", ["Halvorsen Pharma"]), QAItem("b", "What is 2 plus 2?", ["4"])]
ANSWERS = ["Halvorsen Pharma makes it.", "5"]


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir)), load_causal_lm(str(tiny_model_dir))


def test_judge_probability_matches_a_direct_forward(judge):
    tokenizer, model = judge
    scores = judge_answers(model, tokenizer, ITEMS, ANSWERS, batch_size=1)
    yes, no = _verdict_token(tokenizer, "yes"), _verdict_token(tokenizer, "no")
    assert yes != no
    for item, answer, score in zip(ITEMS, ANSWERS, scores, strict=True):
        ids = prompt_ids(tokenizer, [{"role": "user", "content": _prompt(item, answer)}])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        expected = 1 / (1 + math.exp(logits[no] - logits[yes]))
        assert score == pytest.approx(expected, abs=1e-5)
    assert judge_answers(model, tokenizer, ITEMS, ANSWERS, batch_size=8) == pytest.approx(scores, abs=1e-6)


def test_a_judge_with_no_preference_says_one_half(judge, tiny_model_dir):
    tokenizer, _ = judge
    model = load_causal_lm(str(tiny_model_dir))
    yes, no = _verdict_token(tokenizer, "yes"), _verdict_token(tokenizer, "no")
    with torch.no_grad():  # tied embeddings: equal rows give equal logits for both verdicts
        model.get_output_embeddings().weight[no] = model.get_output_embeddings().weight[yes]
    assert judge_answers(model, tokenizer, ITEMS, ANSWERS) == pytest.approx([0.5, 0.5], abs=1e-6)
