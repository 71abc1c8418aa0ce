"""Parametric laws of a validation loss against the share of that loss's own data in training, and their fits.

Each loss is a function of `x`, the share of training tokens from its own role: the domain loss of the domain
share r, the general loss of the general share 1 - r (as the D-CPT Law does for its general-corpus loss), so both
laws say the same thing: more of your own data, lower loss, with a steep rise as your share goes to zero.

- `dcpt`: the D-CPT Law at fixed model size and token budget, L(x) = E + B*x^h + C/(x + eps)^g.
- `exponential`: the data-mixing law of Ye et al. for two roles, L(x) = c + k*exp(t*x).

Fits minimize a Huber loss on log(predicted) - log(measured) (delta 1e-3, as Chinchilla's fits do, robust to one
bad run) with L-BFGS-B from many seeded starts; positivity is kept by fitting logarithms of the positive
parameters. Leave-one-out error: refit without each point, predict it, mean absolute relative error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

HUBER_DELTA = 1e-3
REFINED_STARTS = 12  # L-BFGS-B runs per fit, from the best screened starts


@dataclass(frozen=True)
class Law:
    name: str
    formula: str
    names: tuple[str, ...]  # the law's parameters, in the order `predict` takes them
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, natural parameters) -> loss
    gradient: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, natural) -> d loss / d natural, (points, params)
    to_natural: Callable[[np.ndarray], np.ndarray]  # unconstrained vector -> natural parameters
    natural_slope: Callable[[np.ndarray], np.ndarray]  # d natural / d unconstrained (elementwise)
    starts: Callable[[np.ndarray, np.random.Generator, int], np.ndarray]  # (measured y, rng, n) -> unconstrained


def _dcpt_predict(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    e, b, h, c, g, eps = p
    return e + b * np.power(x, h) + c / np.power(x + eps, g)


def _dcpt_gradient(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    e, b, h, c, g, eps = p
    xh = np.power(x, h)
    log_x = np.log(np.where(x > 0, x, 1.0))  # x^h ln x -> 0 as x -> 0
    inv = np.power(x + eps, -g)
    return np.stack(
        [np.ones_like(x), xh, b * xh * log_x, inv, -c * inv * np.log(x + eps), -g * c * inv / (x + eps)], axis=1
    )


def _dcpt_natural(u: np.ndarray) -> np.ndarray:
    return np.exp(np.clip(u, -30, 30))  # every D-CPT parameter is positive


def _dcpt_starts(y: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    lo = max(float(y.min()), 1e-6)
    e = np.log(lo * rng.uniform(0.3, 0.99, n))
    b = np.log(lo * 10 ** rng.uniform(-4, 0, n))
    h = np.log(rng.uniform(0.2, 3.0, n))
    c = np.log(lo * 10 ** rng.uniform(-4, 0, n))
    g = np.log(rng.uniform(0.05, 2.0, n))
    eps = np.log(10 ** rng.uniform(-3, 0, n))
    return np.stack([e, b, h, c, g, eps], axis=1)


def _exp_predict(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    c, k, t = p
    return c + k * np.exp(t * x)


def _exp_gradient(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    c, k, t = p
    e = np.exp(t * x)
    return np.stack([np.ones_like(x), e, k * x * e], axis=1)


def _exp_natural(u: np.ndarray) -> np.ndarray:
    return np.array([u[0], math.exp(min(max(u[1], -30), 30)), u[2]])  # c and t free, k > 0


def _exp_starts(y: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    lo, span = float(y.min()), float(np.ptp(y)) or 1e-3
    c = lo - span * rng.uniform(0, 2, n)
    k = np.log(span * 10 ** rng.uniform(-1, 1, n))
    t = rng.uniform(-8, 8, n)
    return np.stack([c, k, t], axis=1)


LAWS = {
    "dcpt": Law(
        "dcpt",
        "E + B*x^h + C/(x+eps)^g",
        ("E", "B", "h", "C", "g", "eps"),
        _dcpt_predict,
        _dcpt_gradient,
        _dcpt_natural,
        _dcpt_natural,  # exp is its own derivative
        _dcpt_starts,
    ),
    "exponential": Law(
        "exponential",
        "c + k*exp(t*x)",
        ("c", "k", "t"),
        _exp_predict,
        _exp_gradient,
        _exp_natural,
        lambda u: np.array([1.0, _exp_natural(u)[1], 1.0]),
        _exp_starts,
    ),
}


def _huber(residual: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(residual)
    return np.where(a <= delta, 0.5 * residual**2, delta * (a - 0.5 * delta))


@dataclass(frozen=True)
class Fit:
    law: Law
    params: np.ndarray  # natural parameters
    objective: float

    def __call__(self, x) -> np.ndarray:
        return self.law.predict(np.asarray(x, dtype=float), self.params)

    def as_dict(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.law.names, self.params, strict=True)}


def fit_law(law: Law, x: Sequence[float], y: Sequence[float], starts: int = 48, seed: int = 0) -> Fit:
    """The best L-BFGS-B fit of the Huber objective on log losses, from the best of `starts` seeded starts."""
    from scipy.optimize import minimize

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    log_y = np.log(y)

    def objective(u: np.ndarray) -> float:
        with np.errstate(all="ignore"):  # starts far off overflow; such points score as infeasible below
            pred = law.predict(x, law.to_natural(u))
        if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
            return 1e6
        return float(_huber(np.log(pred) - log_y).sum())

    def objective_and_gradient(u: np.ndarray) -> tuple[float, np.ndarray]:
        natural = law.to_natural(u)
        with np.errstate(all="ignore"):
            pred = law.predict(x, natural)
            if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
                return 1e6, np.zeros_like(u)
            residual = np.log(pred) - log_y
            slope = np.clip(residual, -HUBER_DELTA, HUBER_DELTA)  # the Huber loss's derivative
            grad = (slope / pred) @ law.gradient(x, natural) * law.natural_slope(u)
        if not np.all(np.isfinite(grad)):
            return 1e6, np.zeros_like(u)
        return float(_huber(residual).sum()), grad

    # Screen every start by its objective (cheap), then run L-BFGS-B from the most promising few.
    candidates = law.starts(y, np.random.default_rng(seed), starts)
    screened = sorted(candidates, key=objective)[:REFINED_STARTS]
    best_u, best = None, math.inf
    for u0 in screened:
        with np.errstate(all="ignore"):
            result = minimize(objective_and_gradient, u0, jac=True, method="L-BFGS-B")
        if result.fun < best:
            best_u, best = result.x, float(result.fun)
    return Fit(law, law.to_natural(best_u), best)


def leave_one_out_error(law: Law, x: Sequence[float], y: Sequence[float], starts: int = 48, seed: int = 0) -> dict:
    """Refit without each point and predict it: per-point relative errors and their mean absolute value."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    errors = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        fit = fit_law(law, x[keep], y[keep], starts, seed)
        errors.append(float((fit(x[i : i + 1])[0] - y[i]) / y[i]))
    return {"errors": errors, "mean_abs_rel_error": float(np.mean(np.abs(errors)))}


def fit_all(x: Sequence[float], y: Sequence[float], starts: int = 48, seed: int = 0) -> dict:
    """Every law fitted on all points with its leave-one-out error; `best` names the law with the lower error."""
    if len(x) < 3:
        raise ValueError(f"fitting a loss law needs at least 3 measured shares, got {len(x)}")
    fits = {}
    for name, law in LAWS.items():
        fit = fit_law(law, x, y, starts, seed)
        loo = leave_one_out_error(law, x, y, starts, seed) if len(x) > len(law.names) else None
        fits[name] = {"fit": fit, "loo": loo}
    # A law needs more points than parameters for a leave-one-out error; without one it cannot be chosen.
    scored = {n: f["loo"]["mean_abs_rel_error"] for n, f in fits.items() if f["loo"] is not None}
    best = min(scored, key=scored.get) if scored else "exponential"
    return {"best": best, "fits": fits}
