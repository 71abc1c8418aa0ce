"""Number formatting shared by the tables and the plot labels, so the same value reads the same everywhere."""

from __future__ import annotations

DASH = "–"


def score(value: float | None, metric: str = "accuracy") -> str:
    """Accuracies as 0.955; perplexities (unbounded, lower is better) with 2 decimals."""
    if value is None:
        return DASH
    if metric in ("perplexity", "nll_per_token"):
        return f"{value:,.2f}" if abs(value) < 1e5 else f"{value:.3g}"
    return f"{value:.3f}"


def signed(value: float | None, metric: str = "accuracy") -> str:
    if value is None:
        return DASH
    text = score(value, metric)
    return text if text.startswith("-") else f"+{text}"


def ci(bounds: tuple[float, float] | None, metric: str = "accuracy") -> str:
    return DASH if bounds is None else f"[{signed(bounds[0], metric)}, {signed(bounds[1], metric)}]"


def p_value(value: float | None) -> str:
    if value is None:
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def integer(value: float | None) -> str:
    return DASH if value is None else f"{round(value):,}"


def count(value: float | None) -> str:
    """Token counts: 41.6k, 166M, 20B."""
    if value is None:
        return DASH
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def percent(share: float | None) -> str:
    return DASH if share is None else f"{100 * share:.1f}%"


def plain(value: float | None) -> str:
    """A metric whose scale is unknown (harness tasks, fits)."""
    if value is None:
        return DASH
    return f"{value:.4g}"
