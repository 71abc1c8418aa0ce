"""Perplexity of a model on plain text.

Perplexity uses sliding windows (the "perplexity of fixed-length models" method): a document longer than the
window is cut into windows that advance by `stride` tokens, and each window scores only the tokens no earlier
window scored, so every token is scored exactly once with up to `max_length - stride` tokens of prior context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

from ..data.json_records import iter_json_objects, required_text
from ..data.text_files import read_text_file
from ..errors import DataError
from .token_scoring import model_max_positions, pad_token_id, score_requests

_TEXT_SUFFIXES = {".txt", ".md"}
_JSON_SUFFIXES = {".jsonl", ".json"}


def _windows(n_tokens: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, n_targets) per window; with stride < max_length every token after the first is the target of
    exactly one window."""
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        # The first token of a window has no context inside it, so it can never be a target.
        n = min(end - prev_end, end - begin - 1)
        if n > 0:
            yield begin, end, n
        prev_end = end
        if end == n_tokens:
            break


def perplexity(
    model,
    tokenizer,
    texts: list[str],
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Token-level perplexity over all `texts` together: exp(total NLL / total scored tokens).

    Each document is tokenized on its own without special tokens. When the tokenizer has a BOS token it is
    prepended (as lm-evaluation-harness does for rolling log-likelihoods), so every text token is scored, the
    first one given only BOS. Without a BOS token the first token of each document has no context and is not
    scored. Documents longer than `max_length` (default: min(model context, 1024)) are scored in windows that
    advance by `stride` tokens (default `max_length // 2`), each token once with up to `max_length - stride` tokens
    of earlier context; a smaller stride gives more context per token and costs more forwards.
    `on_batch` receives the number of documents finished in each batch.

    Returns {"perplexity", "nll_per_token", "tokens", "documents", "max_length", "stride", "per_document"};
    `per_document` holds each document's summed NLL and scored token count ({"nll", "tokens"}), so a paired
    bootstrap over documents can recompute the corpus ratio.
    """
    if not texts:
        raise ValueError("no texts to score")
    limit = model_max_positions(model)
    if max_length is None:
        max_length = min(limit, 1024) if limit else 1024
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if limit is not None and max_length - 1 > limit:
        # The window's last token is only a target, so a window of max positions + 1 tokens still fits.
        raise ValueError(f"max_length {max_length} exceeds the model's {limit} positions")
    if stride is None:
        stride = max(1, max_length // 2)
    if not 1 <= stride < max_length:
        # A window's first token has no context inside it; stride == max_length would leave it unscored.
        raise ValueError(f"stride must be in [1, max_length - 1 = {max_length - 1}], got {stride}")

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    rows: list[list[int]] = []
    n_targets: list[int] = []
    owners: list[int] = []
    empty_docs = 0
    for doc, text in enumerate(texts):
        ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
        windows = list(_windows(len(ids), max_length, stride))
        if not windows:
            empty_docs += 1  # a single token and no BOS: nothing can be scored
        for begin, end, n in windows:
            rows.append(ids[begin:end])
            n_targets.append(n)
            owners.append(doc)
    if not rows:
        raise ValueError("no token can be scored: every text is shorter than two tokens")
    if on_batch and empty_docs:
        on_batch(empty_docs)
    logprobs = score_requests(model, rows, n_targets, owners, pad_token_id(tokenizer), batch_size, bf16, on_batch)
    per_document = [{"nll": 0.0, "tokens": 0} for _ in texts]
    for owner, lp in zip(owners, logprobs, strict=True):
        per_document[owner]["nll"] -= sum(lp)
        per_document[owner]["tokens"] += len(lp)
    tokens = sum(d["tokens"] for d in per_document)
    nll = sum(d["nll"] for d in per_document) / tokens
    return {
        "perplexity": math.exp(nll),
        "nll_per_token": nll,
        "tokens": tokens,
        "documents": len(texts),
        "max_length": max_length,
        "stride": stride,
        "per_document": per_document,
    }


def load_texts(path: Path) -> list[str]:
    """Documents to score: a .txt/.md file (one document), a directory of them (recursive, sorted by path), or
    .jsonl/.json records with a string field "text" (one document each)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
        if not files:
            raise DataError(path, "directory holds no .txt or .md files")
        return [read_text_file(p) for p in files]
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return [read_text_file(path)]
    if suffix not in _JSON_SUFFIXES:
        raise DataError(
            path, f"unsupported file type '{path.suffix}'; expected .txt, .md, .jsonl, .json or a directory"
        )
    texts: list[str] = []
    for line, value in iter_json_objects(path):
        texts.append(required_text(value, "text", path, line))
    if not texts:
        raise DataError(path, "no text records in file")
    return texts
