"""Strategy advice: which of RAG, ICL, SFT, CPT or from-scratch pretraining fits the data and the budget, base or
chat model, start-point data mixes, fine-tuning method and precision.

Every rule that fires says why and where the rule comes from (`source`), and rules of thumb are marked
`heuristic: true`. Rules add points to strategies; the ranking is by points, so the reasons are the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .choices import base_or_chat, choose_method, choose_precision, mix_start_points
from .sources import (
    CHINCHILLA_SRC,
    DAPT_SRC,
    GEKHMAN_SRC,
    ICL_SRC,
    LIMA_SRC,
    RAG_SRC,
    SCRATCH_SRC,
    SEED,
)

STRATEGIES = ("rag", "icl", "sft", "cpt", "from_scratch")
SCRATCH_MIN_TOKENS = 100e9  # "hundreds of billions of tokens"
CPT_MIN_TOKENS = 100e6  # heuristic floor; DAPT used 2-8B tokens
CPT_SOME_TOKENS = 10e6


@dataclass
class Situation:
    """What the advisor knows. Unknown numbers stay None and rules that need them say so."""

    params: int | None = None
    context_tokens: int | None = None  # the model's context window
    data_known: bool = True  # False without a recipe: data-dependent rules abstain instead of guessing
    domain_text_tokens: int = 0  # unlabelled domain text (documents, books, standards)
    domain_instruction_samples: int = 0
    domain_instruction_tokens: int = 0
    general_instruction_samples: int = 0
    general_tokens: int = 0  # general (replay) data, any kind
    knowledge_changes_often: bool = False
    needs_citations: bool = False
    budget_gpu_hours: float | None = None
    pretraining_tokens: int | None = None  # tokens a from-scratch run would train on (domain + general)
    from_scratch_gpu_hours: float | None = None  # 6*P*T at the plan's GPU and MFU, computed by the caller
    fits_by_method: dict[str, list[str]] | None = None  # method -> setups that fit the GPU (from memory.py)
    gpu_name: str | None = None
    gpu_has_bf16: bool | None = None
    grad_checkpointing: bool = False
    notes: list[str] = field(default_factory=list)


def _rule(strategy: str | None, points: int, reason: str, source: str, heuristic: bool) -> dict:
    return {"strategy": strategy, "points": points, "reason": reason, "source": source, "heuristic": heuristic}


def _knowledge_rules(s: Situation) -> list[dict]:
    rules = []
    if s.knowledge_changes_often or s.needs_citations:
        why = " and ".join(
            w for w, on in (("changes often", s.knowledge_changes_often), ("must be cited", s.needs_citations)) if on
        )
        rules.append(
            _rule(
                "rag",
                4,
                f"the knowledge {why}: a retrieval index is updated by re-indexing, no retraining, and answers can "
                "cite the passages they used",
                RAG_SRC,
                False,
            )
        )
        if s.knowledge_changes_often:
            for strategy in ("cpt", "from_scratch"):
                rules.append(
                    _rule(strategy, -2, "weights trained today hold a snapshot that goes stale", RAG_SRC, False)
                )
    if not rules:
        rules.append(
            _rule(
                "rag",
                0,
                "not stated how often the knowledge changes or whether answers must cite sources "
                "(--knowledge-changes-often, --must-cite)",
                RAG_SRC,
                False,
            )
        )
    if s.domain_text_tokens > 0:
        rules.append(
            _rule(
                "rag",
                1,
                "there are domain documents to index; general model + knowledge base is the most common choice "
                "for teams without ML engineers, usually together with SFT",
                SEED,
                True,
            )
        )
    return rules


def _unknown(strategy: str, what: str) -> list[dict]:
    return [_rule(strategy, 0, f"not assessed: {what} unknown (plan a recipe to inspect its data)", SEED, True)]


def _icl_rules(s: Situation) -> list[dict]:
    if not s.data_known:
        return _unknown("icl", "domain size")
    domain_tokens = s.domain_text_tokens + s.domain_instruction_tokens
    if s.context_tokens is None or domain_tokens == 0:
        return [
            _rule("icl", 0, "unknown whether the domain fits the context window (no model config or data)", SEED, True)
        ]
    budget = s.context_tokens // 2  # leave half the window for the question, examples and the answer
    if domain_tokens <= budget:
        return [
            _rule(
                "icl",
                3,
                f"the whole domain ({domain_tokens:,} tokens) fits in half the {s.context_tokens:,}-token context "
                "window: put it in the prompt, no training",
                ICL_SRC + "; " + SEED,
                True,
            )
        ]
    return [
        _rule(
            "icl",
            -1,
            f"the domain ({domain_tokens:,} tokens) does not fit in half the {s.context_tokens:,}-token context "
            "window; use ICL for a few examples, retrieval for the rest",
            SEED,
            True,
        )
    ]


def _sft_rules(s: Situation) -> list[dict]:
    if not s.data_known:
        return _unknown("sft", "instruction data")
    if s.domain_instruction_samples > 0:
        return [
            _rule(
                "sft",
                2,
                f"{s.domain_instruction_samples:,} domain instruction samples: SFT teaches behaviour and format "
                "(answer shape, tone, refusals); new facts it learns slowly, so pair it with RAG for knowledge",
                LIMA_SRC + "; " + GEKHMAN_SRC,
                False,
            )
        ]
    return [
        _rule(
            "sft",
            0,
            "no instruction data yet; SFT needs instruction/answer pairs (they can be written from the documents)",
            SEED,
            True,
        )
    ]


def _cpt_rules(s: Situation) -> list[dict]:
    if not s.data_known:
        return _unknown("cpt", "amount of domain text")
    t = s.domain_text_tokens
    if t >= CPT_MIN_TOKENS:
        return [
            _rule(
                "cpt",
                2,
                f"{t:,} tokens of domain text: enough unseen text for continued pretraining (mix in general data)",
                DAPT_SRC,
                True,
            )
        ]
    if t >= CPT_SOME_TOKENS:
        return [
            _rule(
                "cpt",
                0,
                f"{t:,} tokens of domain text: small for CPT (DAPT used billions); try it only after RAG + SFT, "
                "with a measured mix",
                DAPT_SRC,
                True,
            )
        ]
    return [
        _rule(
            "cpt",
            -1,
            f"{t:,} tokens of domain text: too little to shift a pretrained model by CPT; practitioners report "
            "CPT often disappoints versus SFT",
            DAPT_SRC + "; " + SEED,
            True,
        )
    ]


def _scratch_rules(s: Situation) -> list[dict]:
    if s.pretraining_tokens is None and not s.data_known:
        return _unknown("from_scratch", "token count (--tokens)")
    tokens = s.pretraining_tokens or 0
    if tokens < SCRATCH_MIN_TOKENS:
        return [
            _rule(
                "from_scratch",
                -10,
                f"advise against: from-scratch pretraining needs hundreds of billions of tokens; this data has "
                f"{tokens:,} (BloombergGPT used 708B). Adapt an existing model instead",
                SCRATCH_SRC + "; " + CHINCHILLA_SRC,
                False,
            )
        ]
    need = s.from_scratch_gpu_hours
    if need is not None and s.budget_gpu_hours is not None and s.budget_gpu_hours < need:
        return [
            _rule(
                "from_scratch",
                -10,
                f"advise against: training {s.params or 0:.3g} parameters on {tokens:.3g} tokens needs "
                f"~{need:,.0f} GPU-hours ({s.gpu_name}, 6*P*T at the stated MFU); the budget is "
                f"{s.budget_gpu_hours:,.0f}",
                SCRATCH_SRC,
                False,
            )
        ]
    if need is None or s.budget_gpu_hours is None:
        cost = f"~{need:,.0f} GPU-hours" if need is not None else "a GPU budget (give --params and --gpu)"
        return [
            _rule(
                "from_scratch",
                0,
                f"{tokens:.3g} tokens is enough data to consider it; it needs {cost}: give --budget-gpu-hours",
                SCRATCH_SRC,
                False,
            )
        ]
    return [
        _rule(
            "from_scratch",
            1,
            f"{tokens:.3g} tokens and a budget of {s.budget_gpu_hours:,.0f} GPU-hours covers the ~{need:,.0f} "
            "needed; still compare against CPT of an open model, far cheaper",
            SCRATCH_SRC,
            False,
        )
    ]


def _verdict(points: int) -> str:
    if points <= -5:
        return "advise against"
    if points >= 3:
        return "recommended"
    if points >= 1:
        return "worth trying"
    return "not indicated"


def rank_strategies(s: Situation) -> list[dict]:
    """Score each strategy by the rules that fire; best first, each with its reasons and their sources."""
    rules = _knowledge_rules(s) + _icl_rules(s) + _sft_rules(s) + _cpt_rules(s) + _scratch_rules(s)
    ranked = []
    for strategy in STRATEGIES:
        mine = [r for r in rules if r["strategy"] == strategy]
        points = sum(r["points"] for r in mine)
        ranked.append({"strategy": strategy, "points": points, "verdict": _verdict(points), "reasons": mine})
    ranked.sort(key=lambda r: (-r["points"], STRATEGIES.index(r["strategy"])))
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i
    return ranked


def advise(s: Situation) -> dict:
    """The whole advice: ranked strategies, base or chat, mix start points, method and precision."""
    strategies = rank_strategies(s)
    samples = s.domain_instruction_samples + s.general_instruction_samples
    return {
        "strategies": strategies,
        "top": [r["strategy"] for r in strategies if r["verdict"] in ("recommended", "worth trying")],
        "base_or_chat": base_or_chat(samples),
        "mix": mix_start_points(s),
        "method": choose_method(s),
        "precision": choose_precision(s),
        "notes": s.notes,
    }
