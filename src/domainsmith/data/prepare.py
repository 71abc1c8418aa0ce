"""`domainsmith data prepare`: every source through the same cleaning, then dedup across sources, then mixing by
token share, then sharded output with stats and rejects.

Pass 1 runs one task per file (or per ~32 MB byte range of a large JSONL file) in a process pool: the same code
for one file or thousands. Pass 2 (this process) deduplicates on the tasks' keys and signatures, plans the mix,
and streams the kept records into shards. Work files live under <out>/.work/<fingerprint>/, so an interrupted
prepare resumes with the tasks it had finished. Outputs are written atomically and stats.json last: it lists the
shards, so a reader never sees a half-written set.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..errors import DomainsmithError
from ..files import atomic_open, atomic_write_json, json_sha256, read_if_current
from ..recipe import Recipe
from .dedup import EXACT, NEAR, deduplicate
from .minhash import Banding, check_banding, lsh_params
from .mixing import mix_guidance, plan_mix
from .prepare_output import ShardWriter, copy_task_rejects
from .prepare_task import Task, TaskContext, done_path, run_task
from .readers import source_files, split_ranges

_TASK_BYTES = 32 << 20
_FORMAT_VERSION = 1  # bump when the work files' layout changes
Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _plan_tasks(recipe: Recipe, self_replay_files: dict[int, Path]) -> list[Task]:
    tasks: list[Task] = []
    for i, source in enumerate(recipe.data):
        if source.source == "self":
            files, fmt = [self_replay_files[i]], "alpaca"
        else:
            fmt = source.format
            files = source_files(recipe.resolve(source.path), fmt)
        for path in files:
            ranges = split_ranges(path, _TASK_BYTES) if path.suffix.lower() == ".jsonl" else [None]
            for byte_range in ranges:
                whole = byte_range is None or (byte_range[0] == 0 and byte_range[1] == path.stat().st_size)
                tasks.append(
                    Task(len(tasks), i, source.role, str(path), fmt, source.text_field, None if whole else byte_range)
                )
    return tasks


def _task_bytes(task: Task) -> int:
    return task.byte_range[1] - task.byte_range[0] if task.byte_range else Path(task.path).stat().st_size


def _fingerprint(recipe: Recipe, tasks: list[Task], tokenizer_path: str | None, eval_fp: dict) -> str:
    files = sorted({t.path for t in tasks})
    return json_sha256(
        {
            "version": _FORMAT_VERSION,
            "settings": recipe.prepare.model_dump(mode="json", exclude={"out_dir", "workers"}),
            "sources": [s.model_dump(mode="json") for s in recipe.data],
            "files": [[f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files],
            "tokenizer": tokenizer_path,
            "eval": eval_fp,
            "seed": recipe.seed,
        }
    )


def _run_tasks(tasks: list[Task], ctx: TaskContext, workers: int, progress: Progress) -> list[dict]:
    """Run the tasks without a done file (in parallel when workers > 1); return every task's counts in order."""
    work = Path(ctx.work_dir)
    results: dict[int, dict] = {}
    todo = []
    for task in tasks:
        cached = done_path(work, task)
        if cached.is_file():
            results[task.index] = json.loads(cached.read_text())
        else:
            todo.append(task)
    total = sum(_task_bytes(t) for t in tasks)
    done_bytes = total - sum(_task_bytes(t) for t in todo)
    progress("clean", done_bytes, total)
    if workers <= 1 or len(todo) <= 1 or not _main_is_importable():
        for task in todo:
            results[task.index] = run_task(task, ctx)
            done_bytes += _task_bytes(task)
            progress("clean", done_bytes, total)
    else:
        # spawn: the parent may hold threads (tokenizers, LanceDB) that fork would copy in a broken state.
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_task, task, ctx): task for task in todo}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    task = futures[future]
                    results[task.index] = future.result()
                    done_bytes += _task_bytes(task)
                    progress("clean", done_bytes, total)
    return [results[t.index] for t in tasks]


