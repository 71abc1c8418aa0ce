"""Parse counts written the way people write them (7B, 1.3e9, 300B tokens) and format byte sizes."""

from __future__ import annotations

import math
import re

from .errors import PlanError

GIB = 2**30

# Suffixes as used for model sizes and token counts: decimal (7B = 7e9), not binary.
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_count(value: str | float | int, what: str) -> int:
    """Parse '7e9', '7B', '1.3B', '175b', '300B', '2T', '135M', '5k' or a number into an int.

    `what` names the option in the error message (e.g. '--params').
    """
    if isinstance(value, bool):
        raise PlanError(f"{what}: expected a number like 7B or 7e9, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _COUNT.match(str(value))
        if not match:
            raise PlanError(f"{what}: cannot read {value!r}; write it like 7e9, 7B, 1.3B, 175B, 300B or 2T")
        number = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(number) or number <= 0:
        raise PlanError(f"{what}: must be a positive number, got {value!r}")
    return int(round(number))


def gib(n_bytes: float) -> float:
    """Bytes to GiB (2**30 bytes), rounded for display and JSON."""
    return round(n_bytes / GIB, 3)


def human_count(n: float) -> str:
    """7_000_000_000 -> '7B', 1_300_000_000 -> '1.3B' (decimal suffixes, as model sizes are written)."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def fmt_number(x: float) -> str:
    """Readable at any scale: 701,122 / 3.07 / 0.0123 (never a misleading 0.0)."""
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}"
    return f"{x:.3g}"
