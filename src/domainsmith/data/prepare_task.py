"""One unit of `data prepare`'s first pass, run in a worker process: read a file (or a byte range of one), clean
every record, count tokens, and compute dedup keys for the records kept.

A task writes, beside each other in the work folder: the kept records (JSONL), their arrays (line, tokens, exact
key; MinHash signatures in a raw uint32 file), the records it removed or rejected with reasons, and finally a
`.done.json` with its counts. The done file is written last and atomically, so an interrupted prepare re-runs
exactly the tasks without one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import atomic_open, atomic_write_json
from ..recipe import PrepareSettings
from .cleaning import Cleaner
from .decontaminate import EvalNgrams
from .minhash import MinHasher, exact_key, normalize_for_dedup
from .readers import Malformed, Record, iter_file_records

_BATCH = 512  # records tokenized together


@dataclass(frozen=True)
class Task:
    index: int
    source: int  # index into the recipe's data list
    role: str
    path: str
    fmt: str
    text_field: str
    byte_range: tuple[int, int, int] | None = None  # (start, end, first line) of a large JSONL file

    @property
    def stem(self) -> str:
        return f"task-{self.index:05d}"


@dataclass
class TaskContext:
    """What every task needs besides its own file; sent to each worker once."""

    settings: PrepareSettings
    work_dir: str
    on_bad_record: str
    tokenizer_path: str | None
    eval_ngrams: EvalNgrams | None
    seed: int


@dataclass
class TaskCounts:
    records_in: int = 0
    blank_lines: int = 0
    rejected: int = 0  # malformed: could not be parsed
    tokens_in: int = 0  # tokens of the parsed records
    removed: dict[str, list[int]] = field(default_factory=dict)  # rule -> [records, tokens]
    kept: list[int] = field(default_factory=lambda: [0, 0])
    kinds: list[str] = field(default_factory=list)  # record kinds kept (text, chat)


_worker_state: dict = {}


def _tokenizer(path: str | None):
    if path is None:
        return None
    if "tokenizer" not in _worker_state:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker per core already
        from transformers import AutoTokenizer

        _worker_state["tokenizer"] = AutoTokenizer.from_pretrained(path)
    return _worker_state["tokenizer"]


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text (no special tokens). A fast tokenizer's backend skips offset mapping: about 2x faster."""
    if tokenizer is None or not texts:
        return [0] * len(texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def done_path(work_dir: Path, task: Task) -> Path:
    return work_dir / f"{task.stem}.done.json"


def run_task(task: Task, ctx: TaskContext) -> dict:
    """Process one task and return its counts (also written to its done file)."""
    work = Path(ctx.work_dir)
    settings = ctx.settings
    cleaner = Cleaner(settings.clean, settings.decontaminate, ctx.eval_ngrams)
    tokenizer = _tokenizer(ctx.tokenizer_path)
    hasher = MinHasher(settings.dedup.num_perm, settings.dedup.ngram, ctx.seed) if settings.dedup.near else None
    counts = TaskCounts()
    lines: list[int] = []
    tokens: list[int] = []
    exact: list[int] = []
    near: list[bool] = []
    removed: Counter[str] = Counter()
    removed_tokens: Counter[str] = Counter()
    kinds: set[str] = set()

    with (
        atomic_open(work / f"{task.stem}.records.jsonl", "w", encoding="utf-8") as kept_out,
        atomic_open(work / f"{task.stem}.rejects.jsonl", "w", encoding="utf-8") as rejects_out,
        atomic_open(work / f"{task.stem}.sig", "wb") as sig_out,
    ):

        def reject(line: int, rule: str, reason: str, raw: object) -> None:
            row = {"source": task.path, "line": line, "rule": rule, "reason": reason, "record": raw}
            rejects_out.write(json.dumps(row, ensure_ascii=False) + "\n")

        def flush(batch: list[Record]) -> None:
            texts = [r.joined() for r in batch]
            for record, text, n_tokens in zip(batch, texts, token_counts(tokenizer, texts), strict=True):
                counts.tokens_in += n_tokens
                verdict = cleaner.check(record, text)
                if verdict.rule is not None:
                    removed[verdict.rule] += 1
                    removed_tokens[verdict.rule] += n_tokens
                    reject(record.line, verdict.rule, verdict.reason, record.payload())
                    continue
                normalized = normalize_for_dedup(text)
                lines.append(record.line)
                kinds.add(record.kind)
                tokens.append(n_tokens)
                exact.append(exact_key(normalized))
                near.append(record.kind in settings.dedup.near_applies_to)
                if hasher is not None:
                    sig_out.write(hasher.signature(normalized).tobytes())
                kept_out.write(json.dumps({"l": record.line, **record.payload()}, ensure_ascii=False) + "\n")
            batch.clear()

        batch: list[Record] = []
        for item in iter_file_records(Path(task.path), task.fmt, task.text_field, task.byte_range):
            if item is None:
                counts.blank_lines += 1
                continue
            counts.records_in += 1
            if isinstance(item, Malformed):
                if ctx.on_bad_record == "fail":
                    hint = "(use --on-bad-record skip to skip such records)"
                    raise DataError(task.path, f"{item.reason} {hint}", item.line)
                counts.rejected += 1
                reject(item.line, "malformed", item.reason, item.raw)
                continue
            batch.append(cleaner.repair(item))
            if len(batch) >= _BATCH:
                flush(batch)
        flush(batch)

    counts.removed = {rule: [removed[rule], removed_tokens[rule]] for rule in removed}
    counts.kept = [len(lines), int(sum(tokens))]
    counts.kinds = sorted(kinds)
    np.savez(
        work / f"{task.stem}.arrays.npz",
        line=np.asarray(lines, dtype=np.int64),
        tokens=np.asarray(tokens, dtype=np.int64),
        exact=np.asarray(exact, dtype=np.uint64),
        near=np.asarray(near, dtype=bool),
    )
    result = {"task": task.index, **counts.__dict__}
    atomic_write_json(done_path(work, task), result)
    return result
