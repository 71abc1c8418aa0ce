"""Multiple-choice benchmarks (C-Eval, CMMLU, MMLU-style files) scored by log-likelihood, as lm-evaluation-harness
does: no generation and no answer parsing, so a small or barely tuned model still gets a meaningful score.

Each choice is scored as the summed log-probability of `" " + choice` after the prompt
`"Question: {q}\\nAnswer:"` (plain text, no chat template), optionally preceded by solved few-shot examples.
`acc` takes the choice with the highest log-likelihood; `acc_norm` divides by the choice's length in characters
first (lm-eval's `acc_norm`), which removes the bias against long choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.json_records import iter_json_objects, required_text
from ..errors import DataError
from .token_scoring import model_max_positions, pad_token_id, score_requests

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class MCItem:
    id: str
    question: str
    choices: list[str]
    answer: int  # index into choices
    subject: str | None = None


def _choice_text(value: object) -> str | None:
    """Benchmarks exported from spreadsheets carry numeric choices (C-Eval "A": 3), so numbers are kept as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _parse_record(value: dict) -> tuple[list[str], int]:
    """(choices, answer index) from either schema; raises ValueError with a message naming the field."""
    letter_keys = [k for k in value if isinstance(k, str) and len(k) == 1 and k in _LETTERS]
    if "choices" in value:
        if letter_keys:
            raise ValueError("use either a 'choices' list or letter fields 'A', 'B', ..., not both")
        raw = value["choices"]
        if not isinstance(raw, list):
            raise ValueError("field 'choices' must be a list of strings")
        choices = []
        for i, c in enumerate(raw):
            text = _choice_text(c)
            if text is None:
                raise ValueError(f"field 'choices' item {i} must be a non-empty string")
            choices.append(text)
    else:
        n = 0
        while n < len(_LETTERS) and _LETTERS[n] in value:
            n += 1
        extra = sorted(k for k in letter_keys if _LETTERS.index(k) >= n)
        if extra:
            raise ValueError(
                f"choice letters must run consecutively from 'A': '{extra[0]}' present, '{_LETTERS[n]}' missing"
            )
        choices = []
        for letter in _LETTERS[:n]:
            text = _choice_text(value[letter])
            if text is None:
                raise ValueError(f"field '{letter}' must be a non-empty string")
            choices.append(text)
    if len(choices) < 2:
        raise ValueError(f"needs at least 2 choices ('choices' list or fields 'A', 'B', ...), got {len(choices)}")

    answer = value.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in _LETTERS:
        index = _LETTERS.index(answer.strip().upper())
    elif isinstance(answer, int) and not isinstance(answer, bool) and "choices" in value:
        index = answer
    else:
        allowed = "a choice letter or an integer index" if "choices" in value else "a choice letter ('A', 'B', ...)"
        raise ValueError(f"field 'answer' must be {allowed}, got {answer!r}")
    if not 0 <= index < len(choices):
        raise ValueError(f"field 'answer' {answer!r} is out of range for {len(choices)} choices")
    return choices, index


def load_mc_items(path: Path) -> list[MCItem]:
    """Read multiple-choice items from JSONL or a JSON array; any bad record is an error naming its line.

    Two schemas: C-Eval / CMMLU / MMLU-like `{"question", "A", "B", ... (consecutive from A), "answer": "B"}` and
    `{"question", "choices": [...], "answer": 1 or "B"}`; both take optional "id" and "subject".
    """
    items: list[MCItem] = []
    seen: set[str] = set()
    for line, value in iter_json_objects(path):
        question = required_text(value, "question", path, line)
        try:
            choices, answer = _parse_record(value)
        except ValueError as exc:
            raise DataError(path, str(exc), line) from None
        subject = value.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject.strip()):
            raise DataError(path, "field 'subject' must be a non-empty string when present", line)
        item_id = str(value.get("id", f"line{line}"))
        if item_id in seen:
            raise DataError(path, f"duplicate id '{item_id}'", line)
        seen.add(item_id)
        items.append(MCItem(item_id, question, choices, answer, subject))
    if not items:
        raise DataError(path, "no multiple-choice items in file")
    return items


