"""`domainsmith data inspect FILE`: what a data file holds and what is wrong with it, before preparing it.

Reports the encoding, record shapes, record count, blank lines, a token-length histogram (the model's tokenizer,
or an estimate without one), the language mix (py3langid, offline), exact duplicates, and problems with their
file and line: malformed records, empty texts, records longer than a limit.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ..errors import DataError
from .minhash import exact_key, normalize_for_dedup
from .prepare_task import token_counts
from .readers import Malformed, Record, iter_file_records, sniff_encoding, source_files

_BINS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_MAX_LISTED = 20  # problems listed per kind (all are counted)
_BATCH = 256
_MIN_LETTERS = 40  # fewer letters than this: language identification is a guess (as the cleaning rule)
_LETTERS = re.compile(r"[^\W\d_]")


def _histogram(lengths: list[int]) -> list[dict]:
    counts = Counter()
    for n in lengths:
        upper = next((b for b in _BINS if n < b), None)
        counts[upper] += 1
    rows, lower = [], 0
    for b in (*_BINS, None):
        rows.append({"tokens": f"{lower}-{b - 1}" if b else f">={lower}", "records": counts.get(b, 0)})
        lower = b or lower
    return rows


def _estimate_tokens(texts: list[str]) -> list[int]:
    from ..plan.inspect import estimate_tokens

    return [estimate_tokens(t) for t in texts]


def inspect_data_file(
    path: Path, fmt: str = "auto", text_field: str = "text", tokenizer=None, max_tokens: int = 4096
) -> dict:
    """Stream `path` (a file, or every supported file in a folder) once and describe it."""
    from .language import LanguageIdentifier

    langid = LanguageIdentifier()
    files = source_files(path, fmt)
    shapes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    encodings: Counter[str] = Counter()
    problems: dict[str, list[dict]] = {"malformed": [], "empty": [], "too_long": [], "duplicate": []}
    problem_counts: Counter[str] = Counter()
    lengths: list[int] = []
    seen: dict[int, str] = {}
    records = blank = 0

    def problem(kind: str, where: str, reason: str) -> None:
        problem_counts[kind] += 1
        if len(problems[kind]) < _MAX_LISTED:
            problems[kind].append({"where": where, "reason": reason})

    def flush(batch: list[Record]) -> None:
        texts = [r.joined() for r in batch]
        counts = token_counts(tokenizer, texts) if tokenizer is not None else _estimate_tokens(texts)
        for record, text, n in zip(batch, texts, counts, strict=True):
            where = f"{record.source}:{record.line}"
            lengths.append(n)
            letters = len(_LETTERS.findall(text, 0, 4 * _MIN_LETTERS))
            languages[langid.identify(text)[0] if letters >= _MIN_LETTERS else "too short to tell"] += 1
            if not all(c.strip() for c in record.contents()):
                problem("empty", where, "empty text" if record.kind == "text" else "a turn with empty content")
            if n > max_tokens:
                problem("too_long", where, f"{n} tokens > {max_tokens}")
            key = exact_key(normalize_for_dedup(text))
            if key in seen:
                problem("duplicate", where, f"same normalized text as {seen[key]}")
            else:
                seen[key] = where
        batch.clear()

    for file in files:
        try:
            encodings[sniff_encoding(file)] += 1
        except DataError as exc:
            if not path.is_dir():
                raise  # one unreadable file: an error, not a report
            problem("malformed", str(file), exc.reason)
            continue
        batch: list[Record] = []
        try:
            for item in iter_file_records(file, fmt, text_field):
                if item is None:
                    blank += 1
                    continue
                records += 1
                if isinstance(item, Malformed):
                    problem("malformed", f"{item.source}:{item.line}", item.reason)
                    continue
                shapes[item.shape] += 1
                kinds[item.kind] += 1
                batch.append(item)
                if len(batch) >= _BATCH:
                    flush(batch)
        except DataError as exc:  # e.g. invalid UTF-8 midway: the rest of this file cannot be read
            problem("malformed", f"{exc.path}:{exc.line}" if exc.line else str(exc.path), exc.reason)
        flush(batch)
    total_tokens = sum(lengths)
    return {
        "path": str(path),
        "files": len(files),
        "encodings": dict(encodings),
        "records": records,
        "blank_lines": blank,
        "shapes": dict(shapes),
        "kinds": dict(kinds),
        "tokens": {
            "counted_with": "model tokenizer" if tokenizer is not None else "estimate (no tokenizer)",
            "total": total_tokens,
            "mean": round(total_tokens / len(lengths), 1) if lengths else 0,
            "max": max(lengths, default=0),
            "histogram": _histogram(lengths),
        },
        "languages": {k: round(v / len(lengths), 4) for k, v in languages.most_common()} if lengths else {},
        "problems": {kind: {"count": problem_counts[kind], "first": rows} for kind, rows in problems.items()},
    }
