"""Sections built from eval.json: summary, strategy matrix, forgetting, retrieval, other suite kinds.

Each builder returns (body, figures), or None when the run has nothing for it. Text states what was compared and
on which items, so a number is never read without its denominator or its uncertainty.
"""

from __future__ import annotations

from statistics import mean

from . import format as fmt
from . import plots
from .collect import HEADLINE, Comparison, RunData, StrategyRow, SuiteResult, Variant
from .html import Figure, Html, bullets, code, figure, join, para, table, tag

Built = tuple[Html, list[Figure]] | None

_MODE_ORDER = ["closed", "rag", "rag_gold", "icl"]
_GENERAL_SHADES = ["#E69F00", "#A86F00", "#F2C15A", "#6E4A00"]


def _metric(data: RunData, suite: str) -> tuple[str, bool]:
    return HEADLINE.get(data.kinds.get(suite, "qa"), ("accuracy", True))


def _suite_header(data: RunData, suite: str) -> Html:
    """The suite's name, with its role and metric on a second, smaller line (keeps the matrix narrow)."""
    metric, higher = _metric(data, suite)
    detail = f"{data.roles.get(suite, '?')}, {metric}{'' if higher else ' ↓'}"
    return join([suite, Html("<br>"), tag("span", detail, cls="muted")])


def _flips_text(flips) -> str:
    return f"+{flips.learned} / −{flips.forgotten}"


def _verdict(c: Comparison) -> Html:
    if c.diff is None or c.diff.ci95 is None:
        return Html("")
    lo, hi = c.diff.ci95
    if lo <= 0 <= hi:
        return tag("span", " within noise (the CI includes zero)", cls="muted")
    better = (lo > 0) == c.higher_is_better
    return tag("span", " better" if better else " worse", cls="good" if better else "bad")


def _headline(c: Comparison) -> Html:
    metric = c.metric
    parts: list[object] = [tag("strong", c.suite), f" ({c.role or '?'}, {metric}"]
    parts.append(", lower is better): " if not c.higher_is_better else "): ")
    parts.append(f"{fmt.score(c.before, metric)} → {fmt.score(c.after, metric)}")
    if c.diff is not None:
        parts.append(f", {fmt.signed(c.diff.diff, metric)}")
        if c.diff.ci95:
            parts.append(f" (95% CI {fmt.ci(c.diff.ci95, metric)})")
    parts.append(_verdict(c))
    if c.flips:
        of = f" of {c.flips.n}" if c.flips.n is not None else ""
        parts.append(f"; {c.flips.learned} learned, {c.flips.forgotten} forgotten{of}")
    return join(parts)


def _comparison_rows(comps: list[Comparison]) -> list[list[object]]:
    rows = []
    for c in comps:
        d = c.diff
        diff = d.diff if d else (c.after - c.before if c.after is not None and c.before is not None else None)
        rows.append(
            [
                c.suite,
                c.role or fmt.DASH,
                c.metric + ("" if c.higher_is_better else " ↓"),
                fmt.score(c.before, c.metric),
                fmt.score(c.after, c.metric),
                fmt.signed(diff, c.metric),
                fmt.ci(d.ci95 if d else None, c.metric),
                fmt.p_value(d.p_value if d else None),
                fmt.integer(c.n if c.n is not None else (d.n if d else None)),
                fmt.integer(c.flips.learned) if c.flips else fmt.DASH,
                fmt.integer(c.flips.forgotten) if c.flips else fmt.DASH,
            ]
        )
    return rows


_COMPARISON_HEADERS = [
    "suite",
    "role",
    "metric",
    "before",
    "after",
    "difference",
    "95% CI",
    "p",
    "n",
    "learned",
    "forgotten",
]


def summary(data: RunData) -> Built:
    comps = data.comparisons
    if not comps:
        return None
    before, after = data.before_variant or "before", data.after_variant or "after"
    parts = [
        para(
            "Before: ",
            code(before),
            "; after: ",
            code(after),
            ". Both are scored on the same items; the "
            "difference is after − before with a paired-bootstrap 95% confidence interval over items. Learned = "
            "items wrong before and right after; forgotten = the reverse.",
        ),
        bullets(_headline(c) for c in comps),
        table(_COMPARISON_HEADERS, _comparison_rows(comps), text_cols=3),
    ]
    rows = []
    for c in comps:
        if not c.higher_is_better or c.kind == "perplexity":
            continue
        if c.diff is not None:
            rows.append(plots.DiffRow(c.suite, c.role, c.diff.diff, c.diff.ci95))
        elif c.before is not None and c.after is not None:
            rows.append(plots.DiffRow(c.suite, c.role, c.after - c.before, None))
    figures = [f for f in [plots.differences(rows, before, after)] if f]
    parts += [figure(f) for f in figures]
    if all(c.diff is None for c in comps):
        parts.append(
            para(
                "This eval.json has no confidence intervals (it predates them); re-run ",
                code("domainsmith eval RECIPE"),
                " to add them.",
                cls="muted",
            )
        )
    return join(parts), figures


