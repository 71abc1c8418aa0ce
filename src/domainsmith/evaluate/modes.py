"""Score a QA suite under each inference mode: closed book, RAG, RAG with the gold passage, few-shot (ICL).

Every mode asks the same items, so modes and model variants compare item by item. RAG adds retrieval metrics
against each item's gold document (recall@k, MRR), citation validity and abstention; no judge model is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import RecipeError
from ..infer.few_shot import build_few_shot_prompt
from ..infer.rag_prompt import build_rag_prompt, check_citations, is_abstention
from .answer_match import contains_match
from .qa_suite import QAItem


@dataclass
class ModeResources:
    """What the non-closed modes need, loaded once per evaluation: the KB and the ICL example pool."""

    kb: object | None = None  # domainsmith.kb.KnowledgeBase
    k: int = 5
    rag_budget: int = 1024
    examples: object | None = None  # domainsmith.infer.few_shot.ExamplePool
    icl_k: int = 4
    icl_budget: int = 768


@dataclass
class _GoldHit:
    source: str
    text: str
    parent_text: str | None = None
    heading_path: str = ""


def same_document(hit_source: str, gold_source: str) -> bool:
    """Paths match when one ends with the other, component-wise (KBs store paths as they were given)."""
    a, b = PurePosixPath(hit_source.replace("\\", "/")).parts, PurePosixPath(gold_source.replace("\\", "/")).parts
    n = min(len(a), len(b))
    return n > 0 and a[-n:] == b[-n:]


def relevant_rank(hits, item: QAItem) -> int | None:
    """1-based rank of the first hit from the gold document whose passage holds the gold answer."""
    for rank, hit in enumerate(hits, start=1):
        passage = hit.parent_text or hit.text
        if same_document(hit.source, item.gold_source) and contains_match(passage, item.answers):
            return rank
    return None


def mode_prompts(mode: str, items: list[QAItem], tokenizer, res: ModeResources, system: str | None):
    """(chats, per-item context) for one mode; the context records what the prompt was built from."""
    prefix = [{"role": "system", "content": system}] if system else []
    if mode == "closed":
        return [[*prefix, {"role": "user", "content": it.question}] for it in items], [{} for _ in items]
    chats, contexts = [], []
    for it in items:
        if mode == "rag":
            hits = res.kb.search(it.question, k=res.k)
            prompt = build_rag_prompt(it.question, hits, tokenizer, res.rag_budget, system)
            rank = relevant_rank(hits, it) if it.gold_source else None
            contexts.append({"sources": prompt.sources, "gold_rank": rank, "has_gold": bool(it.gold_source)})
        elif mode == "rag_gold":
            if not (it.gold_source and it.gold_passage):
                raise RecipeError(f"eval mode rag_gold needs gold_source and gold_passage on every item ({it.id})")
            prompt = build_rag_prompt(it.question, [_GoldHit(it.gold_source, it.gold_passage)], tokenizer,
                                      res.rag_budget, system)  # fmt: skip
            contexts.append({"sources": prompt.sources})
        elif mode == "icl":
            prompt = build_few_shot_prompt(it.question, res.examples, tokenizer, res.icl_k, res.icl_budget, system)
            contexts.append({"examples": [e.question for e, _ in prompt.examples]})
        else:
            raise RecipeError(f"unknown eval mode '{mode}'")
        chats.append(prompt.messages)
    return chats, contexts


def annotate(mode: str, result: dict, contexts: list[dict], k: int) -> dict:
    """Add per-item mode details and the mode's aggregate metrics to a scored suite result."""
    if mode == "closed":
        return result
    records = result["items"]
    for record, ctx in zip(records, contexts, strict=True):
        if "sources" in ctx:
            check = check_citations(record["prediction"], ctx["sources"])
            record["sources"] = [s.source for s in ctx["sources"]]
            record["cited"] = [s.number for s in check.cited]
            record["invalid_citations"] = check.invalid
            record["abstained"] = is_abstention(record["prediction"])
        if ctx.get("has_gold"):
            record["gold_rank"] = ctx["gold_rank"]
        if "examples" in ctx:
            record["examples"] = ctx["examples"]
    n = len(records)
    if mode in ("rag", "rag_gold"):
        result["citations"] = {
            "valid": sum(not r["invalid_citations"] for r in records) / n,
            "cited_any": sum(bool(r["cited"]) for r in records) / n,
        }
        result["abstained"] = sum(r["abstained"] for r in records) / n
    ranked = [r for r in records if "gold_rank" in r]
    if ranked:
        result["retrieval"] = {
            "k": k,
            "n": len(ranked),
            f"recall@{k}": sum(r["gold_rank"] is not None for r in ranked) / len(ranked),
            "mrr": sum(1 / r["gold_rank"] for r in ranked if r["gold_rank"]) / len(ranked),
        }
    return result
