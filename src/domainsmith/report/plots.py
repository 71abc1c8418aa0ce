"""The report's figures as PNG bytes, drawn with matplotlib's Agg renderer.

Figures are built as `matplotlib.figure.Figure` objects with an Agg canvas, never through pyplot: nothing touches
the global backend or a display, and no figure is left registered anywhere (each is dropped after rendering).
Colours are fixed per role (domain / general) and per mode (closed / rag / rag_gold / icl) so a strategy or role
looks the same in every plot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from . import format as fmt
from .collect import LossCurve, MixSearch, TokenMix, num
from .html import Figure

ROLE_COLORS = {"domain": "#0072B2", "general": "#E69F00"}
MODE_COLORS = {"closed": "#009E73", "rag": "#CC79A7", "rag_gold": "#D55E00", "icl": "#56B4E9"}
OTHER = "#7f7f7f"
BEFORE = "#b0b0b0"
SPIKE = "#C00000"
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DPI = 110

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


def short(text: str, limit: int = 32) -> str:
    """Long user-chosen names would squeeze the axes: cut them (the tables keep the full name)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def role_color(role: str | None) -> str:
    return ROLE_COLORS.get(role or "", OTHER)


def mode_color(mode: str) -> str:
    return MODE_COLORS.get(mode, OTHER)


def _new(width: float = 7.5, height: float = 4.2, **subplots) -> tuple[MplFigure, object]:
    fig = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _draw(fn):
    """Run a figure builder under the report's style; matplotlib's global rcParams are left as they were."""

    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    wrapper.__doc__ = fn.__doc__
    return wrapper


@dataclass
class DiffRow:
    suite: str
    role: str | None
    diff: float
    ci95: tuple[float, float] | None


