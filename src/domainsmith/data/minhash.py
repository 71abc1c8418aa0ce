"""MinHash signatures over character n-grams, LSH banding derived from a Jaccard threshold, exact-match keys.

Character shingles (not word shingles) so Chinese, which has no spaces, deduplicates like English. Everything per
document is a handful of numpy operations over its shingle hashes, so the cost is a few microseconds per kB.

Banding: a pair with Jaccard s becomes a candidate with probability P(s) = 1 - (1 - s^r)^b (b bands of r rows).
`lsh_params` picks (b, r) within the permutation budget that minimise the weighted false-positive plus
false-negative area around the threshold (datasketch's method), and `check_banding` refuses a layout that misses
most pairs at the threshold (e.g. bands and rows swapped).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from ..errors import DomainsmithError

_NON_WORD = re.compile(r"[\W_]+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def normalize_for_dedup(text: str) -> str:
    """Lowercase, every run of punctuation and whitespace one space: copies that differ only in these are equal."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def exact_key(normalized: str) -> int:
    """64-bit key of normalized text (blake2b: stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the output (vectorized, wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int

    def probability(self, s: float) -> float:
        """Chance that a pair with Jaccard `s` shares at least one band."""
        return 1.0 - (1.0 - s**self.rows) ** self.bands


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    xs = np.linspace(a, b, steps + 1)
    return float(np.trapezoid(f(xs), xs))


# Candidates are verified against their estimated Jaccard, so a false positive costs one comparison while a false
# negative loses a duplicate: weight misses 9:1.
_FALSE_POSITIVE_WEIGHT = 0.1


def lsh_params(threshold: float, num_perm: int) -> Banding:
    """Bands x rows (within `num_perm`) minimising the weighted false-positive + false-negative probability mass."""
    best, best_err = Banding(1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            b = Banding(bands, rows)
            fp = _integrate(b.probability, 0.0, threshold)
            fn = _integrate(lambda s, b=b: 1.0 - b.probability(s), threshold, 1.0)
            err = _FALSE_POSITIVE_WEIGHT * fp + (1 - _FALSE_POSITIVE_WEIGHT) * fn
            if err < best_err:
                best, best_err = b, err
    return best


def check_banding(banding: Banding, threshold: float) -> dict:
    """The match-probability curve around the threshold; an error when the layout cannot find duplicates there
    (e.g. bands and rows swapped)."""
    curve = {f"{s:.2f}": round(banding.probability(s), 4) for s in (0.5, 0.6, 0.7, threshold, 0.9, 0.95)}
    at = banding.probability(threshold)
    high = banding.probability(min(0.99, threshold + 0.1))
    if at < 0.5 or high < 0.9:
        raise DomainsmithError(
            f"MinHash banding {banding.bands} bands x {banding.rows} rows catches only {at:.1%} of pairs at Jaccard "
            f"{threshold} ({high:.1%} at {min(0.99, threshold + 0.1):.2f}); use more permutations or fewer rows"
        )
    return {"bands": banding.bands, "rows": banding.rows, "match_probability": curve}


class MinHasher:
    """MinHash signatures of character n-grams by one-permutation hashing with rotation densification.

    One hash per shingle splits the shingles into `num_perm` bins; a bin's minimum is one signature value
    (Li, Owen & Zhang 2012). Bins left empty by a short text borrow the next filled bin's value plus an offset per
    hop (Shrivastava & Li 2014), which keeps the share of equal values an unbiased Jaccard estimate. This costs one
    sort per document instead of `num_perm` hash evaluations per shingle.
    """

    def __init__(self, num_perm: int, ngram: int, seed: int = 0) -> None:
        self.num_perm = num_perm
        self.ngram = ngram
        self._seed = np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
        self._powers = np.array([pow(1_000_003, k, 2**64) for k in range(ngram)][::-1], dtype=np.uint64)
        self._bins = np.arange(num_perm)

    def shingle_hashes(self, normalized: str) -> np.ndarray:
        """64-bit hashes of the text's character n-grams (the whole text if it is shorter), repeats included."""
        codes = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        n = len(codes) - self.ngram + 1
        if n <= 0:
            codes = np.pad(codes, (0, self.ngram - len(codes)))
            n = 1
        h = codes[:n] * self._powers[0]
        for k in range(1, self.ngram):
            h += codes[k : k + n] * self._powers[k]  # polynomial hash, wrapping mod 2^64
        return _mix64(h ^ self._seed)

    def signature(self, normalized: str) -> np.ndarray:
        """(num_perm,) uint32 signature."""
        h = self.shingle_hashes(normalized)
        # Bin from the high 32 bits (multiply-shift onto [0, num_perm)), value from the low 32 bits.
        bins = ((h >> np.uint64(32)) * np.uint64(self.num_perm)) >> np.uint64(32)
        keys = np.sort((bins << np.uint64(32)) | (h & np.uint64(0xFFFFFFFF)))
        sorted_bins = (keys >> np.uint64(32)).astype(np.int64)
        first = np.empty(len(keys), dtype=bool)
        first[0] = True
        np.not_equal(sorted_bins[1:], sorted_bins[:-1], out=first[1:])
        filled = sorted_bins[first]
        sig = np.zeros(self.num_perm, dtype=np.uint64)
        sig[filled] = keys[first] & np.uint64(0xFFFFFFFF)
        if len(filled) < self.num_perm:
            donor_pos = np.searchsorted(filled, self._bins) % len(filled)
            hops = (filled[donor_pos] - self._bins) % self.num_perm
            sig = sig[filled[donor_pos]] + hops.astype(np.uint64) * np.uint64(0x9E3779B1)
        return (sig & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def band_keys(signatures: np.ndarray, banding: Banding, seed: int = 0) -> np.ndarray:
    """(n, bands) uint64 keys: two records share a key in band j iff their rows of band j are (almost surely) equal."""
    n = signatures.shape[0]
    used = signatures[:, : banding.bands * banding.rows].astype(np.uint64).reshape(n, banding.bands, banding.rows)
    weights = _mix64(np.arange(1, banding.rows + 1, dtype=np.uint64) + np.uint64(seed))
    return _mix64((used * weights).sum(axis=2, dtype=np.uint64))


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row (the MinHash estimate of Jaccard similarity)."""
    return (a == b).mean(axis=-1)
