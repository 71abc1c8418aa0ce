"""Reciprocal rank fusion (Cormack et al., 2009): merge rankings by rank alone, so BM25 and cosine scores, which
live on unrelated scales, need no normalisation."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

DEFAULT_RRF_K = 60  # the paper's constant, also LangChain's, LlamaIndex's and LanceDB's default


def rrf_fuse(
    rankings: Sequence[Sequence[Key]], k: int = DEFAULT_RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[Key, float]]:
    """Items of all rankings (each best first), by sum of weight / (k + rank) with ranks from 1, best first.

    Ties keep the order in which items were first seen (first ranking first), so results are deterministic.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[Key, float] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