def _role_mean(row: StrategyRow, data: RunData, role: str, shared: set[str]) -> float | None:
    """Mean accuracy over the `shared` suites of one role: the same suites for every point, so rows that were scored
    on more suites (closed book adds multiple choice) are not averaged over a different set."""
    values = [v for s, v in row.scores.items() if s in shared and data.roles.get(s) == role]
    return mean(values) if values else None


def _shared_accuracy_suites(rows, data: RunData) -> set[str]:
    """Accuracy suites scored by every row that has both a domain and a general one (rows without, such as
    rag_gold with no general passages, are left off the plot anyway)."""
    scored = [{s for s in r.scores if data.kinds.get(s, "qa") in ("qa", "mc")} for r in rows]
    plottable = [x for x in scored if {data.roles.get(s) for s in x} >= {"domain", "general"}]
    return set.intersection(*plottable) if plottable else set()


def strategies(data: RunData) -> Built:
    rows = data.strategies
    if not rows:
        return None
    suites = [s for s in data.suite_order() if any(s in r.scores for r in rows)]
    suites += [s for r in rows for s in r.scores if s not in suites]
    extra = list(dict.fromkeys(k for r in rows for k in r.extra))
    headers = [
        "strategy",
        "model",
        "mode",
        *[_suite_header(data, s) for s in suites],
        "train time",
        "train tokens",
        "KL/token (nats)",
        *extra,
    ]
    body = []
    for r in rows:
        cells: list[object] = [r.strategy, r.variant, r.mode]
        for s in suites:
            metric = _metric(data, s)[0]
            value = fmt.score(r.scores.get(s), metric)
            flips = r.flips.get(s)
            cells.append(join([value, tag("span", f" ({_flips_text(flips)})", cls="muted")]) if flips else value)
        cells += [fmt.seconds(r.train_seconds), fmt.count(r.train_tokens), fmt.plain(r.kl_per_token)]
        cells += [fmt.plain(r.extra.get(k)) for k in extra]
        body.append(cells)
    parts = [
        para(
            "One row per (model, mode) pair, all on the same items. In brackets: items learned / forgotten against ",
            code(data.before_variant or "the first row"),
            ". Train time and tokens are cumulative over "
            "the stages that produced the model; KL is the mean per-token KL divergence from the base model on "
            "general prompts.",
        ),
        table(headers, body, text_cols=3),
    ]
    points, skipped = [], []
    shared = _shared_accuracy_suites(rows, data)
    for r in rows:
        general, domain = _role_mean(r, data, "general", shared), _role_mean(r, data, "domain", shared)
        if general is None or domain is None:
            skipped.append(r.strategy)
        else:
            points.append(plots.TradeoffPoint(r.strategy, r.variant, r.mode, general, domain))
    if points:
        best = max(points, key=lambda p: (p.domain, p.general))
        parts.insert(
            1,
            para(
                "Highest domain score: ",
                code(best.strategy),
                f" ({fmt.score(best.domain)}), keeping a general score of {fmt.score(best.general)}.",
            ),
        )
    figures = [f for f in [plots.tradeoff(points, skipped)] if f]
    parts += [figure(f) for f in figures]
    return join(parts), figures


def _compared_mode(data: RunData) -> str:
    v = data.variant(data.before_variant or "")
    return v.mode if v else "closed"


