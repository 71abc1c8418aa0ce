"""Short-answer QA suite: ask each question with the model's chat template, score against the gold answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.json_records import iter_json_objects, required_text
from ..errors import DataError
from ..infer.generation import generate_batch
from .answer_match import contains_match, exact_match, token_f1


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]  # the gold answer first, then accepted aliases
    gold_source: str | None = None  # the document that answers it (for retrieval recall / MRR)
    gold_passage: str | None = None  # the passage that answers it (for the rag_gold ceiling)


def load_qa_items(path: Path) -> list[QAItem]:
    """Read {"question": str, "answer": str, "aliases": [str]?, "id": str?} records; any bad record is an error."""
    items: list[QAItem] = []
    seen: set[str] = set()
    for line, value in iter_json_objects(path):
        question = required_text(value, "question", path, line)
        answer = required_text(value, "answer", path, line)
        aliases = value.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise DataError(path, "field 'aliases' must be a list of strings", line)
        gold = {k: value.get(k) for k in ("gold_source", "gold_passage")}
        for key, v in gold.items():
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise DataError(path, f"field '{key}' must be a non-empty string when present", line)
        item_id = str(value.get("id", f"line{line}"))
        if item_id in seen:
            raise DataError(path, f"duplicate id '{item_id}'", line)
        seen.add(item_id)
        items.append(QAItem(item_id, question, [answer, *aliases], gold["gold_source"], gold["gold_passage"]))
    if not items:
        raise DataError(path, "no QA items in file")
    return items


def score_qa(
    model,
    tokenizer,
    items: list[QAItem],
    match: str = "contains",
    max_new_tokens: int = 48,
    batch_size: int = 32,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
    system: str | None = None,
    chats: list[list[dict[str, str]]] | None = None,
) -> dict:
    """Accuracy plus one record per item (so before/after can be compared item by item).

    `chats` replaces the plain question prompts (RAG and few-shot prompts end with the same question).
    """
    if chats is None:
        prefix = [{"role": "system", "content": system}] if system else []
        chats = [[*prefix, {"role": "user", "content": it.question}] for it in items]
    predictions = generate_batch(model, tokenizer, chats, max_new_tokens, batch_size, bf16, on_batch)
    matcher = contains_match if match == "contains" else exact_match
    records = [
        {
            "id": it.id,
            "question": it.question,
            "gold": it.answers[0],
            "prediction": p,
            "correct": matcher(p, it.answers),
            "exact": exact_match(p, it.answers),
            "f1": token_f1(p, it.answers),
        }
        for it, p in zip(items, predictions, strict=True)
    ]
    n = len(records)
    correct = sum(r["correct"] for r in records)
    return {
        "accuracy": correct / n,  # by the suite's `match` rule (contains or exact)
        "correct": correct,
        "n": n,
        "exact_match": sum(r["exact"] for r in records) / n,
        "f1": sum(r["f1"] for r in records) / n,
        "items": records,
    }


def paired_flips(before: dict, after: dict) -> dict:
    """Count items that went wrong->right (learned) and right->wrong (forgotten), matched by id."""
    b = {r["id"]: r["correct"] for r in before["items"]}
    a = {r["id"]: r["correct"] for r in after["items"]}
    common = b.keys() & a.keys()
    return {
        "n": len(common),
        "learned": sum(1 for i in common if a[i] and not b[i]),
        "forgotten": sum(1 for i in common if b[i] and not a[i]),
    }
