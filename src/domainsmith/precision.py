"""Decide whether bf16 is worth using on this hardware (practitioners: bf16 converges more reliably than fp16)."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "bf16", "fp32"]

# bf16 autocast must beat fp32 by this much to be chosen on a CPU: it also costs casts and loses precision.
CPU_BF16_MIN_SPEEDUP = 1.25


@cache
def cpu_has_bf16_instructions() -> bool:
    """True when the CPU advertises native bf16 instructions (AVX512-BF16 or AMX)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text(errors="ignore")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def matmul_gflops(dtype_name: str, size: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of one square matmul in the given dtype, on this process's CPU threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # first call pays for kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


@cache
def cpu_bf16_speedup() -> float:
    """Measured bf16 / fp32 matmul throughput on this CPU (about 0.2 s, once per process)."""
    return matmul_gflops("bfloat16") / matmul_gflops("float32")


def cpu_has_fast_bf16() -> bool:
    """True when bf16 matmuls run clearly faster than fp32 ones on this CPU.

    The flags alone can't tell: with AMX, bf16 matmuls ran 6x faster than fp32 on 2 cores, while on an
    AVX512-BF16 part without AMX they ran at half the fp32 speed (163 vs 317 GFLOP/s), which made bf16
    autocast training 1.7x slower. So where the instructions exist, a short matmul timing decides.
    """
    return cpu_has_bf16_instructions() and cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP


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


def describe_precision(precision: Precision) -> str:
    """What a precision setting resolves to here, with the measurement behind `auto` on a bf16-capable CPU."""
    import torch

    chosen = "bf16" if use_bf16(precision) else "fp32"
    if precision == "auto" and not torch.cuda.is_available() and cpu_has_bf16_instructions():
        return f"{chosen}: bf16 matmuls run {cpu_bf16_speedup():.2f}x as fast as fp32 on this CPU"
    return chosen
