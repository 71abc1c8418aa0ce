"""A synthetic run dir holding every artefact the report reads, with hostile strings where users control names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from domainsmith.report import ReportResult, write_report

EVIL_STRATEGY = "sft+<script>alert(1)</script>"
EVIL_SUITE = "mc<img src=x onerror=alert(2)>"
EVIL_SOURCE = "data/<b>bold</b>.jsonl"


def _qa(acc: float, n: int, role: str, **extra) -> dict:
    return {"kind": "qa", "accuracy": acc, "correct": round(acc * n), "n": n, "role": role, **extra}


def _rag(acc: float, n: int, role: str, recall: float | None = None) -> dict:
    extra = {"citations": {"cited_any": 0.4, "valid": 0.9}, "abstained": 0.05}
    if recall is not None:
        extra["retrieval"] = {"k": 5, "mrr": 0.7, "n": n, "recall@5": recall}
    return _qa(acc, n, role, **extra)


def full_eval() -> dict:
    closed = {
        "base": {
            "domain_qa": _qa(0.1, 40, "domain"),
            "general_probe": _qa(0.9, 30, "general"),
            EVIL_SUITE: {"kind": "mc", "acc": 0.5, "acc_norm": 0.55, "correct": 10, "n": 20, "role": "general"},
            "general_text": {
                "kind": "perplexity",
                "perplexity": 12.5,
                "nll_per_token": math.log(12.5),
                "tokens": 5000,
                "documents": 8,
                "role": "general",
            },
        },
        "sft": {
            "domain_qa": _qa(0.6, 40, "domain"),
            "general_probe": _qa(0.8, 30, "general"),
            EVIL_SUITE: {"kind": "mc", "acc": 0.45, "acc_norm": 0.5, "correct": 9, "n": 20, "role": "general"},
            "general_text": {
                "kind": "perplexity",
                "perplexity": 13.9,
                "nll_per_token": math.log(13.9),
                "tokens": 5000,
                "documents": 8,
                "role": "general",
            },
        },
    }
    variants = {
        label: {
            "model": "/models/tiny",
            "adapter": None if label == "base" else "runs/x/sft/adapter",
            "mode": "closed",
            "suites": suites,
        }
        for label, suites in closed.items()
    }
    for name, acc in (("base", 0.4), ("sft", 0.7)):
        adapter = None if name == "base" else "runs/x/sft/adapter"
        variants[f"{name}+rag"] = {
            "model": "/models/tiny",
            "adapter": adapter,
            "mode": "rag",
            "suites": {"domain_qa": _rag(acc, 40, "domain", recall=0.95), "general_probe": _rag(0.85, 30, "general")},
        }
        variants[f"{name}+rag_gold"] = {
            "model": "/models/tiny",
            "adapter": adapter,
            "mode": "rag_gold",
            "suites": {"domain_qa": _rag(acc + 0.1, 40, "domain")},
        }
    flips = {"n": 40, "learned": 22, "forgotten": 2}
    strategies = [
        {
            "strategy": "base",
            "variant": "base",
            "mode": "closed",
            "domain_qa": 0.1,
            "general_probe": 0.9,
            EVIL_SUITE: 0.5,
            "general_text": 12.5,
            "train_seconds": 0.0,
            "train_tokens": 0,
            "harness:domainsmith_local_mc:acc": 0.5,
        },
        {
            "strategy": "sft",
            "variant": "sft",
            "mode": "closed",
            "domain_qa": 0.6,
            "domain_qa_flips": flips,
            "general_probe": 0.8,
            "general_probe_flips": {"n": 30, "learned": 1, "forgotten": 4},
            EVIL_SUITE: 0.45,
            "general_text": 13.9,
            "train_seconds": 321.5,
            "train_tokens": 123456,
            "kl_per_token": 0.0421,
        },
        {"strategy": "base+rag", "variant": "base", "mode": "rag", "domain_qa": 0.4, "general_probe": 0.85},
        {"strategy": "base+rag_gold", "variant": "base", "mode": "rag_gold", "domain_qa": 0.5},
        {"strategy": "sft+rag", "variant": "sft", "mode": "rag", "domain_qa": 0.7, "general_probe": 0.85},
        {"strategy": "sft+rag_gold", "variant": "sft", "mode": "rag_gold", "domain_qa": 0.8},
        {"strategy": EVIL_STRATEGY, "variant": "sft", "mode": "icl", "domain_qa": 0.65, "general_probe": 0.82},
    ]
    comparisons = {
        "domain_qa": {
            "role": "domain",
            "kind": "qa",
            "metric": "accuracy",
            "higher_is_better": True,
            "before": 0.1,
            "after": 0.6,
            "n": 40,
            "flips": flips,
            "diff": {"diff": 0.5, "ci95": [0.35, 0.65], "n": 40, "p_value": 0.0001},
        },
        "general_probe": {
            "role": "general",
            "kind": "qa",
            "metric": "accuracy",
            "higher_is_better": True,
            "before": 0.9,
            "after": 0.8,
            "n": 30,
            "flips": {"n": 30, "learned": 1, "forgotten": 4},
            "diff": {"diff": -0.1, "ci95": [-0.233, 0.033], "n": 30, "p_value": 0.2},
        },
        EVIL_SUITE: {
            "role": "general",
            "kind": "mc",
            "metric": "acc",
            "higher_is_better": True,
            "before": 0.5,
            "after": 0.45,
            "n": 20,
            "flips": {"n": 20, "learned": 0, "forgotten": 1},
            "diff": {"diff": -0.05, "ci95": [-0.15, 0.0], "n": 20, "p_value": 0.5},
        },
        "general_text": {
            "role": "general",
            "kind": "perplexity",
            "metric": "perplexity",
            "higher_is_better": False,
            "before": 12.5,
            "after": 13.9,
            "n": 8,
            "diff": {"diff": 1.4, "ci95": [0.9, 1.9], "n": 8, "p_value": 0.001},
        },
    }
    items = {
        "base": {
            "domain_qa": [
                {
                    "id": "q1",
                    "question": "<script>alert('q')</script>",
                    "gold": "x",
                    "prediction": "y",
                    "correct": False,
                }
            ]
        }
    }
    return {
        "before_variant": "base",
        "after_variant": "sft",
        "comparisons": comparisons,
        "variants": variants,
        "forgetting": {"kl": {"sft": {"kl_per_token": 0.0421, "tokens": 900, "sequences": 30}}, "prompts": "general"},
        "strategies": strategies,
        "harness": {"base": {"tasks": {"domainsmith_local_mc": {"acc": 0.5, "acc_stderr": 0.1}}}},
        "train_eval_overlap": [],
        "items": items,
    }


def _jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def build_full_run(run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "eval.json").write_text(json.dumps(full_eval()), encoding="utf-8")
    summary = {
        "variants": {"before": "base", "after": "sft"},
        "stages": {
            "sft": {
                "finetuning": "lora",
                "precision": "bf16",
                "parameters": {"total": 1000000, "trainable": 20000},
                "data": {
                    "sources": {
                        "data/domain.jsonl": {"role": "domain", "records": 150, "rejected": 0},
                        EVIL_SOURCE: {"role": "general", "records": 50, "rejected": 1},
                    },
                    "examples": 200,
                    "tokens": 40000,
                    "target_tokens": 12000,
                    "truncated": 0,
                },
                "train_loss": 0.8,
                "steps": 60,
                "train_seconds": 321.5,
                "train_tokens": 123456,
            },
            "dpo": {
                "finetuning": "lora",
                "loss_type": "sigmoid",
                "beta": 0.1,
                "pairs": {"train": 250, "heldout": 250, "rejected": 0},
                "heldout_before": {"pairs": 250, "loglik_accuracy": 0.4},
                "heldout_after": {"pairs": 250, "loglik_accuracy": 0.9, "implicit_reward_accuracy": 0.93},
                "kl": {"measured": [{"step": 10, "kl_per_token": 0.02}], "ceiling": 0.5, "event": None},
                "steps": 63,
            },
            "rm": {
                "finetuning": "lora",
                "pairs": {"train": 250, "heldout": 250, "rejected": 0},
                "heldout_before": {"accuracy": 0.5, "by_category": {"refusal": {"pairs": 50, "accuracy": 0.18}}},
                "heldout_after": {
                    "accuracy": 0.96,
                    "reward_length_correlation": 0.12,
                    "by_category": {"refusal": {"pairs": 50, "accuracy": 0.84}},
                },
                "length_alarm": {"threshold": 0.5, "fired": False},
            },
            "grpo": {
                "finetuning": "lora",
                "loss_type": "dapo",
                "beta": 0.0,
                "num_generations": 4,
                "prompts": {"train": 40, "heldout": 20, "rejected": 0, "dropped_solved": 320},
                "heldout_before": {"accuracy": 0.85, "n": 20},
                "heldout_after": {"accuracy": 0.95, "n": 20},
                "heldout_flips": {"n": 20, "learned": 3, "forgotten": 1},
                "rewards": {"contains": {"kind": "contains", "weight": 1.0, "length_correlation": 0.07}},
                "reward_curve": {
                    "step": [1, 2, 3, 4],
                    "total": [0.25, 0.5, 0.5, 0.75],
                    "contains": [0.25, 0.5, 0.5, 0.75],
                },
                "length_alarm": {"threshold": 0.5, "fired": False, "rewards": []},
                "kl": {
                    "measured": [{"step": 2, "kl_per_token": 0.01}, {"step": 4, "kl_per_token": 0.03}],
                    "ceiling": 0.5,
                    "event": None,
                },
            },
        },
    }
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    rows: list = [
        {
            "step": s,
            "epoch": s / 60,
            "loss": 2.5 * math.exp(-s / 20) + 0.3 + (1.5 if s == 33 else 0.0),
            "learning_rate": 1e-3,
        }
        for s in range(1, 61)
    ]
    rows += [{"step": s, "eval_loss": 1.0 - s / 200} for s in (20, 40, 60)]
    rows.append({"step": 60, "train_runtime": 321.5, "train_loss": 0.8})
    rows.append('{"step": 61, "loss": 0.')  # a run killed mid-write leaves half a line
    _jsonl(run / "sft" / "loss.jsonl", rows)
    _jsonl(
        run / "sft" / "events.jsonl",
        [
            {"step": 33, "loss": 1.9, "threshold": 1.2, "action": "skip", "batches_skipped": 1},
            {"step": 45, "loss": 1.5, "threshold": 1.1, "action": "rollback", "batches_skipped": 4},
        ],
    )
    (run / "data").mkdir()
    (run / "data" / "stats.json").write_text(
        json.dumps(
            {
                "roles": {"domain": {"tokens": 30000, "share": 0.75}, "general": {"tokens": 10000, "share": 0.25}},
                "sources": {
                    "data/domain.jsonl": {"role": "domain", "tokens": 30000, "records": 150},
                    EVIL_SOURCE: {"role": "general", "tokens": 10000, "records": 50},
                },
            }
        ),
        encoding="utf-8",
    )
    ratios = [i / 10 for i in range(11)]
    (run / "mix_search.json").write_text(
        json.dumps(
            {
                "points": [
                    {"ratio": r, "general_loss": 2.0 + r, "domain_loss": 3.0 - 1.5 * r} for r in (0.1, 0.3, 0.5, 0.9)
                ],
                "curves": {
                    "ratio": ratios,
                    "general_loss": [2.0 + r for r in ratios],
                    "domain_loss": [3.0 - 1.5 * r for r in ratios],
                },
                "recommendation": {"ratio": 0.4, "general_loss": 2.4, "domain_loss": 2.4},
                "fits": {"general": {"a": 2.0, "b": 1.0}, "domain": {"a": 3.0, "b": -1.5}},
            }
        ),
        encoding="utf-8",
    )
    return run


@pytest.fixture(scope="session")
def full_report(tmp_path_factory) -> tuple[ReportResult, str]:
    run = build_full_run(tmp_path_factory.mktemp("report") / "run")
    result = write_report(run)
    return result, result.html.read_text(encoding="utf-8")