def _main_is_importable() -> bool:
    """spawn re-imports the parent's __main__ in every worker; code fed on stdin (python -) cannot be, so such a
    run prepares in this process instead of failing."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _concat_signatures(tasks: list[Task], work: Path) -> Path:
    """One raw signature file for all tasks, in task order (streamed: never all in memory)."""
    out = work / "signatures.u32"
    with atomic_open(out, "wb") as f:
        for task in tasks:
            with open(work / f"{task.stem}.sig", "rb") as part:
                shutil.copyfileobj(part, f, 1 << 22)
    return out


def _banding(recipe: Recipe) -> Banding:
    d = recipe.prepare.dedup
    return Banding(d.bands, d.rows) if d.bands is not None else lsh_params(d.threshold, d.num_perm)


def _eval_ngrams(recipe: Recipe):
    from ..evaluate.suites import load_suites, suite_fingerprints
    from .decontaminate import eval_ngrams_for

    if not recipe.prepare.decontaminate.enabled or not recipe.eval.suites:
        return None, {}
    grams = eval_ngrams_for(load_suites(recipe), recipe.prepare.decontaminate.ngram)
    return grams, suite_fingerprints(recipe)


def _empty_source_stats(recipe: Recipe) -> list[dict]:
    return [
        {
            "source": s.label,
            "role": s.role,
            "files": 0,
            "records_in": 0,
            "blank_lines": 0,
            "rejected": 0,
            "tokens_in": 0,
            "removed": {},
            "kept": {"records": 0, "tokens": 0},
        }
        for s in recipe.data
    ]


def _add_removed(row: dict, rule: str, records: int, tokens: int) -> None:
    entry = row["removed"].setdefault(rule, {"records": 0, "tokens": 0})
    entry["records"] += records
    entry["tokens"] += tokens


def prepare_data(
    recipe: Recipe,
    on_bad_record: str = "fail",
    progress: Progress = lambda phase, done, total: None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Run (or reuse) the recipe's data preparation; return stats.json's content."""
    if recipe.prepare is None:
        raise DomainsmithError("the recipe has no prepare: section (prepare: {} takes every default)")
    if not recipe.data:
        raise DomainsmithError("the recipe names no data: sources to prepare")
    settings = recipe.prepare
    out = recipe.prepared_dir
    banding = _banding(recipe)
    dedup_check = check_banding(banding, settings.dedup.threshold) if settings.dedup.near else None
    tokenizer_path = _tokenizer_path(recipe, log) if settings.count_tokens else None
    eval_ngrams, eval_fp = _eval_ngrams(recipe)
    self_replay_files = _self_replay_files(recipe, out, log)
    tasks = _plan_tasks(recipe, self_replay_files)
    fingerprint = _fingerprint(recipe, tasks, tokenizer_path, eval_fp)
    current = read_if_current(out / "stats.json", fingerprint)
    if current is not None and all((out / s["file"]).is_file() for s in current["output"]["shards"]):
        log(f"prepared data in {out} is up to date (reused)")
        return {**current, "reused": True}
    work = out / ".work" / fingerprint[:16]
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ctx = TaskContext(settings, str(work), on_bad_record, tokenizer_path, eval_ngrams, recipe.seed)
    workers = settings.workers or _cpu_count()
    counts = _run_tasks(tasks, ctx, workers, progress)
    clean_seconds = time.monotonic() - started

    sizes = [c["kept"][0] for c in counts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    arrays = [np.load(work / f"{t.stem}.arrays.npz") for t in tasks]
    lines = np.concatenate([a["line"] for a in arrays]) if arrays else np.zeros(0, np.int64)
    tokens = np.concatenate([a["tokens"] for a in arrays]) if arrays else np.zeros(0, np.int64)
    exact = np.concatenate([a["exact"] for a in arrays]) if arrays else np.zeros(0, np.uint64)
    near_eligible = np.concatenate([a["near"] for a in arrays]) if arrays else np.zeros(0, bool)
    task_of = np.repeat(np.arange(len(tasks)), sizes)
    progress("dedup", 0, 1)
    signatures = _concat_signatures(tasks, work) if settings.dedup.near else None
    dedup = deduplicate(exact, signatures, settings.dedup.num_perm, settings.dedup, banding, near_eligible)
    progress("dedup", 1, 1)

    roles = np.array([t.role for t in tasks])[task_of] if len(task_of) else np.array([], dtype=str)
    alive = dedup.status == 0
    copies = alive.astype(np.int64)
    mix_report = None
    if settings.mix is not None:
        per_role = {role: np.flatnonzero(alive & (roles == role)) for role in ("domain", "general")}
        role_copies, mix_report = plan_mix({r: tokens[idx] for r, idx in per_role.items()}, settings.mix, recipe.seed)
        for role, idx in per_role.items():
            copies[idx] = role_copies[role]
        kinds = set().union(*(c["kinds"] for c in counts))
        mix_report["guidance"] = mix_guidance(settings.mix.domain, kinds)
        for note in mix_report["guidance"]:
            log(f"note: {note}")

    sources = _empty_source_stats(recipe)
    for task, c in zip(tasks, counts, strict=True):
        row = sources[task.source]
        row["files"] += task.byte_range is None or task.byte_range[0] == 0
        for key in ("records_in", "blank_lines", "rejected", "tokens_in"):
            row[key] += c[key]
        for rule, (records, toks) in c["removed"].items():
            _add_removed(row, rule, records, toks)
    for status, rule in ((EXACT, "exact_duplicate"), (NEAR, "near_duplicate")):
        for i in np.flatnonzero(dedup.status == status):
            _add_removed(sources[tasks[task_of[i]].source], rule, 1, int(tokens[i]))
    for i in np.flatnonzero(alive & (copies == 0)):
        _add_removed(sources[tasks[task_of[i]].source], "mix", 1, int(tokens[i]))
    for i in np.flatnonzero(copies > 0):
        kept = sources[tasks[task_of[i]].source]["kept"]
        kept["records"] += 1
        kept["tokens"] += int(tokens[i])

    partner_where = lambda j: f"{tasks[task_of[j]].path}:{int(lines[j])}"  # noqa: E731

    with atomic_open(out / "rejects.jsonl", "w", encoding="utf-8") as rejects:
        copy_task_rejects(tasks, work, rejects)

        def on_unused(i: int, task: Task, row: dict) -> None:
            line = row.pop("l")
            if dedup.status[i] == EXACT:
                rule, reason = "exact_duplicate", f"exact duplicate of {partner_where(dedup.partner[i])}"
            elif dedup.status[i] == NEAR:
                rule = "near_duplicate"
                reason = (
                    f"near duplicate of {partner_where(dedup.partner[i])} (estimated Jaccard {dedup.similarity[i]:.2f})"
                )
            else:
                rule, reason = "mix", f"mix: not selected ({task.role} {mix_report['roles'][task.role]['action']})"
            entry = {"source": task.path, "line": line, "rule": rule, "reason": reason, "record": row}
            rejects.write(json.dumps(entry, ensure_ascii=False) + "\n")

        writer = ShardWriter(out, settings.output_format, settings.shard_records, fingerprint[:8])
        shards = writer.write(tasks, work, offsets, copies, on_unused)
    written_tokens = {role: int((copies * tokens)[roles == role].sum()) for role in ("domain", "general")}
    total_written = sum(written_tokens.values())
    written_records = {role: int(copies[roles == role].sum()) for role in ("domain", "general")}
    for row in sources:  # flat fields for readers of the kept mix (the report)
        row.update(name=row["source"], records=row["kept"]["records"], tokens=row["kept"]["tokens"])
    stats = {
        "fingerprint": fingerprint,
        "out_dir": str(out),
        "sources": sources,
        "rules": _rule_totals(sources),
        "dedup": {
            **dedup.stats,
            "threshold": settings.dedup.threshold,
            "ngram": settings.dedup.ngram,
            "num_perm": settings.dedup.num_perm,
            "banding": dedup_check,
        },
        "decontamination": {
            "hits": sum(s["removed"].get("decontaminate", {}).get("records", 0) for s in sources),
            "eval_ngrams": len(eval_ngrams) if eval_ngrams is not None else 0,
            "ngram": settings.decontaminate.ngram,
        },
        "mix": mix_report,
        "output": {
            "format": settings.output_format,
            "shards": shards,
            "records": int(copies.sum()),
            "tokens": total_written,
            "tokens_by_role": written_tokens,
            "token_share": {
                r: round(t / total_written, 4) if total_written else 0.0 for r, t in written_tokens.items()
            },
        },
        "roles": {
            role: {
                "role": role,
                "records": written_records[role],
                "tokens": written_tokens[role],
                "share": round(written_tokens[role] / total_written, 4) if total_written else None,
            }
            for role in ("domain", "general")
            if written_records[role]
        },  # fmt: skip
        "accounting": _accounting(sources),
        "tokens": "content tokens by the model's tokenizer (chat markup not counted)" if tokenizer_path else None,
        "seconds": {"clean": round(clean_seconds, 2), "total": round(time.monotonic() - started, 2)},
        "workers": workers,
    }
    atomic_write_json(out / "stats.json", stats)
    writer.remove_stale(shards)
    shutil.rmtree(out / ".work" / fingerprint[:16], ignore_errors=True)
    return {**stats, "reused": False}


def _rule_totals(sources: list[dict]) -> dict:
    totals: dict[str, dict] = {}
    for row in sources:
        for rule, entry in row["removed"].items():
            t = totals.setdefault(rule, {"records": 0, "tokens": 0})
            t["records"] += entry["records"]
            t["tokens"] += entry["tokens"]
    return totals


def _accounting(sources: list[dict]) -> dict:
    """records in = kept + removed by a rule + rejected (malformed), checked for every source."""
    rows = {}
    for row in sources:
        removed = sum(e["records"] for e in row["removed"].values())
        rows[row["source"]] = {
            "records_in": row["records_in"],
            "kept": row["kept"]["records"],
            "removed": removed,
            "rejected": row["rejected"],
            "balanced": row["records_in"] == row["kept"]["records"] + removed + row["rejected"],
        }
    return {"balanced": all(r["balanced"] for r in rows.values()), "sources": rows}


def _tokenizer_path(recipe: Recipe, log: Callable[[str], None]) -> str:
    from ..models import resolve_model

    return resolve_model(recipe.model, on_convert=log)


def _self_replay_files(recipe: Recipe, out: Path, log: Callable[[str], None]) -> dict[int, Path]:
    """Sample `source: self` data once per (model, n, seed, eval questions); later prepares reuse the file."""
    from .self_replay_source import self_replay_file

    return {
        i: self_replay_file(recipe, source.n, out / ".self_replay", log)
        for i, source in enumerate(recipe.data)
        if source.source == "self"
    }
