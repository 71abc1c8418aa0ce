"""Learning-rate schedules for pretraining and continued pretraining, as multipliers of the peak learning rate.

- cosine: linear warmup, cosine decay to `min_ratio` of the peak.
- wsd (warmup-stable-decay): warmup, a long constant phase, then a short decay (`decay_ratio` of the steps) to
  `min_ratio`. A WSD run can be extended or branched from its stable phase, which suits CPT on growing data.
- constant: warmup, then flat.
Continued pretraining re-warms: the schedule starts again from zero even though the model was trained before
(Ibrahim et al. 2024: re-warming plus re-decaying matches training from scratch on the union of the data).
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, warmup: int, kind: str, min_ratio: float, decay_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if kind == "wsd":
        decay_steps = max(1, round(decay_ratio * total))
        decay_start = total - decay_steps
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / decay_steps  # the last step lands on min_ratio
        return min_ratio + (1 - min_ratio) * (1 - min(1.0, progress))
    raise ValueError(f"unknown schedule {kind!r}")
