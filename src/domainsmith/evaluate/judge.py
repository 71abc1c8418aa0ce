"""An opt-in judge model for short-answer QA: "is this answer correct, given the reference?", scored as yes / no.

String matching misses paraphrases ("twice daily" vs "every 12 hours"); a judge model catches some of them and
brings its own errors, so it is never the default and its verdict is reported next to the string match, not
instead of it. The verdict is read from the judge's next-token probabilities of "yes" and "no" after a fixed
grading prompt (no sampling, no parsing of free text), so it is deterministic and gives a confidence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from ..data.chat_format import prompt_ids
from .qa_suite import QAItem
from .token_scoring import pad_token_id, score_requests

GRADING_PROMPT = (
    "You are grading an answer to a question against a reference answer.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {candidate}\n"
    "Does the candidate answer give the same answer as the reference? Reply with yes or no."
)


@lru_cache(maxsize=1)
def load_judge(model: str, adapter: str | None):
    """The judge's tokenizer and model, loaded once per process (several variants are judged in one eval)."""
    from ..model_loading import load_for_inference

    return load_for_inference(model, adapter)


def judge_answers(
    model,
    tokenizer,
    items: list[QAItem],
    predictions: list[str],
    batch_size: int = 16,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[float]:
    """P(yes) / (P(yes) + P(no)) per item: the judge's confidence that the prediction matches the gold answer."""
    import math

    yes, no = _verdict_token(tokenizer, "yes"), _verdict_token(tokenizer, "no")
    rows, owners = [], []
    for i, (item, prediction) in enumerate(zip(items, predictions, strict=True)):
        chat = [{"role": "user", "content": _prompt(item, prediction)}]
        prompt = prompt_ids(tokenizer, chat)
        rows += [[*prompt, yes], [*prompt, no]]
        owners += [i, i]
    logprobs = score_requests(model, rows, [1] * len(rows), owners, pad_token_id(tokenizer), batch_size, bf16, on_batch)
    scores = []
    for i in range(len(items)):
        lp_yes, lp_no = logprobs[2 * i][0], logprobs[2 * i + 1][0]
        scores.append(1.0 / (1.0 + math.exp(lp_no - lp_yes)))
    return scores


def _prompt(item: QAItem, prediction: str) -> str:
    return GRADING_PROMPT.format(question=item.question, reference=item.answers[0], candidate=prediction or "(empty)")


def _verdict_token(tokenizer, word: str) -> int:
    """The first token of the reply word as the assistant would start it (capitalized, as chat models reply)."""
    ids = tokenizer(word.capitalize(), add_special_tokens=False)["input_ids"]
    return ids[0]
