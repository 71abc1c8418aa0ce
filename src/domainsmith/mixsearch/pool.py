"""The documents the proxy runs draw from: the recipe's sources cleaned and deduplicated by `data prepare` (without
its mix: each proxy run mixes on its own), split per role into training documents and validation documents.

Validation for a role is the recipe's `mix_search.validation` files for that role when given (training documents
sharing a 13-word run with them are dropped and counted), else a fixed slice of the role's prepared documents
chosen by a hash of the text (the same slice on every run and at every share). Near-duplicate removal ran over the
whole pool first, so no held-out document has a near copy among the training documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.decontaminate import EvalNgrams
from ..errors import DomainsmithError
from ..evaluate.perplexity import load_texts
from ..files import json_sha256
from ..recipe import MixSearchSettings, PrepareSettings, Recipe
from ..train.pretrain_stage import prepared_documents

ROLES = ("domain", "general")
OVERLAP_WORDS = 13


@dataclass
class Pool:
    train: dict[str, list[str]]
    train_tokens: dict[str, np.ndarray]  # per training document, with its EOS
    validation: dict[str, list[str]]
    fingerprint: str
    summary: dict = field(default_factory=dict)


def _held_out(text: str, fraction: float) -> bool:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def prepare_pool(recipe: Recipe, out_dir: Path, on_bad_record: str, log: Callable[[str], None]) -> dict:
    """`data prepare` of the recipe's sources into out_dir, every cleaning and dedup rule as the recipe says, no mix."""
    from ..data.prepare import prepare_data

    settings = recipe.prepare or PrepareSettings()
    if recipe.prepare is None:
        log("the recipe has no prepare: section: the pool is cleaned and deduplicated with every default")
    settings = settings.model_copy(update={"mix": None, "out_dir": out_dir.absolute(), "output_format": "jsonl"})
    return prepare_data(recipe.model_copy(update={"prepare": settings}), on_bad_record, log=log)


def split_pool(recipe: Recipe, prepared_dir: Path, stats: dict, tokenizer, settings: MixSearchSettings) -> Pool:
    """Training and validation documents per role, and the training documents' token counts."""
    given: dict[str, list[str]] = {}
    for source in settings.validation:
        given.setdefault(source.role, []).extend(load_texts(recipe.resolve(source.path)))
    grams = EvalNgrams(OVERLAP_WORDS)
    for role, texts in given.items():
        for text in texts:
            grams.add_text(f"mix_search validation ({role})", text)

    train: dict[str, list[str]] = {r: [] for r in ROLES}
    validation: dict[str, list[str]] = {r: list(given.get(r, [])) for r in ROLES}
    dropped = dict.fromkeys(ROLES, 0)
    given_exact = {" ".join(t.split()) for texts in given.values() for t in texts}  # short texts have no 13-gram
    for role, text in prepared_documents(prepared_dir, tokenizer):
        if role not in given and _held_out(text, settings.heldout_fraction):
            validation[role].append(text)
        elif given and (" ".join(text.split()) in given_exact or grams.find_in_text(text) is not None):
            dropped[role] += 1  # overlaps a given validation text, of either role
        else:
            train[role].append(text)
    for role in ROLES:
        if not train[role] and not validation[role]:
            raise DomainsmithError(f"mix search needs {role} data: the prepared pool has no {role} documents")
        if not validation[role]:  # a tiny pool where the hash held nothing out: hold out one document
            validation[role].append(train[role].pop())
        if not train[role]:
            raise DomainsmithError(f"mix search: every {role} document is held out for validation; add {role} data")

    eos = tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer
    train_tokens = {}
    for role, texts in train.items():
        encoded = backend.encode_batch_fast(texts, add_special_tokens=False)
        train_tokens[role] = np.array([len(e.ids) + (eos is not None) for e in encoded], dtype=np.int64)
    summary = {
        role: {
            "train_documents": len(train[role]),
            "train_tokens": int(train_tokens[role].sum()),
            "validation_documents": len(validation[role]),
            "validation": "mix_search.validation" if role in given else f"{settings.heldout_fraction:.0%} held out",
            "dropped_for_overlap": dropped[role],
        }
        for role in ROLES
    }
    fingerprint = json_sha256(
        {"prepared": stats["fingerprint"], "heldout": settings.heldout_fraction, "validation": json_sha256(given)}
    )
    return Pool(train, train_tokens, validation, fingerprint, summary)
