"""The report's sections: stable ids, titles, and what to run when a section has no data.

Every section is always on the page, so a reader (and a test, or a script diffing reports) finds the same ids in
every report; a section without data says it was not measured and which command or recipe key produces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .collect import RunData
from .html import Figure, Html, code, join, not_measured


@dataclass
class Section:
    id: str
    title: str
    has_data: bool
    body: Html
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Spec:
    id: str
    title: str
    missing: str  # what is absent
    how: Html  # what produces it


SPECS = [
    Spec(
        "summary",
        "Summary: before and after training",
        "There is no before/after comparison (comparisons in eval.json).",
        join(
            [
                "It needs a trained stage: ",
                code("domainsmith run RECIPE"),
                " (or ",
                code("domainsmith train"),
                " then ",
                code("domainsmith eval"),
                ") scores the base and the trained model on the same items.",
            ]
        ),
    ),
    Spec(
        "strategies",
        "Strategy matrix",
        "No strategy rows (strategies in eval.json).",
        join(
            [
                code("domainsmith eval RECIPE --modes closed,rag,rag_gold,icl"),
                " (recipe key ",
                code("eval.modes"),
                ", with ",
                code("kb:"),
                " and ",
                code("icl:"),
                ") scores every model in every mode.",
            ]
        ),
    ),
    Spec(
        "forgetting",
        "Forgetting of general skills",
        "No suite has role general, and no KL from the base model.",
        join(
            [
                "Add a suite with ",
                code("role: general"),
                " to ",
                code("eval.suites"),
                "; the per-token KL needs a trained stage and ",
                code("eval.kl_prompts: general"),
                " (the default).",
            ]
        ),
    ),
    Spec(
        "retrieval",
        "Retrieval (RAG)",
        "No variant was evaluated in rag or rag_gold mode.",
        join(
            [
                "Add a ",
                code("kb:"),
                " section and ",
                code("eval.modes: [closed, rag, rag_gold]"),
                " to the recipe, or run ",
                code("domainsmith eval RECIPE --modes closed,rag,rag_gold"),
                ".",
            ]
        ),
    ),
    Spec(
        "suites",
        "Multiple-choice, perplexity and harness suites",
        "The run has no multiple-choice, perplexity or lm-evaluation-harness results.",
        join(
            [
                "Add ",
                code("kind: mc"),
                " or ",
                code("kind: perplexity"),
                " suites to ",
                code("eval.suites"),
                ", or ",
                code("eval.harness"),
                " tasks.",
            ]
        ),
    ),
    Spec(
        "loss",
        "Training loss",
        "No stage wrote a loss log (RUN_DIR/<stage>/loss.jsonl).",
        join(
            [
                "Training stages (recipe key ",
                code("stages"),
                ") log every step: ",
                code("domainsmith train RECIPE"),
                " or ",
                code("domainsmith run RECIPE"),
                ".",
            ]
        ),
    ),
    Spec(
        "mix",
        "Training data mix",
        "No token or record counts per role (data/stats.json or summary.json).",
        join(
            [
                "Give each ",
                code("data:"),
                " source a ",
                code("role"),
                "; ",
                code("domainsmith run RECIPE"),
                " records the realized counts in summary.json ",
                code("stages.<stage>.data.sources"),
                ".",
            ]
        ),
    ),
    Spec(
        "mixture_search",
        "Mixture search",
        "There is no RUN_DIR/mix_search.json.",
        join(
            [
                "It is written by ",
                code("domainsmith mix search RECIPE"),
                " (small runs over domain shares, fitted loss curves and a recommended ratio).",
            ]
        ),
    ),
    Spec(
        "preference",
        "Preference and RL training",
        "No preference or RL stage (rm, dpo, grpo) was trained in this run.",
        join(
            [
                "Add a stage with ",
                code("type: dpo"),
                " or ",
                code("type: rm"),
                " and preference pairs, or ",
                code("type: grpo"),
                " and prompts with gold answers, to the recipe.",
            ]
        ),  # fmt: skip
    ),
]

SECTION_IDS = [s.id for s in SPECS]


def build_sections(data: RunData) -> list[Section]:
    """Every section in page order; builders return None when they have nothing to show."""
    from .eval_sections import forgetting, retrieval, strategies, suites, summary
    from .training_sections import loss, mix, mixture_search, preference

    builders: dict[str, Callable] = {
        "summary": summary,
        "strategies": strategies,
        "forgetting": forgetting,
        "retrieval": retrieval,
        "suites": suites,
        "loss": loss,
        "mix": mix,
        "mixture_search": mixture_search,
        "preference": preference,
    }
    out = []
    for number, spec in enumerate(SPECS, start=1):
        title = f"{number}. {spec.title}"
        built = builders[spec.id](data)
        if built is None:
            out.append(Section(spec.id, title, False, not_measured(spec.missing, spec.how)))
        else:
            body, figures = built
            out.append(Section(spec.id, title, True, body, figures))
    return out