def fewshot_context(item: MCItem, dev_items: list[MCItem] | None, num_fewshot: int) -> str:
    """The prompt for `item`: `num_fewshot` solved dev examples, then the question.

    Examples are the first dev items in file order (deterministic), those of the item's own subject first (as
    MMLU / C-Eval few-shot prompts use the subject's dev split), topped up from other subjects. A dev item with the
    same question text as `item` is skipped, so an item never answers itself when dev and test overlap.
    """
    shots: list[MCItem] = []
    if num_fewshot > 0:
        if not dev_items:
            raise ValueError(f"num_fewshot={num_fewshot} needs dev_items")
        pool = [d for d in dev_items if d.question != item.question]
        same = [d for d in pool if item.subject is not None and d.subject == item.subject]
        others = [d for d in pool if not (item.subject is not None and d.subject == item.subject)]
        shots = (same + others)[:num_fewshot]
        if len(shots) < num_fewshot:
            raise ValueError(
                f"num_fewshot={num_fewshot} but only {len(shots)} dev examples differ from item '{item.id}'"
            )
    parts = [f"Question: {d.question}\nAnswer: {d.choices[d.answer]}\n\n" for d in shots]
    return "".join(parts) + f"Question: {item.question}\nAnswer:"


def _leading_bos(tokenizer) -> list[int]:
    """[bos] when the tokenizer adds BOS to plain text by itself (Llama-2 style), else [] (Qwen, SmolLM2)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def encode_request(tokenizer, context: str, continuation: str, bos: list[int]) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), split the way lm-evaluation-harness splits them.

    Trailing whitespace of the context moves to the continuation; context+continuation is encoded whole and the
    continuation is the suffix after the context's own token count, so the continuation tokens are the ones the
    model would see in running text (" Paris" as one token, not " " + "Paris").
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) :]
    if not cont:  # the tokenizer merged across the boundary; fall back to encoding the parts separately
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return bos + ctx, cont


def score_mc(
    model,
    tokenizer,
    items: list[MCItem],
    dev_items: list[MCItem] | None = None,
    num_fewshot: int = 0,
    batch_size: int = 16,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Accuracy (acc and acc_norm) plus one record per item, so before/after can be compared item by item.

    Every (item, choice) pair is one request; requests are batched by length, right-padded and scored in one
    forward each. Contexts longer than the model's positions are cut from the left; the continuation stays whole.
    `on_batch` receives the number of items whose choices were all scored in each batch (they add up to
    `len(items)`). The per-item key "correct" is `acc`'s verdict, so `paired_flips` works on these results.
    """
    if not items:
        raise ValueError("no multiple-choice items to score")
    limit = model_max_positions(model)
    bos = _leading_bos(tokenizer)
    rows: list[list[int]] = []
    n_targets: list[int] = []
    owners: list[int] = []
    for index, item in enumerate(items):
        context = fewshot_context(item, dev_items, num_fewshot)
        for j, choice in enumerate(item.choices):
            ctx, cont = encode_request(tokenizer, context, " " + choice, bos)
            full = ctx + cont
            if limit is not None and len(full) - 1 > limit:
                if len(cont) > limit:
                    raise ValueError(
                        f"item '{item.id}' choice {j} has {len(cont)} tokens, more than the model's {limit} positions"
                    )
                full = full[-(limit + 1) :]  # the last token is only a target, so limit + 1 tokens fit
            rows.append(full)
            n_targets.append(len(cont))
            owners.append(index)
    logprobs = score_requests(model, rows, n_targets, owners, pad_token_id(tokenizer), batch_size, bf16, on_batch)

    records = []
    pos = 0
    for item in items:
        logliks = [sum(lp) for lp in logprobs[pos : pos + len(item.choices)]]
        pos += len(item.choices)
        normed = [ll / max(1, len(choice)) for ll, choice in zip(logliks, item.choices, strict=True)]
        pred = max(range(len(logliks)), key=logliks.__getitem__)
        pred_norm = max(range(len(normed)), key=normed.__getitem__)
        records.append(
            {
                "id": item.id,
                "question": item.question,
                "subject": item.subject,
                "gold": item.answer,
                "pred": pred,
                "pred_norm": pred_norm,
                "correct": pred == item.answer,
                "correct_norm": pred_norm == item.answer,
                "logliks": logliks,
            }
        )
    correct = sum(r["correct"] for r in records)
    correct_norm = sum(r["correct_norm"] for r in records)
    n = len(records)
    return {
        "acc": correct / n,
        "acc_norm": correct_norm / n,
        "correct": correct,
        "correct_norm": correct_norm,
        "n": n,
        "items": records,
    }
