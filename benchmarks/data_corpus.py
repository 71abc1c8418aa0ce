"""Seeded synthetic web-like corpus for benchmarks/data_pipeline.py: English-like JSONL with planted duplicates.

Each line is `{"id": "d000000042", "text": ...}`. Kinds of document, drawn per document:
- original (~80%): 1-4 KB of sentences (6-24 words) in paragraphs (2-6 sentences), words drawn from a
  Zipf-Mandelbrot distribution over a vocabulary whose top ranks are real English function words (the, of, and,
  to, be, that, have, with, ...), then common English words, then a long tail of pronounceable pseudo-words.
  They pass the Gopher quality rules.
- exact_dup (~5%): a verbatim copy of an earlier original.
- near_dup (~10%): an earlier original with 1-3% of its words substituted, inserted or deleted.
  Character-5-gram Jaccard to the source is ~0.90-0.97; word-5-gram Jaccard (what datatrove's MinHash shingles)
  is ~0.75-0.93. Both are measured on a sample and written to the corpus description.
- low_quality (~5%): a third each of too-short docs (< 50 words), symbol soup ('#', digits, punctuation) and
  one short line ending in '...' repeated 20-60 times. Each fails at least one Gopher quality rule.

Generation is numpy-vectorized per batch of documents (~10 s per 256 MB on one core). Ground truth is saved as
`<corpus>.labels.npz` (kind and source index per document) so kept ids can be scored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
KINDS = ("original", "exact_dup", "near_dup", "low_quality")
KIND_P = (0.80, 0.05, 0.10, 0.05)
RECENT = 4096  # originals kept in memory as duplicate sources: bounds memory at any corpus size

# Frequency-ordered English function words first: Gopher's stop-word rule needs 2 of the/be/to/of/and/that/have/with.
FUNCTION_WORDS = (
    "the of and to a in is that for it as was with be by on not he I this are or his from at which but have an had "
    "they you were their one all we can her has there been if more when will would who so no she other its may these "
    "what them than some him time into only do new about two then also could our any such first most over many after "
    "like years where made even each between those should well people through because how work way still very own "
    "same here much use part must while under being both three during before world might life since state last long "
    "great another against without used found however make number day just year given high us never around"
).split()
CONTENT_WORDS = (
    "water system program government school family group country problem company service market business power "
    "policy research process development information history community economic public report health student "
    "example result level question change order point interest education energy science language material method "
    "design control value support record region center local area data model network project product industry "
    "building river garden village city station island mountain forest animal plant weather season market price "
    "theory practice analysis effect source nature reason experience evidence decision position structure "
    "population species surface pressure temperature movement character culture society century letter music "
    "picture story writer reader teacher doctor member leader worker farmer council church court army field road "
    "bridge engine machine vessel harbor castle temple museum library hospital university college factory office "
    "early large small local national general social political natural important different possible available "
    "common similar recent special certain major strong simple private modern central human central western "
    "eastern northern southern ancient original total single open free full clear short better higher lower "
    "describe include consider provide develop produce increase require reduce remain receive suggest establish "
    "continue become appear allow create follow contain represent explain measure observe compare publish build"
).split()
SYLLABLES_ONSET = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "br", "st", "tr", "pl", "gr"]
SYLLABLES_VOWEL = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
SYLLABLES_CODA = ["", "", "n", "r", "s", "l", "t", "nd", "st", "m"]


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]
    table: np.ndarray  # object array, 4 forms per word: plain, Capitalized, "word.", "word,"
    cdf: np.ndarray  # Zipf-Mandelbrot cumulative distribution over word ranks

    @property
    def size(self) -> int:
        return len(self.words)


def make_vocabulary(rng: np.random.Generator, size: int = 20_000) -> Vocabulary:
    """Real English words at the head, pseudo-words of 1-3 syllables in the tail; Zipf-Mandelbrot weights."""
    words = list(dict.fromkeys(FUNCTION_WORDS + CONTENT_WORDS))
    seen = set(words)
    while len(words) < size:
        n = int(rng.integers(1, 4))
        w = "".join(
            SYLLABLES_ONSET[rng.integers(len(SYLLABLES_ONSET))]
            + SYLLABLES_VOWEL[rng.integers(len(SYLLABLES_VOWEL))]
            + SYLLABLES_CODA[rng.integers(len(SYLLABLES_CODA))]
            for _ in range(n)
        )
        if w not in seen:
            seen.add(w)
            words.append(w)
    forms = [words, [w[:1].upper() + w[1:] for w in words], [w + "." for w in words], [w + "," for w in words]]
    table = np.array([w for form in forms for w in form], dtype=object)
    weights = 1.0 / (np.arange(1, size + 1) + 2.7) ** 1.0
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return Vocabulary(words, table, cdf)


def _sample_ids(rng: np.random.Generator, vocab: Vocabulary, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(vocab.cdf, rng.random(n)), vocab.size - 1)


def original_docs(rng: np.random.Generator, vocab: Vocabulary, n: int) -> list[str]:
    """n English-like documents of ~1-4 KB: all words of the batch sampled at once, joined per paragraph."""
    # ~6.3 bytes per word with its space and punctuation under this vocabulary; 15 words per sentence on average
    n_sent = np.maximum(2, (rng.uniform(1000, 4000, n) / (6.3 * 15)).astype(np.int64))
    lengths = rng.integers(6, 25, int(n_sent.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)))
    total = int(starts[-1])
    forms = np.where(rng.random(total) < 0.06, 3, 0)  # a comma after ~6% of words
    forms[starts[:-1]] = 1  # capitalized sentence start
    forms[starts[1:] - 1] = 2  # full stop at sentence end
    tokens = vocab.table[_sample_ids(rng, vocab, total) + vocab.size * forms].tolist()
    para_sizes = rng.integers(2, 7, len(lengths)).tolist()
    starts_l, doc_sent = starts.tolist(), np.concatenate(([0], np.cumsum(n_sent))).tolist()
    docs, p = [], 0
    for d in range(n):
        s, end, paras = doc_sent[d], doc_sent[d + 1], []
        while s < end:
            e = min(s + para_sizes[p], end)
            p += 1
            paras.append(" ".join(tokens[starts_l[s] : starts_l[e]]))
            s = e
        docs.append("\n\n".join(paras))
    return docs


def near_duplicate(rng: np.random.Generator, vocab: Vocabulary, text: str) -> str:
    """Substitute, insert or delete 1-3% of the words (at least 2 edits), keeping paragraph breaks."""
    words = text.split(" ")
    n_edits = max(2, round(rng.uniform(0.01, 0.03) * len(words)))
    positions = rng.choice(len(words), size=min(n_edits, len(words)), replace=False)
    ops = rng.integers(0, 3, len(positions))
    new_words = vocab.table[_sample_ids(rng, vocab, len(positions))].tolist()
    # apply from the end so earlier positions stay valid
    for pos, op, w in sorted(zip(positions.tolist(), ops.tolist(), new_words, strict=True), reverse=True):
        if op == 0 and "\n" not in words[pos]:
            words[pos] = w + words[pos][len(words[pos].rstrip(".,\n")) :]  # keep trailing punctuation/breaks
        elif op == 2 and len(words) > 1 and "\n" not in words[pos]:
            del words[pos]
        else:  # insert; also stands in for edits that would merge paragraphs
            words.insert(pos, w)
    return " ".join(words)


def low_quality_doc(rng: np.random.Generator, vocab: Vocabulary, kind: int) -> str:
    """kind 0: too short; 1: symbol soup; 2: one line ending in '...' repeated."""
    if kind == 0:
        return " ".join(vocab.table[_sample_ids(rng, vocab, int(rng.integers(5, 40)))].tolist()) + "."
    if kind == 1:
        symbols = np.array(list("#$%&*@!?{}[]<>|~^+=/\\0123456789"))
        tokens = []
        for _ in range(int(rng.integers(80, 400))):
            if rng.random() < 0.35:
                tokens.append(vocab.words[int(_sample_ids(rng, vocab, 1)[0])])
            else:
                tokens.append("".join(rng.choice(symbols, int(rng.integers(1, 6)))))
        return " ".join(tokens)
    line = " ".join(vocab.table[_sample_ids(rng, vocab, int(rng.integers(4, 10)))].tolist()) + "..."
    return "\n".join([line] * int(rng.integers(20, 60)))


def _shingles(text: str, n: int, words: bool) -> set:
    if words:
        tokens = "".join(c if c.isalnum() else " " for c in text.lower()).split()
        return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
    norm = " ".join(text.lower().split())
    return {norm[i : i + n] for i in range(len(norm) - n + 1)}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    v = np.asarray(values)
    stats = {"min": v.min(), "p10": np.quantile(v, 0.1), "median": np.median(v), "max": v.max()}
    return {k: round(float(x), 3) for k, x in stats.items()} | {"n": len(values)}


def generate(path: Path, size_mb: float, seed: int, batch_docs: int = 2000) -> dict:
    """Write the corpus to `path` (temp file then rename) and return its description; labels go next to it."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(rng)
    target = int(size_mb * 1e6)
    kinds: list[np.ndarray] = []
    sources: list[np.ndarray] = []
    recent_text: list[str] = []  # ring buffer of recent originals, the duplicate sources
    recent_index: list[int] = []
    jac_char: list[float] = []
    jac_word: list[float] = []
    written, n_docs = 0, 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        while written < target:
            kind = rng.choice(len(KINDS), size=batch_docs, p=KIND_P)
            if n_docs == 0:
                kind[:50] = 0  # duplicates need earlier originals to copy
            source = np.full(batch_docs, -1, dtype=np.int64)
            originals = iter(original_docs(rng, vocab, int((kind == 0).sum())))
            lines, batch_bytes = [], 0
            for j, k in enumerate(kind.tolist()):
                i = n_docs + j
                if k == 0:
                    text = next(originals)
                    if len(recent_text) < RECENT:
                        recent_text.append(text)
                        recent_index.append(i)
                    else:
                        slot = int(rng.integers(RECENT))
                        recent_text[slot], recent_index[slot] = text, i
                elif k in (1, 2):
                    slot = int(rng.integers(len(recent_text)))
                    source[j] = recent_index[slot]
                    text = recent_text[slot]
                    if k == 2:
                        dup = near_duplicate(rng, vocab, text)
                        if len(jac_char) < 300:
                            jac_char.append(_jaccard(_shingles(text, 5, False), _shingles(dup, 5, False)))
                            jac_word.append(_jaccard(_shingles(text, 5, True), _shingles(dup, 5, True)))
                        text = dup
                else:
                    text = low_quality_doc(rng, vocab, int(rng.integers(3)))
                lines.append(json.dumps({"id": f"d{i:09d}", "text": text}))  # ASCII: len() is bytes
                batch_bytes += len(lines[-1]) + 1
                if written + batch_bytes >= target:
                    break
            blob = ("\n".join(lines) + "\n").encode()
            f.write(blob)
            written += len(blob)
            kinds.append(kind[: len(lines)].astype(np.int8))
            sources.append(source[: len(lines)])
            n_docs += len(lines)
    kind_all, source_all = np.concatenate(kinds), np.concatenate(sources)
    np.savez(labels_path(path), kind=kind_all, source=source_all)
    os.replace(tmp, path)
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size_mb_requested": size_mb,
        "bytes": path.stat().st_size,
        "documents": int(n_docs),
        "by_kind": {name: int((kind_all == k).sum()) for k, name in enumerate(KINDS)},
        "originals_with_duplicates": int(len(np.unique(source_all[source_all >= 0]))),
        "near_dup_jaccard_char5": _summary(jac_char),
        "near_dup_jaccard_word5": _summary(jac_word),
        "vocabulary": f"{vocab.size} words, Zipf-Mandelbrot 1/(rank+2.7); top ranks English function words",
    }


