"""Before/after comparisons with paired bootstrap CIs, and the strategy matrix (score, forgetting, cost per row).

Every suite kind has one headline metric: accuracy for QA, acc for multiple choice (higher is better), perplexity
for held-out text (lower is better). Differences are after - before on the same items (or documents).
"""

from __future__ import annotations

import numpy as np

from .bootstrap import paired_bootstrap, paired_item_scores
from .qa_suite import paired_flips

HEADLINE = {"qa": ("accuracy", True), "mc": ("acc", True), "perplexity": ("perplexity", False)}


def headline(result: dict) -> float:
    return result[HEADLINE[result.get("kind", "qa")][0]]


def compare_suites(recipe, before: dict, after: dict) -> dict:
    """One entry per suite scored in both: before, after, n, flips, and diff = {diff, ci95, n, p_value}."""
    out = {}
    for suite in recipe.eval.suites:
        if suite.name not in before or suite.name not in after:
            continue
        b, a = before[suite.name], after[suite.name]
        kind = b.get("kind", "qa")
        metric, higher_is_better = HEADLINE[kind]
        row = {
            "role": suite.role,
            "kind": kind,
            "metric": metric,
            "higher_is_better": higher_is_better,
            "before": headline(b),
            "after": headline(a),
            "n": b["n"] if "n" in b else b.get("documents"),
        }
        resamples = recipe.eval.bootstrap_resamples
        if kind == "perplexity":
            row["diff"] = perplexity_bootstrap(b, a, resamples, seed=recipe.seed)
        else:
            row["flips"] = paired_flips(b, a)
            xs, ys = paired_item_scores(b, a)
            row["diff"] = paired_bootstrap(xs, ys, n_resamples=resamples, seed=recipe.seed)
        out[suite.name] = row
    return out


def perplexity_bootstrap(before: dict, after: dict, n_resamples: int, seed: int = 0) -> dict:
    """Paired bootstrap over documents of the corpus perplexity difference (after - before).

    Perplexity is exp(total NLL / total tokens), a ratio over the corpus, so each resample recomputes it from the
    resampled documents' sums rather than averaging per-document perplexities.
    """
    b_docs, a_docs = before.get("per_document"), after.get("per_document")
    diff = after["perplexity"] - before["perplexity"]
    if not b_docs or not a_docs or len(b_docs) != len(a_docs):
        return {"diff": diff, "ci95": None, "n": before.get("documents"), "p_value": None}
    b_nll, a_nll = np.array([d["nll"] for d in b_docs]), np.array([d["nll"] for d in a_docs])
    tokens = np.array([d["tokens"] for d in b_docs], dtype=float)
    rng = np.random.default_rng(seed)
    n = len(b_docs)
    diffs = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # chunks keep memory bounded for large corpora
        size = min(1000, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        t = tokens[idx].sum(1)
        diffs[start : start + size] = np.exp(a_nll[idx].sum(1) / t) - np.exp(b_nll[idx].sum(1) / t)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    return {"diff": float(diff), "ci95": [float(lo), float(hi)], "n": n, "p_value": float(p)}


def strategy_matrix(
    scored: dict[str, dict],
    reference: str,
    modes_of: dict[str, tuple],
    stage_costs: dict[str, dict],
    kl: dict[str, dict],
    harness: dict[str, dict],
) -> list[dict]:
    """One row per (variant, mode): headline score per suite, flips against the reference, the training it took
    (cumulative over the stages that produced the variant), drift from the base model, harness task scores."""
    stage_order = list(stage_costs)
    rows = []
    for label, results in scored.items():
        variant, mode = modes_of[label]
        row = {"strategy": label, "variant": variant.name, "mode": mode}
        for suite, r in results.items():
            row[suite] = headline(r)
            if label != reference and suite in scored[reference] and "items" in r:
                row[f"{suite}_flips"] = paired_flips(scored[reference][suite], r)
        upto = stage_order[: stage_order.index(variant.name) + 1] if variant.name in stage_order else []
        row["train_seconds"] = round(sum(stage_costs[s].get("train_seconds", 0.0) for s in upto), 1)
        row["train_tokens"] = int(sum(stage_costs[s].get("train_tokens", 0) for s in upto))
        if mode == "closed" and variant.name in kl:
            row["kl_per_token"] = kl[variant.name]["kl_per_token"]
        for task, metrics in (harness.get(variant.name, {}).get("tasks", {}) if mode == "closed" else {}).items():
            for metric in ("acc", "acc_norm", "exact_match"):
                if metrics.get(metric) is not None:
                    row[f"harness:{task}:{metric}"] = metrics[metric]
        rows.append(row)
    return rows
