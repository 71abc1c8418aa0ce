"""Paired bootstrap for before/after comparisons on the same items.

A before/after accuracy difference of a few points on a few hundred items can be noise. Because both runs score
the same items, resampling items (keeping each item's before and after together) gives a confidence interval for
the difference that accounts for item difficulty, which is much tighter than comparing two independent accuracies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Resampled index matrices are built this many elements at a time (~32 MB of int64), so memory stays bounded
# however many items there are.
_CHUNK_ELEMENTS = 1 << 22


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean of `after - before` with a percentile-bootstrap confidence interval and a two-sided p-value.

    Items are resampled with replacement `n_resamples` times (seeded, so the result is reproducible); the interval
    is the `(1 - confidence) / 2` and `(1 + confidence) / 2` quantiles of the resampled mean differences. The key
    stays "ci95" for every `confidence`; the level used is in "confidence".

    p_value: the fraction of resampled differences on the other side of zero from the observed difference (zero
    itself counts as the other side), doubled and capped at 1; 1.0 when the observed difference is 0. It is the
    smallest two-sided level at which the percentile interval would exclude zero, so it agrees with "ci95". Its
    resolution is 2 / n_resamples: 0.0 means "below that", not "impossible".

    Returns {"diff", "ci95", "confidence", "n", "n_resamples", "p_value"}.
    """
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if b.ndim != 1 or a.ndim != 1:
        raise ValueError("before and after must be flat sequences of numbers")
    if len(b) != len(a):
        raise ValueError(f"before has {len(b)} items but after has {len(a)}; they must be paired")
    if len(b) == 0:
        raise ValueError("no paired items")
    _check_settings(confidence, n_resamples)
    diffs = a - b
    means = _resampled_means(diffs, np.ones_like(diffs), n_resamples, seed)
    return _interval(float(diffs.mean()), means, confidence) | {"n": len(diffs)}


def cluster_bootstrap(
    cluster_sums: Sequence[float],
    cluster_counts: Sequence[float],
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean difference over units grouped in clusters, resampling whole clusters (a cluster bootstrap).

    Cluster c holds `cluster_counts[c]` paired units whose `after - before` differences sum to `cluster_sums[c]`.
    Units in one cluster are not independent evidence (the same question asked of several training runs: a hard
    question is hard for every run), so each resample draws clusters with replacement and the statistic is the
    ratio of resampled sums to resampled counts. With one unit per cluster this is `paired_bootstrap`.

    Returns the keys of `paired_bootstrap`, with "n" the number of units and "clusters" the number of clusters.
    """
    sums = np.asarray(cluster_sums, dtype=np.float64)
    counts = np.asarray(cluster_counts, dtype=np.float64)
    if sums.ndim != 1 or counts.shape != sums.shape:
        raise ValueError("cluster_sums and cluster_counts must be flat sequences of the same length")
    if len(sums) == 0:
        raise ValueError("no clusters")
    if np.any(counts <= 0):
        raise ValueError("every cluster must hold at least one unit")
    _check_settings(confidence, n_resamples)
    means = _resampled_means(sums, counts, n_resamples, seed)
    observed = float(sums.sum() / counts.sum())
    return _interval(observed, means, confidence) | {"n": int(counts.sum()), "clusters": len(sums)}


def _check_settings(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _resampled_means(sums: np.ndarray, counts: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """`n_resamples` ratios sum(sums[idx]) / sum(counts[idx]), idx drawn with replacement (seeded)."""
    n = len(sums)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        means[start : start + size] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return means


def _interval(observed: float, means: np.ndarray, confidence: float) -> dict:
    """Percentile interval and two-sided p-value (see `paired_bootstrap`) from the resampled statistics."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if observed > 0:
        p_value = min(1.0, 2.0 * float(np.mean(means <= 0)))
    elif observed < 0:
        p_value = min(1.0, 2.0 * float(np.mean(means >= 0)))
    else:
        p_value = 1.0
    return {
        "diff": observed,
        "ci95": [float(lo), float(hi)],
        "confidence": confidence,
        "n_resamples": len(means),
        "p_value": p_value,
    }


def paired_item_scores(
    before_result: dict, after_result: dict, key: str = "correct"
) -> tuple[list[float], list[float]]:
    """Per-item scores of two suite results aligned by item id (ids in both only, in `before_result`'s order).

    Works on any result with an "items" list of records carrying "id" and `key` (QA, multiple choice): booleans
    become 0.0 / 1.0, so the bootstrap of "correct" is a bootstrap of accuracy.
    """
    after_by_id = {r["id"]: r[key] for r in after_result["items"]}
    before_scores: list[float] = []
    after_scores: list[float] = []
    for record in before_result["items"]:
        if record["id"] in after_by_id:
            before_scores.append(float(record[key]))
            after_scores.append(float(after_by_id[record["id"]]))
    return before_scores, after_scores
