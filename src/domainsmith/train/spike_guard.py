"""Loss-spike guard: decide, before the optimizer step, whether this step's loss or gradient is a spike.

A spike is a non-finite loss or gradient norm, or a loss above mean + k * sigma of the last `window` accepted
steps (once `min_history` steps are known), where the mean follows the window's trend (see `threshold`). The
trainer then rolls back to its last good checkpoint, skips the batches from there to the spike (the data that
caused it), optionally cuts the learning rate, and goes on.
"""

from __future__ import annotations

import math
from collections import deque


class SpikeGuard:
    def __init__(self, window: int, k_sigma: float, min_history: int) -> None:
        self.window, self.k_sigma, self.min_history = window, k_sigma, min_history
        self.history: deque[float] = deque(maxlen=window)

    def threshold(self) -> float | None:
        """The loss above which a step is a spike, or None while too little history is known.

        The mean is the window's linear trend extrapolated to this step and sigma the spread around that trend:
        early in training the loss falls fast, and a plain mean and std over a falling window would hide a spike
        behind the trend. Sigma has a floor of 0.5% of the expected loss so a flat, quiet window does not flag noise.
        """
        n = len(self.history)
        if n < self.min_history:
            return None
        xs = range(n)
        x_mean = (n - 1) / 2
        y_mean = sum(self.history) / n
        sxx = sum((x - x_mean) ** 2 for x in xs)
        slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, self.history, strict=True)) / sxx
        expected = y_mean + slope * (n - x_mean)
        residuals = [y - (y_mean + slope * (x - x_mean)) for x, y in zip(xs, self.history, strict=True)]
        sigma = math.sqrt(sum(r * r for r in residuals) / max(1, n - 2))
        return expected + self.k_sigma * max(sigma, 0.005 * abs(expected))

    def check(self, loss: float, grad_norm: float) -> str | None:
        """Why this step is a spike, or None (and the loss joins the history)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        if not math.isfinite(grad_norm):
            return "non-finite gradient norm"
        limit = self.threshold()
        if limit is not None and loss > limit:
            return f"loss {loss:.4f} > mean + {self.k_sigma:g} sigma = {limit:.4f}"
        self.history.append(loss)
        return None

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque(state.get("history", []), maxlen=self.window)
