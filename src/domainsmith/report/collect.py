"""Read a run dir's artefacts into typed, tolerant dataclasses.

eval.json is required; every other file (summary.json, stage manifests, loss.jsonl, events.jsonl, data/stats.json,
mix_search.json) is optional, and any key may be missing in older files. Unreadable optional files become warnings
shown in the report instead of crashing it: a partial run still gets a report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DomainsmithError


class ReportError(DomainsmithError):
    """The run dir cannot be reported on (no eval.json, or an unreadable one)."""


# Subdirectories of a run dir that are not training stages.
_NOT_STAGES = {"eval", "kb", "report", "data"}

# Headline metric per suite kind, and whether higher is better (mirrors evaluate/compare.py).
HEADLINE = {"qa": ("accuracy", True), "mc": ("acc", True), "perplexity": ("perplexity", False)}


def num(value: Any) -> float | None:
    """A finite number, or None for anything else (missing, bool, string, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    v = num(value)
    return int(v) if v is not None else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class Flips:
    learned: int
    forgotten: int
    n: int | None = None

    @classmethod
    def parse(cls, raw: Any) -> Flips | None:
        raw = _dict(raw)
        learned, forgotten = _int(raw.get("learned")), _int(raw.get("forgotten"))
        if learned is None or forgotten is None:
            return None
        return cls(learned, forgotten, _int(raw.get("n")))


@dataclass
class Diff:
    """after - before on the same items, with its paired-bootstrap 95% CI when measured."""

    diff: float
    ci95: tuple[float, float] | None = None
    n: int | None = None
    p_value: float | None = None

    @classmethod
    def parse(cls, raw: Any) -> Diff | None:
        raw = _dict(raw)
        d = num(raw.get("diff"))
        if d is None:
            return None
        ci = raw.get("ci95")
        ci95 = None
        if isinstance(ci, list | tuple) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
            ci95 = (num(ci[0]), num(ci[1]))
        return cls(d, ci95, _int(raw.get("n")), num(raw.get("p_value")))


@dataclass
class Comparison:
    """One suite scored on the before and after variants (eval.json `comparisons[suite]`)."""

    suite: str
    role: str | None
    kind: str
    metric: str
    higher_is_better: bool
    before: float | None
    after: float | None
    n: int | None
    flips: Flips | None
    diff: Diff | None


@dataclass
class Retrieval:
    k: int | None
    recall: float | None
    mrr: float | None
    n: int | None


@dataclass
class SuiteResult:
    """One suite's scores for one variant (eval.json `variants[label].suites[name]`)."""

    name: str
    role: str | None
    kind: str
    n: int | None
    metrics: dict[str, float]  # every numeric key: accuracy, acc, acc_norm, perplexity, nll_per_token, tokens, ...
    retrieval: Retrieval | None = None
    cited_any: float | None = None
    citations_valid: float | None = None
    abstained: float | None = None

    @property
    def headline(self) -> float | None:
        return self.metrics.get(HEADLINE.get(self.kind, ("accuracy", True))[0])


@dataclass
class Variant:
    label: str
    name: str  # the model variant without the mode: 'sft' for 'sft+rag'
    mode: str
    model: str | None
    adapter: str | None
    suites: dict[str, SuiteResult]


@dataclass
class StrategyRow:
    """One row of the strategy matrix: a (variant, mode) pair with its scores and training cost."""

    strategy: str
    variant: str
    mode: str
    scores: dict[str, float]
    flips: dict[str, Flips]
    train_seconds: float | None = None
    train_tokens: float | None = None
    kl_per_token: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # harness:task:metric and other numeric columns


@dataclass
class KL:
    variant: str
    kl_per_token: float
    tokens: int | None = None
    sequences: int | None = None


@dataclass
class SpikeEvent:
    step: float
    loss: float | None
    threshold: float | None
    action: str
    batches_skipped: int | None


@dataclass
class LossCurve:
    stage: str
    steps: list[float]
    losses: list[float]
    eval_steps: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    runtime: float | None = None
    train_loss: float | None = None
    events: list[SpikeEvent] = field(default_factory=list)


@dataclass
class MixShare:
    """One slice of the training mix: a role or a source, with its tokens and/or records."""

    name: str
    role: str | None
    tokens: float | None = None
    records: float | None = None
    share: float | None = None  # as recorded; otherwise derived from tokens or records


@dataclass
class TokenMix:
    """The realized mix of one stage (or of data/stats.json): shares by role and by source."""

    label: str
    origin: str  # which file it came from
    basis: str  # "tokens" or "records": what the shares are shares of
    roles: list[MixShare]
    sources: list[MixShare]
    total_tokens: float | None = None


@dataclass
class MixSearch:
    points: list[dict[str, float]]  # ratio, general_loss, domain_loss
    curves: dict[str, list[float]]
    recommendation: dict[str, Any]
    fits: dict[str, Any]


@dataclass
class RunData:
    run_dir: Path
    model: str | None
    before_variant: str | None
    after_variant: str | None
    roles: dict[str, str]  # suite -> role
    kinds: dict[str, str]  # suite -> kind
    comparisons: list[Comparison]
    variants: list[Variant]
    strategies: list[StrategyRow]
    kl: list[KL]
    harness: dict[str, dict[str, dict[str, float]]]  # variant -> task -> metric -> value
    stages: dict[str, dict]  # stage -> metrics (summary.json stages, else the stage's manifest)
    loss: list[LossCurve]
    mix: list[TokenMix]
    mix_search: MixSearch | None
    overlaps: int
    warnings: list[str]

    def variant(self, label: str) -> Variant | None:
        return next((v for v in self.variants if v.label == label), None)

    def suite_order(self) -> list[str]:
        """Every suite, domain before general, in first-seen order within a role."""
        seen: list[str] = []
        for name in [c.suite for c in self.comparisons] + [s for v in self.variants for s in v.suites]:
            if name not in seen:
                seen.append(name)
        rank = {"domain": 0, "general": 1}
        return sorted(seen, key=lambda s: rank.get(self.roles.get(s, ""), 2))


def _read_json(path: Path, warnings: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.append(f"{path.name}: could not be read ({exc}); its sections are left out")
        return None


def _read_jsonl(path: Path, warnings: list[str]) -> list[dict]:
    rows, bad = [], 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        warnings.append(f"{path}: could not be read ({exc})")
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1  # a run killed mid-write leaves a partial last line
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        warnings.append(f"{path.parent.name}/{path.name}: {bad} unreadable line(s) skipped")
    return rows


def read_eval(run_dir: Path) -> dict:
    path = run_dir / "eval.json"
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory (pass a run dir such as runs/<name>)")
    if not path.is_file():
        raise ReportError(
            f"{path}: not found; there is nothing to report yet. Run `domainsmith run RECIPE` "
            "(train and evaluate) or `domainsmith eval RECIPE` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); re-run `domainsmith eval RECIPE` to rewrite it") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _suite_result(name: str, raw: Any) -> SuiteResult:
    raw = _dict(raw)
    kind = _str(raw.get("kind")) or "qa"
    metrics = {k: v for k, v in ((k, num(v)) for k, v in raw.items()) if v is not None}
    retrieval = None
    r = raw.get("retrieval")
    if isinstance(r, dict):
        recall_key = next((k for k in r if k.startswith("recall@")), None)
        k = _int(r.get("k"))
        if k is None and recall_key and recall_key[7:].isdigit():
            k = int(recall_key[7:])
        retrieval = Retrieval(k, num(r.get(recall_key)) if recall_key else None, num(r.get("mrr")), _int(r.get("n")))
    citations = _dict(raw.get("citations"))
    return SuiteResult(
        name=name,
        role=_str(raw.get("role")),
        kind=kind,
        n=_int(raw.get("n")) if "n" in raw else _int(raw.get("documents")),
        metrics=metrics,
        retrieval=retrieval,
        cited_any=num(citations.get("cited_any")),
        citations_valid=num(citations.get("valid")),
        abstained=num(raw.get("abstained")),
    )


def _variants(raw: Any) -> list[Variant]:
    out = []
    for label, v in _dict(raw).items():
        v = _dict(v)
        mode = _str(v.get("mode")) or (label.split("+", 1)[1] if "+" in label else "closed")
        name = label[: -len(mode) - 1] if mode != "closed" and label.endswith(f"+{mode}") else label
        suites = {s: _suite_result(s, r) for s, r in _dict(v.get("suites")).items()}
        out.append(Variant(label, name, mode, _str(v.get("model")), _str(v.get("adapter")), suites))
    return out


def _comparisons(raw: Any, variants: list[Variant]) -> list[Comparison]:
    kinds = {s: r.kind for v in variants for s, r in v.suites.items()}
    out = []
    for suite, c in _dict(raw).items():
        c = _dict(c)
        kind = _str(c.get("kind")) or kinds.get(suite, "qa")
        metric, higher = HEADLINE.get(kind, ("accuracy", True))
        hib = c.get("higher_is_better")
        out.append(
            Comparison(
                suite=suite,
                role=_str(c.get("role")),
                kind=kind,
                metric=_str(c.get("metric")) or metric,
                higher_is_better=hib if isinstance(hib, bool) else higher,
                before=num(c.get("before")),
                after=num(c.get("after")),
                n=_int(c.get("n")),
                flips=Flips.parse(c.get("flips")),
                diff=Diff.parse(c.get("diff")),
            )
        )
    return out


_ROW_KEYS = {"strategy", "variant", "mode", "train_seconds", "train_tokens", "kl_per_token"}


def _strategies(raw: Any, variants: list[Variant], suites: set[str]) -> list[StrategyRow]:
    """eval.json's list of rows (summary.json's older dict form too); derived from `variants` when absent."""
    if isinstance(raw, dict):
        raw = [{"strategy": k, **_dict(v)} for k, v in raw.items()]
    rows = []
    for r in raw if isinstance(raw, list) else []:
        r = _dict(r)
        label = _str(r.get("strategy"))
        if label is None:
            continue
        known = next((v for v in variants if v.label == label), None)
        mode = _str(r.get("mode")) or (known.mode if known else "closed")
        name = _str(r.get("variant")) or (known.name if known else label.split("+", 1)[0])
        scores, flips, extra = {}, {}, {}
        for key, value in r.items():
            if key in _ROW_KEYS:
                continue
            if key.endswith("_flips") and key[:-6] in r:
                parsed = Flips.parse(value)
                if parsed:
                    flips[key[:-6]] = parsed
            elif num(value) is not None:
                # Suite scores; 'harness:task:metric' and other namespaced columns are extra.
                (extra if ":" in key and key not in suites else scores)[key] = num(value)
        rows.append(
            StrategyRow(
                label,
                name,
                mode,
                scores,
                flips,
                num(r.get("train_seconds")),
                num(r.get("train_tokens")),
                num(r.get("kl_per_token")),
                extra,
            )
        )
    if rows:
        return rows
    return [
        StrategyRow(v.label, v.name, v.mode, {s: r.headline for s, r in v.suites.items() if r.headline is not None}, {})
        for v in variants
    ]


def _kl(eval_data: dict, summary: dict) -> list[KL]:
    out = []
    for name, k in _dict(_dict(eval_data.get("forgetting")).get("kl")).items():
        value = num(_dict(k).get("kl_per_token"))
        if value is not None:
            out.append(KL(name, value, _int(k.get("tokens")), _int(k.get("sequences"))))
    if not out:  # summary.json keeps only the number
        out = [KL(n, num(v)) for n, v in _dict(summary.get("forgetting_kl")).items() if num(v) is not None]
    return out


def _harness(raw: Any) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for variant, results in _dict(raw).items():
        tasks = {}
        for task, metrics in _dict(_dict(results).get("tasks")).items():
            values = {m: num(v) for m, v in _dict(metrics).items() if num(v) is not None and not m.endswith("_stderr")}
            if values:
                tasks[task] = values
        if tasks:
            out[variant] = tasks
    return out


def _stage_dirs(run_dir: Path, summary_stages: dict) -> list[str]:
    names = list(summary_stages)
    try:
        children = sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name not in _NOT_STAGES)
    except OSError:
        children = []
    for p in children:
        if p.name not in names and any((p / f).is_file() for f in ("loss.jsonl", "metrics.jsonl", "manifest.json")):
            names.append(p.name)
    return names


def _loss_curve(stage: str, stage_dir: Path, warnings: list[str]) -> LossCurve | None:
    path = stage_dir / "loss.jsonl"  # SFT (Trainer) stages; pt/cpt stages write metrics.jsonl
    if not path.is_file():
        path = stage_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    curve = LossCurve(stage, [], [])
    for row in _read_jsonl(path, warnings):
        step = num(row.get("step"))
        if "train_runtime" in row:
            curve.runtime = num(row.get("train_runtime"))
            curve.train_loss = num(row.get("train_loss"))
        if step is None:
            continue
        if num(row.get("loss")) is not None:
            curve.steps.append(step)
            curve.losses.append(num(row["loss"]))
        if num(row.get("eval_loss")) is not None:
            curve.eval_steps.append(step)
            curve.eval_losses.append(num(row["eval_loss"]))
    events = stage_dir / "events.jsonl"
    if events.is_file():
        for row in _read_jsonl(events, warnings):
            step = num(row.get("step"))
            if step is not None:
                action = _str(row.get("action")) or "spike"
                curve.events.append(
                    SpikeEvent(
                        step, num(row.get("loss")), num(row.get("threshold")), action, _int(row.get("batches_skipped"))
                    )
                )
    return curve


def _shares(items: list[MixShare], basis: str) -> None:
    """Fill missing shares from tokens (or records) so each list sums to 1."""
    values = [(m.tokens if basis == "tokens" else m.records) for m in items]
    total = sum(v for v in values if v is not None)
    for m, v in zip(items, values, strict=True):
        if m.share is None and v is not None and total > 0:
            m.share = v / total


def _mix_from_stats(stats: dict) -> TokenMix | None:
    def parse(raw: Any) -> list[MixShare]:
        if isinstance(raw, list):
            raw = {str(_dict(r).get("name", _dict(r).get("path", i))): r for i, r in enumerate(raw)}
        out = []
        for name, r in _dict(raw).items():
            r = _dict(r)
            out.append(
                MixShare(
                    str(name), _str(r.get("role")), num(r.get("tokens")), num(r.get("records")), num(r.get("share"))
                )
            )
        return out

    roles, sources = parse(stats.get("roles")), parse(stats.get("sources"))
    for r in roles:
        r.role = r.role or r.name
    if not roles and sources:  # roles summed from the sources
        by_role: dict[str, MixShare] = {}
        for s in sources:
            m = by_role.setdefault(s.role or "unknown", MixShare(s.role or "unknown", s.role or "unknown", 0.0, 0.0))
            m.tokens = (m.tokens or 0) + (s.tokens or 0)
            m.records = (m.records or 0) + (s.records or 0)
        roles = list(by_role.values())
    everything = roles + sources
    basis = "tokens" if any(m.tokens for m in everything) or all(m.share is not None for m in roles) else "records"
    _shares(roles, basis)
    _shares(sources, basis)
    if not any(m.share for m in roles):
        return None
    total = sum(m.tokens for m in roles if m.tokens) or None
    return TokenMix("data/stats.json", "data/stats.json", basis, roles, sources, total)


def _mix_from_stage(stage: str, metrics: dict, origin: str) -> TokenMix | None:
    data = _dict(metrics.get("data"))
    sources = []
    for name, s in _dict(data.get("sources")).items():
        s = _dict(s)
        sources.append(MixShare(str(name), _str(s.get("role")), num(s.get("tokens")), num(s.get("records"))))
    if not sources:
        return None
    basis = "tokens" if all(s.tokens is not None for s in sources) else "records"
    by_role: dict[str, MixShare] = {}
    for s in sources:
        role = s.role or "unknown"
        m = by_role.setdefault(role, MixShare(role, role, 0.0 if basis == "tokens" else None, 0.0))
        if basis == "tokens":
            m.tokens += s.tokens
        m.records = (m.records or 0) + (s.records or 0)
    roles = list(by_role.values())
    _shares(roles, basis)
    _shares(sources, basis)
    if not any(m.share for m in roles):
        return None
    return TokenMix(stage, origin, basis, roles, sources, num(data.get("tokens")))


def _mix_search(raw: Any) -> MixSearch | None:
    raw = _dict(raw)
    points = []
    for p in raw.get("points") if isinstance(raw.get("points"), list) else []:
        p = {k: num(v) for k, v in _dict(p).items() if num(v) is not None}
        if "ratio" in p:
            points.append(p)
    curves = {}
    for key, values in _dict(raw.get("curves")).items():
        if isinstance(values, list):
            curves[str(key)] = [num(v) for v in values]
    rec = _dict(raw.get("recommendation"))
    if not points and "ratio" not in curves:
        return None
    return MixSearch(sorted(points, key=lambda p: p["ratio"]), curves, rec, _dict(raw.get("fits")))


def _fill_costs(rows: list[StrategyRow], stages: dict[str, dict]) -> None:
    """Older eval.json rows carry no cost: take it from the stage metrics, cumulative over the stages up to the
    variant (the base model cost nothing to train)."""
    order = list(stages)
    for row in rows:
        if row.train_seconds is not None or not order:
            continue
        if row.variant == "base":
            row.train_seconds, row.train_tokens = 0.0, 0.0
        elif row.variant in stages:
            upto = [stages[s] for s in order[: order.index(row.variant) + 1]]
            row.train_seconds = sum(num(m.get("train_seconds")) or 0.0 for m in upto)
            row.train_tokens = sum(num(m.get("train_tokens")) or 0.0 for m in upto)


def collect(run_dir: Path) -> RunData:
    """Everything the report shows, read once. Raises ReportError when eval.json is missing or unreadable."""
    run_dir = Path(run_dir)
    ev = read_eval(run_dir)
    warnings: list[str] = []
    summary = _dict(_read_json(run_dir / "summary.json", warnings))
    variants = _variants(ev.get("variants"))
    comparisons = _comparisons(ev.get("comparisons"), variants)
    roles: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for v in variants:
        for s, r in v.suites.items():
            if r.role:
                roles.setdefault(s, r.role)
            kinds.setdefault(s, r.kind)
    for c in comparisons:
        if c.role:
            roles[c.suite] = c.role
        kinds.setdefault(c.suite, c.kind)
    suites = set(kinds)
    strategies = _strategies(ev.get("strategies") or summary.get("strategies"), variants, suites)

    summary_stages = _dict(summary.get("stages"))
    stages: dict[str, dict] = {}
    loss, mix = [], []
    stats = _read_json(run_dir / "data" / "stats.json", warnings)
    if isinstance(stats, dict) and (m := _mix_from_stats(stats)):
        mix.append(m)  # the realized mix over all data; per-stage source counts are then redundant
    have_stats = bool(mix)
    for stage in _stage_dirs(run_dir, summary_stages):
        origin = "summary.json"
        metrics = _dict(summary_stages.get(stage))
        if not metrics:
            manifest = _dict(_read_json(run_dir / stage / "manifest.json", warnings))
            metrics, origin = _dict(_dict(manifest.get("result")).get("metrics")), f"{stage}/manifest.json"
        if metrics:
            stages[stage] = metrics
            if not have_stats and (m := _mix_from_stage(stage, metrics, origin)):
                mix.append(m)
        if curve := _loss_curve(stage, run_dir / stage, warnings):
            loss.append(curve)

    _fill_costs(strategies, stages)
    model = None
    for label in [_str(ev.get("before_variant")), *[v.label for v in variants]]:
        v = next((x for x in variants if x.label == label), None)
        if v and v.model:
            model = v.model
            break
    if model is None:
        for stage in stages:
            manifest = _dict(_read_json(run_dir / stage / "manifest.json", []))
            if model := _str(_dict(manifest.get("inputs")).get("model_path")):
                break
    overlaps = ev.get("train_eval_overlap")
    return RunData(
        run_dir=run_dir,
        model=model,
        before_variant=_str(ev.get("before_variant")) or _str(_dict(summary.get("variants")).get("before")),
        after_variant=_str(ev.get("after_variant")) or _str(_dict(summary.get("variants")).get("after")),
        roles=roles,
        kinds=kinds,
        comparisons=comparisons,
        variants=variants,
        strategies=strategies,
        kl=_kl(ev, summary),
        harness=_harness(ev.get("harness")),
        stages=stages,
        loss=loss,
        mix=mix,
        mix_search=_mix_search(_read_json(run_dir / "mix_search.json", warnings)),
        overlaps=len(overlaps) if isinstance(overlaps, list) else 0,
        warnings=warnings,
    )
