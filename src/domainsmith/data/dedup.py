"""Deduplicate the records every task kept, within and across sources: exact (normalized-text key) first, then
near duplicates by MinHash LSH, candidates verified by their estimated Jaccard, clustered by union-find.

The first record of a cluster in recipe order (source order, then line) is kept; the others name it. Memory:
keys are 8 bytes per record and band keys 8 per band; signatures are read from disk only for candidate pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..recipe import DedupSettings
from .minhash import Banding, band_keys, estimated_jaccard

KEEP, EXACT, NEAR = 0, 1, 2
_CHUNK = 65_536  # records (or pairs) per vectorized step, to bound temporary memory


@dataclass
class DedupResult:
    status: np.ndarray  # (n,) KEEP / EXACT / NEAR per record, in global order
    partner: np.ndarray  # (n,) global index of the record kept in its place, -1 if kept
    similarity: np.ndarray  # (n,) estimated Jaccard with that record (1.0 for exact)
    stats: dict = field(default_factory=dict)


def _group_firsts(keys: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, first) pairs for every group of equal keys among `candidates` (global indices, ascending):
    each later member pairs with the group's first, i.e. lowest, index."""
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    sorted_keys = keys[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    first = order[starts][np.cumsum(starts) - 1]
    members = ~starts
    return order[members], first[members]


def _find(parent: dict[int, int], x: int) -> int:
    root = x
    while parent.get(root, root) != root:
        root = parent[root]
    while parent.get(x, x) != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def deduplicate(
    exact: np.ndarray,
    signatures: Path | None,
    num_perm: int,
    settings: DedupSettings,
    banding: Banding,
    near_eligible: np.ndarray | None = None,
) -> DedupResult:
    """Duplicates among `exact` keys (n,) and the (n, num_perm) uint32 signatures stored raw in `signatures`;
    near duplicates only among records where `near_eligible` (default: all)."""
    n = len(exact)
    status = np.zeros(n, dtype=np.int8)
    partner = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    stats = {"exact_duplicates": 0, "near_duplicates": 0, "near_clusters": 0, "candidate_pairs": 0}
    if n == 0:
        return DedupResult(status, partner, similarity, stats)
    if settings.exact:
        member, first = _group_firsts(exact, np.arange(n))
        status[member], partner[member], similarity[member] = EXACT, first, 1.0
        stats["exact_duplicates"] = len(member)
    if settings.near and signatures is not None:
        sig = np.memmap(signatures, dtype=np.uint32, mode="r", shape=(n, num_perm))
        eligible = status == KEEP if near_eligible is None else (status == KEEP) & near_eligible
        alive = np.flatnonzero(eligible)
        bands = np.empty((n, banding.bands), dtype=np.uint64)
        for lo in range(0, n, _CHUNK):
            bands[lo : lo + _CHUNK] = band_keys(np.asarray(sig[lo : lo + _CHUNK]), banding)
        pairs = [np.stack(_group_firsts(bands[:, j], alive), axis=1) for j in range(banding.bands)]
        candidates = np.unique(np.concatenate(pairs), axis=0) if pairs else np.empty((0, 2), dtype=np.int64)
        del bands
        stats["candidate_pairs"] = len(candidates)
        parent: dict[int, int] = {}
        for lo in range(0, len(candidates), _CHUNK):
            chunk = candidates[lo : lo + _CHUNK]
            est = estimated_jaccard(np.asarray(sig[chunk[:, 0]]), np.asarray(sig[chunk[:, 1]]))
            for a, b in chunk[est >= settings.threshold].tolist():
                ra, rb = _find(parent, a), _find(parent, b)
                if ra != rb:  # the lower index becomes the root: the earliest record is the one kept
                    parent[max(ra, rb)] = min(ra, rb)
        members = np.array([x for x in parent if _find(parent, x) != x], dtype=np.int64)
        if len(members):
            roots = np.array([_find(parent, int(x)) for x in members], dtype=np.int64)
            status[members], partner[members] = NEAR, roots
            similarity[members] = estimated_jaccard(np.asarray(sig[members]), np.asarray(sig[roots]))
            stats["near_duplicates"] = len(members)
            stats["near_clusters"] = len(np.unique(roots))
    return DedupResult(status, partner, similarity, stats)
