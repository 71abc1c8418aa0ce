"""Decide whether bf16 is worth using on this hardware (practitioners: bf16 converges more reliably than fp16)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "bf16", "fp32"]


@cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX); elsewhere bf16 autocast is slower."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text(errors="ignore")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def use_bf16(precision: Precision) -> bool:
    """Resolve a recipe's precision setting to a yes/no for bf16 autocast."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return bf16_supported()
