"""One before/after comparison pooled over several runs of a recipe (training seeds, data orders, starts).

A single run's change of a few points on a couple of hundred items is rarely beyond noise, and the training seed
moves results as much as the items do. Runs that score the same suite can be pooled: each run contributes its
paired items (before and after on the same item), and the pooled change is the mean over all pairs.

Two intervals come with the pooled change:
- `pairs`: every (run, item) pair resampled as an independent unit (a paired bootstrap over all pairs);
- `items`: whole item ids resampled, with every run's pair for that item (a cluster bootstrap). The same question
  asked of several runs is not independent evidence (a question that is hard is hard for every seed), so when runs
  share items this interval is the one that assumes nothing about them. It is wider when a question's changes agree
  across runs (the usual case: a fact one run learned, another often learns too), narrower when they cancel.
Neither resamples runs: with a handful of seeds that would say little, so both are conditional on these runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import DomainsmithError
from .bootstrap import cluster_bootstrap, paired_bootstrap


class PoolingError(DomainsmithError):
    """A run cannot be compared: no eval.json, no such variant or suite, or nothing in common across runs."""


@dataclass(frozen=True)
class RunPairs:
    """One run's per-item scores (0/1) for one suite, before and after, aligned by item id."""

    run: str
    ids: list[str]
    before: list[float]
    after: list[float]
    questions: dict[str, str] | None = None  # id -> question text, where the records carry one


def load_eval(run_dir: Path) -> dict:
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        raise PoolingError(f"{run_dir}: no eval.json (run `domainsmith run` or `domainsmith eval` on its recipe first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoolingError(f"{path}: not valid JSON ({exc})") from None


def run_pairs(run_dir: Path, report: dict, suite: str, before: str | None, after: str | None) -> RunPairs:
    """The paired items of `suite` for variants `before` and `after` (default: the run's own before/after)."""
    items = report.get("items")
    if not isinstance(items, dict):
        raise PoolingError(f"{run_dir}/eval.json has no per-item records (written by an older domainsmith?)")
    labels = {"before": before or report.get("before_variant"), "after": after or report.get("after_variant")}
    records = {}
    for side, label in labels.items():
        if label not in items:
            raise PoolingError(f"{run_dir}: no variant {label!r} in eval.json; it has {', '.join(sorted(items))}")
        if suite not in items[label]:
            raise PoolingError(
                f"{run_dir}: variant {label!r} has no per-item scores for suite {suite!r}; "
                f"it has {', '.join(sorted(items[label])) or 'none'}"
            )
        records[side] = {r["id"]: r for r in items[label][suite]}
        if any("correct" not in r for r in records[side].values()):
            raise PoolingError(
                f"{run_dir}: suite {suite!r} items carry no 'correct' verdict (only QA and multiple-choice suites "
                "can be pooled)"
            )
    ids = [i for i in records["before"] if i in records["after"]]
    if not ids:
        raise PoolingError(f"{run_dir}: suite {suite!r} has no item scored both before and after")
    return RunPairs(
        run=str(run_dir),
        ids=ids,
        before=[float(records["before"][i]["correct"]) for i in ids],
        after=[float(records["after"][i]["correct"]) for i in ids],
        questions={i: records["before"][i]["question"] for i in ids if "question" in records["before"][i]},
    )


def pool_suite(runs: list[RunPairs], n_resamples: int = 10000, seed: int = 0) -> dict:
    """Per-run and pooled before/after accuracy, flips and the change with both intervals (module docstring)."""
    per_run = []
    for r in runs:
        per_run.append(
            {
                "run": r.run,
                "n": len(r.ids),
                "before": sum(r.before) / len(r.ids),
                "after": sum(r.after) / len(r.ids),
                "flips": _flips(r.before, r.after),
                "diff": paired_bootstrap(r.before, r.after, n_resamples=n_resamples, seed=seed),
            }
        )
    before = [x for r in runs for x in r.before]
    after = [x for r in runs for x in r.after]
    by_item: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in runs:
        for item_id, b, a in zip(r.ids, r.before, r.after, strict=True):
            by_item[item_id][0] += a - b
            by_item[item_id][1] += 1
    sums, counts = zip(*by_item.values(), strict=True)
    pooled = {
        "runs": len(runs),
        "n": len(before),
        "before": sum(before) / len(before),
        "after": sum(after) / len(after),
        "flips": _flips(before, after),
        "runs_up": sum(1 for row in per_run if row["diff"]["diff"] > 0),
        "runs_down": sum(1 for row in per_run if row["diff"]["diff"] < 0),
        "pairs": paired_bootstrap(before, after, n_resamples=n_resamples, seed=seed),
        "items": cluster_bootstrap(sums, counts, n_resamples=n_resamples, seed=seed),
    }
    return {"runs": per_run, "pooled": pooled}


def pool_runs(
    run_dirs: list[Path],
    suites: list[str] | None = None,
    before: str | None = None,
    after: str | None = None,
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict:
    """Pool `before` -> `after` over runs for each suite (default: the suites every run compared)."""
    if not run_dirs:
        raise PoolingError("give at least one run dir")
    if len(set(map(str, run_dirs))) != len(run_dirs):
        raise PoolingError("a run dir is given twice; pooling a run with itself would double its weight")
    reports = [(Path(d), load_eval(Path(d))) for d in run_dirs]
    if suites is None:
        compared = [r.get("comparisons") or {} for _, r in reports]
        suites = [
            s
            for s, row in compared[0].items()
            if row.get("kind", "qa") in ("qa", "mc") and all(s in c for c in compared[1:])
        ]
        if not suites:
            raise PoolingError("the runs share no QA or multiple-choice suite; name one with --suite")
    labels = {
        "before": before or _same_label(reports, "before_variant"),
        "after": after or _same_label(reports, "after_variant"),
    }
    out = {"before": labels["before"], "after": labels["after"], "runs": [str(d) for d, _ in reports], "suites": {}}
    for suite in suites:
        pairs = [run_pairs(d, r, suite, before, after) for d, r in reports]
        _check_same_questions(suite, pairs)
        out["suites"][suite] = pool_suite(pairs, n_resamples=n_resamples, seed=seed)
    return out


def _check_same_questions(suite: str, runs: list[RunPairs]) -> None:
    """Items pair across runs by id; ids like `line3` say nothing if the runs scored different files."""
    seen: dict[str, tuple[str, str]] = {}
    for r in runs:
        for item_id, question in (r.questions or {}).items():
            first = seen.setdefault(item_id, (r.run, question))
            if first[1] != question:
                raise PoolingError(
                    f"suite {suite!r}: item {item_id!r} asks {first[1]!r} in {first[0]} but {question!r} in {r.run}; "
                    "pool runs that scored the same items"
                )


def _same_label(reports: list[tuple[Path, dict]], key: str) -> str:
    labels = {r.get(key) for _, r in reports}
    if len(labels) != 1 or None in labels:
        found = ", ".join(f"{d}: {r.get(key)}" for d, r in reports)
        raise PoolingError(f"the runs' {key.replace('_', ' ')}s differ ({found}); name one with --before/--after")
    return labels.pop()


def _flips(before: list[float], after: list[float]) -> dict:
    return {
        "learned": sum(1 for b, a in zip(before, after, strict=True) if a > b),
        "forgotten": sum(1 for b, a in zip(before, after, strict=True) if a < b),
    }