def forgetting(data: RunData) -> Built:
    general = [s for s in data.suite_order() if data.roles.get(s) == "general"]
    if not general and not data.kl:
        return None
    parts: list[object] = []
    comps = [c for c in data.comparisons if c.role == "general"]
    if comps:
        parts += [
            para(
                "General suites measure what the model must not lose. Forgotten = items the ",
                code(data.before_variant or "before"),
                " model answered correctly and ",
                code(data.after_variant or "after"),
                " does not.",
            ),
            table(_COMPARISON_HEADERS, _comparison_rows(comps), text_cols=3),
        ]
    mode = _compared_mode(data)
    in_mode = [v for v in data.variants if v.mode == mode]
    panels = []
    for s in general:
        have = [v for v in in_mode if s in v.suites and v.suites[s].headline is not None]
        if not have:
            continue
        metric, higher = _metric(data, s)
        colors = {v.label: plots.BEFORE if i == 0 else _GENERAL_SHADES[(i - 1) % 4] for i, v in enumerate(have)}
        panels.append(
            plots.BarPanel(
                f"{s}{'' if higher else ' (lower is better)'}",
                [""],
                {v.label: [v.suites[s].headline] for v in have},
                colors,
                f"{metric} ({'fraction correct' if higher else 'per token'})",
                bounded=higher,
                metric=metric,
            )
        )
    figures = [
        f
        for f in [
            plots.bar_panels(
                panels,
                "forgetting-general-suites",
                f"General suites per model ({mode} mode)",
                "Bars of general-suite scores per model",
                "Each model's score on every general suite; grey is the reference model.",
            )
        ]
        if f
    ]
    parts += [figure(f) for f in figures]
    if data.kl:
        parts.append(tag("h3", "Drift from the base model"))
        parts.append(
            para(
                "Mean per-token KL(base ‖ model) over the base model's own answers to the general "
                "questions: 0 means the distribution is unchanged. It moves before any answer flips."
            )
        )
        rows = [
            [k.variant, fmt.plain(k.kl_per_token), fmt.integer(k.tokens), fmt.integer(k.sequences)] for k in data.kl
        ]
        parts.append(table(["model", "KL per token (nats)", "tokens", "sequences"], rows))
    if not parts:
        return None
    return join(parts), figures


def _retrieval_row(v: Variant, r: SuiteResult) -> list[object]:
    ret = r.retrieval
    return [
        v.label,
        f"{r.name} ({r.role or '?'})",
        fmt.score(r.headline),
        fmt.score(ret.recall) + (f" (k={ret.k})" if ret and ret.k else "") if ret else fmt.DASH,
        fmt.score(ret.mrr) if ret else fmt.DASH,
        fmt.percent(r.cited_any),
        fmt.percent(r.citations_valid),
        fmt.percent(r.abstained),
        fmt.integer(r.n),
    ]


def retrieval(data: RunData) -> Built:
    rag = [v for v in data.variants if v.mode in ("rag", "rag_gold")]
    if not rag:
        return None
    rows = [_retrieval_row(v, r) for v in rag for r in v.suites.values() if r.kind == "qa"]
    parts: list[object] = [
        para(
            "rag answers from the knowledge base's retrieved sources; rag_gold from each item's own gold passage "
            "(the ceiling retrieval can reach). Recall@k: the gold document is among the k retrieved; MRR: mean "
            "reciprocal rank of the gold document; cited: answers citing a source; valid: citations pointing at a "
            "source that was given; abstained: answers declining to answer."
        ),
        table(
            ["strategy", "suite", "accuracy", "recall@k", "MRR", "cited", "citations valid", "abstained", "n"],
            rows,
            text_cols=2,
        ),
    ]
    by_key = {(v.name, v.mode): v for v in data.variants}
    names = list(dict.fromkeys(v.name for v in rag))
    gaps = []
    for name in names:
        rag_v, gold_v, closed_v = (
            by_key.get((name, "rag")),
            by_key.get((name, "rag_gold")),
            by_key.get((name, "closed")),
        )
        if not rag_v or not gold_v:
            continue
        for s, r in rag_v.suites.items():
            g = gold_v.suites.get(s)
            if g is None or r.headline is None or g.headline is None:
                continue
            c = closed_v.suites.get(s).headline if closed_v and s in closed_v.suites else None
            gaps.append(
                [
                    name,
                    s,
                    fmt.score(c),
                    fmt.score(r.headline),
                    fmt.score(g.headline),
                    fmt.signed(g.headline - r.headline),
                ]
            )
    if gaps:
        parts += [
            tag("h3", "Retrieval gap"),
            para(
                "rag_gold − rag is what better retrieval could still gain; rag_gold − closed is what reading a "
                "correct passage gives the model at all."
            ),
            table(["model", "suite", "closed", "rag", "rag_gold", "gap (rag_gold − rag)"], gaps, text_cols=2),
        ]
    panels = []
    for s in [s for s in data.suite_order() if any(s in v.suites for v in rag)]:
        have = [v for v in data.variants if s in v.suites and v.suites[s].headline is not None]
        groups = list(dict.fromkeys(v.name for v in have))
        modes = [m for m in _MODE_ORDER if any(v.mode == m for v in have)]
        modes += [m for m in dict.fromkeys(v.mode for v in have) if m not in modes]
        series = {
            m: [
                by_key[(g, m)].suites[s].headline if (g, m) in by_key and s in by_key[(g, m)].suites else None
                for g in groups
            ]
            for m in modes
        }
        panels.append(
            plots.BarPanel(
                f"{s} ({data.roles.get(s, '?')})",
                groups,
                series,
                {m: plots.mode_color(m) for m in modes},
                "accuracy (fraction correct)",
            )
        )
    figures = [
        f
        for f in [
            plots.bar_panels(
                panels,
                "retrieval-accuracy-by-mode",
                "Accuracy by mode",
                "Bars of accuracy per model and mode",
                "Each model closed-book, with retrieved sources (rag) and "
                "with the gold passage (rag_gold); n/a where a mode was not run for that suite.",
            )
        ]
        if f
    ]
    parts += [figure(f) for f in figures]
    return join(parts), figures