def labels_path(corpus: Path) -> Path:
    return corpus.with_name(corpus.stem + ".labels.npz")


def ensure_corpus(work: Path, size_mb: float, seed: int) -> tuple[Path, dict]:
    """The corpus for (size, seed, generator version), generated once and reused while its files are intact."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"corpus-{size_mb:g}mb-seed{seed}.jsonl"
    meta_path = path.with_name(path.stem + ".meta.json")
    if path.exists() and meta_path.exists() and labels_path(path).exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("generator_version") == GENERATOR_VERSION and meta.get("bytes") == path.stat().st_size:
            return path, meta | {"reused": True}
    meta = generate(path, size_mb, seed)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return path, meta | {"reused": False}


def split_shards(corpus: Path, n: int) -> list[Path]:
    """Copy the corpus into n line-aligned shards of about equal bytes (datatrove parallelizes over files only)."""
    shard_dir = corpus.with_name(corpus.stem + f".shards{n}")
    shards = [shard_dir / f"{i:02d}.jsonl" for i in range(n)]
    size = corpus.stat().st_size
    if all(s.exists() for s in shards) and sum(s.stat().st_size for s in shards) == size:
        return shards
    shard_dir.mkdir(parents=True, exist_ok=True)
    with open(corpus, "rb") as src:
        for i, shard in enumerate(shards):
            end = size if i == n - 1 else (i + 1) * size // n
            with open(shard, "wb") as dst:
                while src.tell() < end:
                    dst.write(src.read(min(16 << 20, end - src.tell())))
                if i < n - 1:
                    dst.write(src.readline())  # finish the line the cut fell in
    return shards


def score_kept(corpus: Path, kept_ids: set[int]) -> dict:
    """How many planted duplicates and low-quality docs survived, from ground truth labels and the kept ids."""
    labels = np.load(labels_path(corpus))
    kind, source = labels["kind"], labels["source"]
    kept = np.zeros(len(kind), dtype=bool)
    idx = np.fromiter(kept_ids, dtype=np.int64, count=len(kept_ids))
    kept[idx[idx < len(kind)]] = True
    group = np.where(source >= 0, source, np.arange(len(kind)))  # a duplicate belongs to its source's group
    dup_group = np.zeros(len(kind), dtype=bool)
    dup_group[source[source >= 0]] = True
    dup_group = dup_group[group]  # members of a group that has duplicates
    kept_per_group = np.bincount(group[kept & dup_group], minlength=len(kind))
    singletons = (kind == 0) & ~dup_group
    return {
        "kept_by_kind": {name: int((kept & (kind == k)).sum()) for k, name in enumerate(KINDS)},
        "duplicate_groups": int(dup_group[kind == 0].sum()),
        "duplicate_groups_fully_deduped": int((kept_per_group[np.unique(group[dup_group])] == 1).sum()),
        "duplicates_missed": int(np.maximum(kept_per_group - 1, 0).sum()),
        "groups_removed_entirely": int((kept_per_group[np.unique(group[dup_group])] == 0).sum()),
        "unique_originals_removed": int((singletons & ~kept).sum()),
        "low_quality_kept": int((kept & (kind == 3)).sum()),
    }