@_draw
def differences(rows: Sequence[DiffRow], before: str, after: str) -> Figure | None:
    """Forest plot: after - before per suite with its 95% CI; the zero line is 'no change'."""
    if not rows:
        return None
    fig, ax = _new(7.5, 1.4 + 0.55 * len(rows))
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows, strict=True):
        color = role_color(r.role)
        if r.ci95:
            ax.errorbar(
                r.diff,
                y,
                xerr=[[r.diff - r.ci95[0]], [r.ci95[1] - r.diff]],
                fmt="o",
                color=color,
                capsize=4,
                markersize=7,
                elinewidth=2,
            )
        else:
            ax.plot(r.diff, y, "o", color=color, markersize=7)
        label = fmt.signed(r.diff) + (f"  {fmt.ci(r.ci95)}" if r.ci95 else "")
        ax.annotate(label, (r.diff, y), xytext=(0, 9), textcoords="offset points", ha="center", fontsize=9)
    ax.axvline(0, color="#333333", linewidth=1)
    ax.set_yticks(ys, [f"{short(r.suite)} ({r.role or '?'})" for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lo = min([r.ci95[0] if r.ci95 else r.diff for r in rows] + [0.0])
    hi = max([r.ci95[1] if r.ci95 else r.diff for r in rows] + [0.0])
    pad = max(0.05, 0.15 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("after − before (fraction of items; 0.10 = 10 points)")
    fig.suptitle(f"Change from {short(before, 24)} to {short(after, 24)}, with 95% CI", fontweight="bold")
    _role_legend(ax, {r.role for r in rows})
    return Figure(
        "summary-differences",
        _png(fig),
        "Score differences per suite with confidence intervals",
        f"Each point is after − before on the same items ({before} → {after}); bars are the 95% CI. "
        "A bar that does not cross zero is a change the item sample supports.",
    )


def _role_legend(ax, roles: set) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=role_color(r), label=f"{r} suite")
        for r in ("domain", "general")
        if r in roles
    ]
    if handles:
        ax.legend(handles=handles, loc="best")


@dataclass
class TradeoffPoint:
    strategy: str
    variant: str
    mode: str
    general: float
    domain: float


@_draw
def tradeoff(points: Sequence[TradeoffPoint], skipped: Sequence[str]) -> Figure | None:
    """Each strategy as one point: general score (x) against domain score (y); up and right is better."""
    if not points:
        return None
    from matplotlib.lines import Line2D

    fig, ax = _new(7.5, 5.2)
    variants = list(dict.fromkeys(p.variant for p in points))
    marker = {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(variants)}
    by_mode: dict[str, list[TradeoffPoint]] = {}
    for p in points:
        by_mode.setdefault(p.mode, []).append(p)
    for mode, ps in by_mode.items():  # arrows: what training did to each mode
        for a, b in zip(ps, ps[1:], strict=False):
            ax.annotate(
                "",
                (b.general, b.domain),
                (a.general, a.domain),
                arrowprops={"arrowstyle": "->", "color": mode_color(mode), "alpha": 0.5, "lw": 1.2},
            )
    placed: list[tuple[float, float]] = []
    for p in points:
        ax.plot(
            p.general,
            p.domain,
            marker[p.variant],
            color=mode_color(p.mode),
            markersize=10,
            markeredgecolor="white",
            markeredgewidth=1,
            zorder=3,
        )
        clashes = sum(1 for x, y in placed if abs(x - p.general) < 0.04 and abs(y - p.domain) < 0.04)
        placed.append((p.general, p.domain))
        ax.annotate(
            short(p.strategy),
            (p.general, p.domain),
            xytext=(8, 4 - 13 * clashes),
            textcoords="offset points",
            fontsize=9,
            va="center",
        )
    ax.set_xlim(-0.03, 1.12)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("general score (mean accuracy over the general suites every strategy ran, fraction correct)")
    ax.set_ylabel("domain score (mean accuracy, domain suites every strategy ran)")
    ax.set_title("Domain gain against general skill, per strategy")
    ax.plot(1, 1, "*", color="#bbbbbb", markersize=14, zorder=1)
    ax.annotate("ideal", (1, 1), xytext=(0, -14), textcoords="offset points", ha="center", color="#888888", fontsize=8)
    handles = [Line2D([], [], marker="o", linestyle="", color=mode_color(m), label=f"mode: {m}") for m in by_mode]
    handles += [Line2D([], [], marker=marker[v], linestyle="", color="#555555", label=f"model: {v}") for v in variants]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    caption = (
        "Up is more domain knowledge, right is more general skill kept. Colour is the mode, shape the model; "
        "arrows follow training within a mode."
    )
    if skipped:
        caption += " Not plotted (no domain or no general score): " + ", ".join(skipped) + "."
    return Figure(
        "strategies-tradeoff", _png(fig), "Scatter of general score against domain score per strategy", caption
    )


@dataclass
class BarPanel:
    """One subplot of grouped bars: groups on x, one bar per series within a group."""

    title: str
    groups: list[str]
    series: dict[str, list[float | None]]  # series label -> value per group
    colors: dict[str, str]
    ylabel: str
    bounded: bool = True  # values are fractions in [0, 1]
    metric: str = "accuracy"


@_draw
def bar_panels(panels: Sequence[BarPanel], name: str, title: str, alt: str, caption: str) -> Figure | None:
    """Small multiples of grouped bars, each with its own y scale (accuracy and perplexity do not share one)."""
    panels = [p for p in panels if any(v is not None for vs in p.series.values() for v in vs)]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = _new(max(4.2 * cols, 6.5), 3.6 * rows + 0.5, nrows=rows, ncols=cols, squeeze=False)
    legend: dict[str, object] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        n = len(panel.series)
        width = 0.8 / max(n, 1)
        x = np.arange(len(panel.groups))
        for i, (label, values) in enumerate(panel.series.items()):
            pos = x - 0.4 + width * (i + 0.5)
            heights = [v if v is not None else 0.0 for v in values]
            bars = ax.bar(pos, heights, width * 0.92, color=panel.colors.get(label, OTHER), label=label)
            for bar, v in zip(bars, values, strict=True):
                text = "n/a" if v is None else fmt.score(v, panel.metric)
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.set_xticks(x, [short(g, 20) for g in panel.groups])
        ax.set_title(short(panel.title, 48))
        ax.set_ylabel(panel.ylabel)
        if panel.bounded:
            ax.set_ylim(0, 1.12)
        else:
            ax.margins(y=0.15)
        ax.grid(axis="x", visible=False)
        if n > 1:  # a lone series is named by the panel's title
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontweight="bold")
    if legend:  # one legend for all panels, below them: it never covers a bar or its value
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 6))
    return Figure(name, _png(fig), alt, caption)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` steps (shorter at the start), so it never looks ahead."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def _thin(n: int, limit: int = 4000) -> slice:
    return slice(None, None, max(1, n // limit))


@_draw
def loss_curve(curve: LossCurve, name: str) -> Figure | None:
    """Training loss per step (raw, faint) with a moving average, eval loss points and spike-guard events."""
    if not curve.steps and not curve.eval_steps:
        return None
    fig, ax = _new(7.5, 4.2)
    steps, losses = np.asarray(curve.steps, dtype=float), np.asarray(curve.losses, dtype=float)
    window = max(1, min(100, len(losses) // 25))
    if len(losses):
        cut = _thin(len(losses))
        ax.plot(
            steps[cut],
            losses[cut],
            color=ROLE_COLORS["domain"],
            alpha=0.25,
            linewidth=0.8,
            label="training loss (per logged step)",
        )
        if window > 1:
            ax.plot(
                steps[cut],
                _moving_average(losses, window)[cut],
                color=ROLE_COLORS["domain"],
                linewidth=2,
                label=f"moving average ({window} steps)",
            )
    if curve.eval_steps:
        ax.plot(
            curve.eval_steps, curve.eval_losses, "o-", color=ROLE_COLORS["general"], markersize=4, label="eval loss"
        )
    by_action: dict[str, int] = {}
    for e in curve.events:
        by_action[e.action] = by_action.get(e.action, 0) + 1
    styles = ["--", ":", "-."]
    for i, (action, count) in enumerate(by_action.items()):
        label = f"spike guard: {action} ({count} event{'s' if count != 1 else ''})"
        for j, e in enumerate(x for x in curve.events if x.action == action):
            ax.axvline(
                e.step, color=SPIKE, linestyle=styles[i % 3], linewidth=1, alpha=0.7, label=label if j == 0 else None
            )
            if e.loss is not None:
                ax.plot(e.step, e.loss, "x", color=SPIKE, markersize=7)
    values = [v for v in list(losses) + curve.eval_losses if v > 0]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
        ax.set_ylabel("loss (nats per target token, log scale)")
    else:
        ax.set_ylabel("loss (nats per target token)")
    ax.set_xlabel("optimizer step")
    ax.set_title(f"Training loss: stage {curve.stage}")
    ax.legend(loc="upper right")
    caption = f"Stage {curve.stage}: {len(curve.steps)} logged steps"
    if curve.events:
        caption += f"; {len(curve.events)} spike-guard event(s) marked in red"
    return Figure(name, _png(fig), f"Training loss curve of stage {curve.stage}", caption + ".")


@_draw
def mix_shares(mixes: Sequence[TokenMix]) -> Figure | None:
    """One horizontal stacked bar per stage: the share of each role in what was trained on."""
    mixes = [m for m in mixes if any(r.share for r in m.roles)]
    if not mixes:
        return None
    fig, ax = _new(7.5, 1.3 + 0.6 * len(mixes))
    labels = []
    seen: set[str] = set()
    unlabelled = False  # a slice too thin for its name inside: then a legend is needed
    for y, mix in enumerate(mixes):
        left = 0.0
        for r in sorted(mix.roles, key=lambda r: {"domain": 0, "general": 1}.get(r.name, 2)):
            width = 100 * (r.share or 0.0)
            ax.barh(
                y,
                width,
                left=left,
                color=role_color(r.name),
                edgecolor="white",
                label=r.name if r.name not in seen else None,
            )
            seen.add(r.name)
            if width >= 8:
                ax.text(
                    left + width / 2,
                    y,
                    f"{r.name} {width:.1f}%",
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=9,
                    fontweight="bold",
                )
            else:
                unlabelled = True
            left += width
        labels.append(f"{mix.label} (by {mix.basis})")
    ax.set_yticks(range(len(mixes)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    bases = {m.basis for m in mixes}
    ax.set_xlabel(f"share of training {bases.pop() if len(bases) == 1 else 'data'} (%)")
    ax.set_title("Realized training mix by role")
    ax.grid(axis="y", visible=False)
    if unlabelled:
        fig.legend(loc="outside lower center", ncol=4)
    return Figure(
        "mix-share",
        _png(fig),
        "Stacked bars of the share of domain and general data",
        "Share of each role in what the stage actually trained on (after rejects).",
    )


@_draw
def mixture_search(ms: MixSearch) -> Figure | None:
    """General and domain loss against the domain share: measured points, fitted curves, the recommended ratio."""
    fig, ax = _new(7.5, 4.4)
    ratio = ms.curves.get("ratio") or []
    drawn = False
    for key, role in (("general_loss", "general"), ("domain_loss", "domain")):
        curve = ms.curves.get(key) or []
        xy = [(x, y) for x, y in zip(ratio, curve, strict=False) if x is not None and y is not None]
        if xy:
            ax.plot(*zip(*xy, strict=True), color=role_color(role), linewidth=2, label=f"{role} loss (fit)")
            drawn = True
        pts = [(p["ratio"], p[key], p.get(f"{key}_sd", 0.0)) for p in ms.points if key in p]
        if pts:
            x, y, sd = zip(*pts, strict=True)
            # With several seeds per share, bars of one run-to-run standard deviation.
            ax.errorbar(x, y, yerr=sd if any(sd) else None, fmt="o", color=role_color(role), markersize=7,
                        markeredgecolor="white", capsize=3, label=f"{role} loss (measured)")  # fmt: skip
            drawn = True
    if not drawn:
        return None
    ceiling = ms.recommendation.get("general_ceiling")
    if isinstance(ceiling, int | float) and not isinstance(ceiling, bool):
        ax.axhline(ceiling, color=role_color("general"), linestyle=":", linewidth=1.2,
                   label="general-loss ceiling (start model + tolerance)")  # fmt: skip
    rec = ms.recommendation.get("ratio")
    if isinstance(rec, int | float) and not isinstance(rec, bool):
        ax.axvline(rec, color="#333333", linestyle="--", linewidth=1.2, label=f"recommended: {rec:.2f}")
    ax.set_xlabel("domain share of training tokens (fraction)")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("Mixture search: loss against domain share")
    ax.legend(loc="best")
    return Figure(
        "mixture-search",
        _png(fig),
        "Loss curves against domain share with the recommended ratio",
        "Lower is better for both. More domain data lowers domain loss and usually raises general loss; "
        "the dashed line is the recommended domain share.",
    )


def _series(metrics: dict, key: str, x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) points of a list of rows (kl.measured) or of parallel lists (reward_curve), finite values only."""
    raw = metrics.get(key)
    if isinstance(raw, dict) and isinstance(raw.get("measured"), list):  # kl: {"measured": [{step, kl}, ...]}
        rows = [r for r in raw["measured"] if isinstance(r, dict)]
        pairs = [(r.get(x), r.get(y)) for r in rows]
    elif isinstance(raw, dict) and isinstance(raw.get(x), list) and isinstance(raw.get(y), list):
        pairs = list(zip(raw[x], raw[y], strict=False))
    else:
        return []
    return [(num(a), num(b)) for a, b in pairs if num(a) is not None and num(b) is not None]


@_draw
def drift_and_reward(stages: dict[str, dict]) -> Figure | None:
    """KL from the reference per step for dpo/grpo stages (with their ceilings), and grpo's reward per step."""
    kl = {name: _series(m, "kl", "step", "kl_per_token") for name, m in stages.items()}
    reward = {name: _series(m, "reward_curve", "step", "total") for name, m in stages.items()}
    kl, reward = {k: v for k, v in kl.items() if v}, {k: v for k, v in reward.items() if v}
    if not kl and not reward:
        return None
    fig, (left, right) = _new(10, 4.0, ncols=2)
    for i, (name, points) in enumerate(kl.items()):
        left.plot(*zip(*points, strict=True), marker=MARKERS[i % len(MARKERS)], label=short(name))
        ceiling = num((stages[name].get("kl") or {}).get("ceiling"))
        if ceiling is not None:
            left.axhline(ceiling, color=SPIKE, linestyle=":", linewidth=1.2, label=f"{short(name)} ceiling")
    left.set_xlabel("optimizer step")
    left.set_ylabel("KL(reference || policy), nats per token")
    left.set_title("Drift from the reference")
    for name, points in reward.items():
        steps, values = (np.asarray(v) for v in zip(*points, strict=True))
        right.plot(steps, values, color=OTHER, alpha=0.35, linewidth=1)
        window = max(1, min(20, len(values) // 5))
        right.plot(steps, _moving_average(values, window), marker=None, linewidth=2,
                   label=f"{short(name)} (mean of {window})")  # fmt: skip
    right.set_xlabel("optimizer step")
    right.set_ylabel("mean weighted reward of the sampled answers")
    right.set_title("RL reward")
    for ax, shown in ((left, kl), (right, reward)):
        if shown:
            ax.legend(loc="best")
        else:
            ax.set_axis_off()
    return Figure(
        "drift-and-reward",
        _png(fig),
        "KL from the reference and RL reward per step",
        "Left: drift from the reference model on held-out data; a dotted line is the stage's KL ceiling. Right: the "
        "reward of the answers a grpo stage sampled (faint: per step; line: moving mean).",
    )