def suites(data: RunData) -> Built:
    mc = [(v, r) for v in data.variants for r in v.suites.values() if r.kind == "mc"]
    ppl = [(v, r) for v in data.variants for r in v.suites.values() if r.kind == "perplexity"]
    if not mc and not ppl and not data.harness:
        return None
    parts: list[object] = []
    panels = []
    if mc:
        parts += [
            tag("h3", "Multiple choice"),
            para(
                "acc: the choice with the highest log-likelihood is right; acc_norm: the same with the "
                "likelihood normalized by the choice's length."
            ),
            table(
                ["model", "suite", "acc", "acc_norm", "n"],
                [
                    [
                        v.label,
                        f"{r.name} ({r.role or '?'})",
                        fmt.score(r.metrics.get("acc")),
                        fmt.score(r.metrics.get("acc_norm")),
                        fmt.integer(r.n),
                    ]
                    for v, r in mc
                ],
                text_cols=2,
            ),
        ]
        for name in dict.fromkeys(r.name for _, r in mc):
            have = [(v, r) for v, r in mc if r.name == name]
            color = plots.role_color(have[0][1].role)
            panels.append(
                plots.BarPanel(
                    f"{name} ({have[0][1].role or '?'})",
                    [v.label for v, _ in have],
                    {
                        "acc": [r.metrics.get("acc") for _, r in have],
                        "acc_norm": [r.metrics.get("acc_norm") for _, r in have],
                    },
                    {"acc": color, "acc_norm": plots.BEFORE},
                    "accuracy (fraction correct)",
                )
            )
    if ppl:
        parts += [
            tag("h3", "Perplexity"),
            para("Perplexity on held-out text: exp of the mean negative log-likelihood per token; lower is better."),
            table(
                ["model", "suite", "perplexity", "NLL per token (nats)", "tokens", "documents"],
                [
                    [
                        v.label,
                        f"{r.name} ({r.role or '?'})",
                        fmt.score(r.metrics.get("perplexity"), "perplexity"),
                        fmt.score(r.metrics.get("nll_per_token")),
                        fmt.integer(r.metrics.get("tokens")),
                        fmt.integer(r.metrics.get("documents")),
                    ]
                    for v, r in ppl
                ],
                text_cols=2,
            ),
        ]
        for name in dict.fromkeys(r.name for _, r in ppl):
            have = [(v, r) for v, r in ppl if r.name == name]
            panels.append(
                plots.BarPanel(
                    f"{name} ({have[0][1].role or '?'}, lower is better)",
                    [v.label for v, _ in have],
                    {"perplexity": [r.metrics.get("perplexity") for _, r in have]},
                    {"perplexity": plots.role_color(have[0][1].role)},
                    "perplexity",
                    bounded=False,
                    metric="perplexity",
                )
            )
    if data.harness:
        rows = [
            [variant, task, metric, fmt.plain(value)]
            for variant, tasks in data.harness.items()
            for task, metrics in tasks.items()
            for metric, value in metrics.items()
        ]
        parts += [tag("h3", "lm-evaluation-harness"), table(["model", "task", "metric", "value"], rows, text_cols=3)]
    figures = [
        f
        for f in [
            plots.bar_panels(
                panels,
                "suites-scores",
                "Multiple-choice and perplexity suites",
                "Bars of multiple-choice accuracy and perplexity per model",
                "One panel per suite, each with its own scale.",
            )
        ]
        if f
    ]
    parts += [figure(f) for f in figures]
    return join(parts), figures
