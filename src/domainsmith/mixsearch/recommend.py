"""The recommended domain share from fitted loss curves, and the practitioners' rules of thumb beside it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Rules of thumb quoted by practitioners (SEED_NOTES.md), as domain shares of training tokens.
HEURISTICS = {
    "domain under 15% in CPT": 0.15,
    "domain:general 1:5": 1 / 6,
    "domain:general 1:1 (SFT practice)": 0.5,
}

GRID = np.linspace(0.0, 1.0, 1001)


def recommend(
    general_loss: Callable[[np.ndarray], np.ndarray],
    domain_loss: Callable[[np.ndarray], np.ndarray],
    start_general_loss: float,
    tolerance: float,
    margin: float = 0.0,
) -> dict:
    """The domain share r in [0, 1] with the lowest predicted domain loss among those whose predicted general loss,
    raised by `margin` (the fit's relative leave-one-out error: how far a prediction may be off), stays at most
    (1 + tolerance) x the start model's. When no share meets the ceiling, the share with the lowest general loss,
    flagged `within_tolerance: false`. Both callables take domain shares."""
    general, domain = general_loss(GRID), domain_loss(GRID)
    ceiling = start_general_loss * (1 + tolerance)

    def best(feasible: np.ndarray) -> int:
        if feasible.any():
            return int(np.flatnonzero(feasible)[np.argmin(domain[feasible])])
        return int(np.argmin(general))

    i = best(general * (1 + margin) <= ceiling)
    return {
        "ratio": round(float(GRID[i]), 3),
        "general_loss": float(general[i]),
        "domain_loss": float(domain[i]),
        "general_rise": float(general[i] / start_general_loss - 1),
        "general_ceiling": ceiling,
        "tolerance": tolerance,
        "margin": margin,
        "ratio_without_margin": round(float(GRID[best(general <= ceiling)]), 3),
        "within_tolerance": bool(general[i] * (1 + margin) <= ceiling),
    }


def heuristics(
    general_loss: Callable[[np.ndarray], np.ndarray],
    domain_loss: Callable[[np.ndarray], np.ndarray],
    start_general_loss: float,
    tolerance: float,
) -> list[dict]:
    """Each rule of thumb's share with the losses the fitted curves predict for it."""
    rows = []
    for name, ratio in HEURISTICS.items():
        general = float(general_loss(np.array([ratio]))[0])
        rows.append(
            {
                "rule": name,
                "ratio": round(ratio, 3),
                "general_loss": general,
                "domain_loss": float(domain_loss(np.array([ratio]))[0]),
                "general_rise": general / start_general_loss - 1,
                "within_tolerance": general <= start_general_loss * (1 + tolerance),
            }
        )
    return rows
