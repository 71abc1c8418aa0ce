"""Sections built from the training artefacts: loss curves with spike-guard events, the data mix, mixture search.

Each builder returns (body, figures), or None when the run has nothing for it.
"""

from __future__ import annotations

import json
import re

from . import format as fmt
from . import plots
from .collect import RunData, _dict, num
from .html import Figure, Html, code, figure, join, para, table, tag

Built = tuple[Html, list[Figure]] | None

_MAX_EVENT_ROWS = 50


def _slug(text: str, taken: set[str]) -> str:
    """A file-name-safe, unique version of a stage name."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "stage"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _tail_mean(values: list[float], n: int = 20) -> float | None:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else None


def _stage_rows(data: RunData) -> list[list[object]]:
    rows = []
    for stage, m in data.stages.items():
        params = m.get("parameters") if isinstance(m.get("parameters"), dict) else {}
        d = m.get("data") if isinstance(m.get("data"), dict) else {}
        trainable, total = num(params.get("trainable")), num(params.get("total"))
        share = f" ({fmt.percent(trainable / total)})" if trainable is not None and total else ""
        rows.append(
            [
                stage,
                str(m.get("finetuning", fmt.DASH)),
                str(m.get("precision", fmt.DASH)),
                fmt.count(trainable) + share,
                fmt.integer(num(d.get("examples"))),
                fmt.count(num(d.get("tokens"))),
                fmt.count(num(d.get("target_tokens"))),
                fmt.integer(num(d.get("truncated"))),
                fmt.integer(num(m.get("steps"))),
                fmt.seconds(num(m.get("train_seconds"))),
            ]
        )
    return rows


def loss(data: RunData) -> Built:
    curves = [c for c in data.loss if c.steps or c.eval_steps]
    if not curves:
        return None
    parts: list[object] = [
        para(
            "Training loss per logged step (faint) and its trailing moving average. Red lines mark spike-guard "
            "events: steps whose loss jumped past the guard's threshold, with what the guard did."
        ),
    ]
    rows = []
    for c in curves:
        rows.append(
            [
                c.stage,
                fmt.integer(len(c.steps)),
                fmt.plain(c.losses[0] if c.losses else None),
                fmt.plain(_tail_mean(c.losses)),
                fmt.plain(min(c.losses) if c.losses else None),
                fmt.plain(c.eval_losses[-1] if c.eval_losses else None),
                fmt.seconds(c.runtime),
                fmt.integer(len(c.events)),
            ]
        )
    parts.append(
        table(
            [
                "stage",
                "logged steps",
                "first loss",
                "final loss (mean of last 20)",
                "lowest loss",
                "last eval loss",
                "runtime",
                "spike events",
            ],
            rows,
        )
    )
    if data.stages:
        parts.append(
            table(
                [
                    "stage",
                    "finetuning",
                    "precision",
                    "trainable parameters",
                    "examples",
                    "tokens",
                    "target tokens",
                    "truncated",
                    "steps",
                    "train time",
                ],
                _stage_rows(data),
                caption="Stage settings and data as trained",
                text_cols=3,
            )
        )
    figures: list[Figure] = []
    taken: set[str] = set()
    for c in curves:
        fig = plots.loss_curve(c, f"loss-{_slug(c.stage, taken)}")
        if fig:
            figures.append(fig)
            parts.append(figure(fig))
    events = [(c.stage, e) for c in curves for e in c.events]
    if events:
        shown = events[:_MAX_EVENT_ROWS]
        rows = [
            [
                stage,
                fmt.integer(e.step),
                fmt.plain(e.loss),
                fmt.plain(e.threshold),
                e.action,
                fmt.integer(e.batches_skipped),
            ]
            for stage, e in shown
        ]
        caption = None if len(events) <= _MAX_EVENT_ROWS else f"First {_MAX_EVENT_ROWS} of {len(events)} events"
        parts += [
            tag("h3", "Spike-guard events"),
            table(["stage", "step", "loss", "threshold", "action", "batches skipped"], rows, caption=caption),
        ]
    return join(parts), figures


def mix(data: RunData) -> Built:
    mixes = [m for m in data.mix if any(r.share for r in m.roles)]
    if not mixes:
        return None
    parts: list[object] = [
        para(
            "The share of domain and general data the model actually trained on (after rejected records). A "
            "general share keeps replaying what the model must not forget."
        ),
    ]
    role_rows, source_rows = [], []
    for m in mixes:
        for r in m.roles:
            role_rows.append([m.label, r.name, fmt.percent(r.share), fmt.count(r.tokens), fmt.integer(r.records)])
        for s in m.sources:
            source_rows.append(
                [m.label, s.name, s.role or fmt.DASH, fmt.percent(s.share), fmt.count(s.tokens), fmt.integer(s.records)]
            )
    origins = "; ".join(
        f"{m.label}: shares of {m.basis}, from {m.origin}"
        + (f", {fmt.count(m.total_tokens)} tokens in all" if m.total_tokens else "")
        for m in mixes
    )
    parts += [
        para(origins + ".", cls="muted"),
        table(["stage", "role", "share", "tokens", "records"], role_rows, text_cols=2),
    ]
    if source_rows:
        parts.append(table(["stage", "source", "role", "share", "tokens", "records"], source_rows, text_cols=3))
    figures = [f for f in [plots.mix_shares(mixes)] if f]
    parts += [figure(f) for f in figures]
    return join(parts), figures


def _value(v: object) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return str(v)
    if num(v) is not None:
        return fmt.plain(num(v))
    return json.dumps(v, ensure_ascii=False, default=str)[:500]


def mixture_search(data: RunData) -> Built:
    ms = data.mix_search
    if ms is None:
        return None
    parts: list[object] = [
        para(
            "Small training runs at several domain shares; general and domain validation loss were measured at each "
            "share and fitted as curves, and the recommended share balances the two."
        ),
    ]
    if ms.recommendation:
        parts += [
            tag("h3", "Recommendation"),
            table(["key", "value"], [[k, _value(v)] for k, v in ms.recommendation.items()]),
        ]
    if ms.points:
        keys = ["ratio", "general_loss", "domain_loss"]
        headers = ["domain share", "general loss", "domain loss"]
        caption = "Measured points"
        if any("general_loss_sd" in p for p in ms.points):  # several seeded runs per share: their spread
            keys += ["general_loss_sd", "domain_loss_sd"]
            headers += ["general sd over runs", "domain sd over runs"]
            caption += " (mean over seeded runs)"
        rows = [[fmt.plain(p.get(k)) for k in keys] for p in ms.points]
        parts.append(table(headers, rows, caption=caption, text_cols=0))
    if ms.fits:
        parts.append(table(["fit", "parameters"], [[k, code(_value(v))] for k, v in ms.fits.items()], text_cols=2))
    figures = [f for f in [plots.mixture_search(ms)] if f]
    parts += [figure(f) for f in figures]
    return join(parts), figures


def _is_rl(metrics: dict) -> bool:
    return "num_generations" in metrics


def _last_kl(metrics: dict) -> tuple[float | None, dict]:
    kl = _dict(metrics.get("kl"))
    measured = kl.get("measured") if isinstance(kl.get("measured"), list) else []
    return (num(_dict(measured[-1]).get("kl_per_token")) if measured else None), _dict(kl.get("event"))


def _grpo_rows(data: RunData) -> list[list[str]]:
    rows = []
    for stage, m in data.stages.items():
        if not _is_rl(m):
            continue
        before, after = _dict(m.get("heldout_before")), _dict(m.get("heldout_after"))
        flips = _dict(m.get("heldout_flips"))
        curve = _dict(m.get("reward_curve"))
        raw_total = curve.get("total") if isinstance(curve.get("total"), list) else []
        total = [v for v in map(num, raw_total) if v is not None]
        rewards = _dict(m.get("rewards"))
        correlations = [f"{name} {fmt.plain(num(_dict(r).get('length_correlation')))}" for name, r in rewards.items()]
        alarm = _dict(m.get("length_alarm"))
        last_kl, event = _last_kl(m)
        rows.append(
            [
                stage,
                f"{m.get('loss_type')} (beta {fmt.plain(num(m.get('beta')))}, {m.get('num_generations')} samples)",
                fmt.integer(num(_dict(m.get("prompts")).get("heldout"))),
                " -> ".join(fmt.percent(num(d.get("accuracy"))) for d in (before, after)),
                f"{flips.get('learned', fmt.DASH)} / {flips.get('forgotten', fmt.DASH)}",
                " -> ".join(fmt.plain(v) for v in (total[0], total[-1])) if total else fmt.DASH,
                "; ".join(correlations) or fmt.DASH,
                "fired" if alarm.get("fired") else f"no (threshold {fmt.plain(num(alarm.get('threshold')))})",
                fmt.plain(last_kl),
                f"{event.get('action')} at step {event.get('step')}" if event else fmt.DASH,
            ]
        )
    return rows


def _reward_model_stages(data: RunData) -> list[tuple[str, dict]]:
    """(name, metrics) of the rm stages: they have a length alarm and, unlike grpo, no sampled groups."""
    return [(stage, m) for stage, m in data.stages.items() if "length_alarm" in m and not _is_rl(m)]


def _rm_category_rows(data: RunData) -> list[list[str]]:
    """One row per reward-model stage and pair category, where the held-out pairs carry categories."""
    rows = []
    for stage, m in _reward_model_stages(data):
        before = _dict(_dict(m.get("heldout_before")).get("by_category"))
        for category, after in _dict(_dict(m.get("heldout_after")).get("by_category")).items():
            accuracies = (num(_dict(before.get(category)).get("accuracy")), num(_dict(after).get("accuracy")))
            rows.append([stage, category, fmt.integer(num(_dict(after).get("pairs"))),
                         " -> ".join(fmt.percent(a) for a in accuracies)])  # fmt: skip
    return rows


def preference(data: RunData) -> Built:
    """rm, dpo and grpo stages: held-out accuracies before and after, reward hacking alarms, drift from the
    reference, and a plot of drift and reward per step."""
    rows = []
    for stage, m in data.stages.items():
        if "loss_type" not in m or _is_rl(m):
            continue
        before, after = _dict(m.get("heldout_before")), _dict(m.get("heldout_after"))
        last_kl, event = _last_kl(m)
        rows.append(
            [
                stage,
                f"{m.get('loss_type')} (beta {fmt.plain(num(m.get('beta')))})",
                fmt.integer(num(_dict(m.get("pairs")).get("heldout"))),
                fmt.percent(num(after.get("implicit_reward_accuracy"))),
                " -> ".join(fmt.percent(num(d.get("loglik_accuracy"))) for d in (before, after)),
                fmt.plain(last_kl),
                f"{event.get('action')} at step {event.get('step')}" if event else fmt.DASH,
            ]
        )
    rm_rows = []
    for stage, m in _reward_model_stages(data):
        before, after, alarm = _dict(m.get("heldout_before")), _dict(m.get("heldout_after")), _dict(m["length_alarm"])
        rm_rows.append(
            [
                stage,
                fmt.integer(num(_dict(m.get("pairs")).get("heldout"))),
                " -> ".join(fmt.percent(num(d.get("accuracy"))) for d in (before, after)),
                fmt.plain(num(after.get("reward_length_correlation"))),
                "fired" if alarm.get("fired") else f"no (threshold {fmt.plain(num(alarm.get('threshold')))})",
            ]
        )
    grpo_rows = _grpo_rows(data)
    if not rows and not rm_rows and not grpo_rows:
        return None
    parts: list[object] = []
    if rm_rows:
        parts += [
            para(
                "Reward models: pairwise accuracy on held-out pairs (chosen scored above rejected) before and after "
                "training, and the correlation of the reward with the reply's length over every held-out reply (a "
                "reward that mostly measures length invites length hacking)."
            ),
            table(
                ["stage", "held-out pairs", "pairwise accuracy", "reward-length correlation", "length alarm"],
                rm_rows,
                text_cols=1,
            ),  # fmt: skip
        ]
        if category_rows := _rm_category_rows(data):
            parts += [
                para("By pair category (the pairs' `category` field): a category lost every time hides in the total."),
                table(["stage", "category", "held-out pairs", "pairwise accuracy"], category_rows, text_cols=2),
            ]
    if rows:
        parts += _dpo_parts(rows)
    if grpo_rows:
        parts += [
            para(
                "RL with verifiable rewards: held-out prompts answered greedily before and after and scored against "
                "their gold answers (items learned / forgotten), the weighted reward of the sampled answers at the "
                "first and last step, each reward's correlation with answer length over every sample (a reward that "
                "pays for length is being hacked), and the KL from the reference on the held-out prompts with their "
                "gold answers."
            ),
            table(
                [
                    "stage",
                    "loss",
                    "held-out prompts",
                    "held-out accuracy",
                    "learned / forgotten",
                    "reward",
                    "reward-length correlation",
                    "length alarm",
                    "KL (nats/token)",
                    "KL ceiling",
                ],
                grpo_rows,
                text_cols=2,
            ),  # fmt: skip
        ]
    figures = [f for f in [plots.drift_and_reward(data.stages)] if f]
    parts += [figure(f) for f in figures]
    return join(parts), figures


def _dpo_parts(rows: list[list[str]]) -> list[object]:
    return [
        para(
            "Held-out pairs scored before and after: the implicit reward (how much more the trained model prefers "
            "the chosen reply than its reference does) and the plain log-likelihood preference. KL is the mean "
            "per-token KL(reference || policy) on the held-out prompts and chosen replies at the last measure."
        ),
        table(
            [
                "stage",
                "loss",
                "held-out pairs",
                "implicit-reward accuracy",
                "log-likelihood prefers chosen",
                "KL (nats/token)",
                "KL ceiling",
            ],  # fmt: skip
            rows,
            text_cols=2,
        ),
    ]
