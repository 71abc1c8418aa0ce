"""Opt-in: make CPU training's resident memory follow its live tensors (glibc malloc settings).

PyTorch's CPU allocator is plain malloc/free. glibc raises its mmap threshold to 32 MiB after the first large
free, so the activation-sized tensors of a training step then come from the heap; freed heap memory mostly
stays resident and fragments, and peak RSS grows past the live peak (benchmarks/plan_memory.py, default model,
batch 4 x 256: LoRA 1.34x, full 1.11x the planner's live-tensor estimate). Setting
DOMAINSMITH_CPU_MMAP_THRESHOLD=1048576 pins the threshold at 1 MiB: every tensor of 1 MiB or more gets its own
mapping, unmapped when freed, and peak RSS comes within 7% of the estimate.

It is off by default because the price is a page fault for every page of every fresh mapping, and that price
depends on the machine. On an AMD EPYC VM it made LoRA steps 1.8x slower in plan_memory.py and packed SFT
(2 x 512-token rows) 1.9x slower; on an earlier machine it cost +20-25%. Thresholds of 2-4 MiB are no help:
the excess RSS comes from ~1.2 MB hidden-state tensors, and only a threshold below them bounds it.
Use it when a CPU run must fit a tight memory limit. A user's own MALLOC_MMAP_THRESHOLD_ is left alone.
GPU runs are unaffected (the CUDA caching allocator owns device memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
BOUNDED_RSS_THRESHOLD_BYTES = 1 << 20  # the value that bounds RSS (module docstring)


def pin_mmap_threshold(threshold_bytes: int | None = None) -> int | None:
    """Set glibc's mmap threshold for this process; return the value set, or None when nothing was changed.

    Without an argument the value comes from DOMAINSMITH_CPU_MMAP_THRESHOLD (unset or 0: leave glibc alone).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None  # glibc already applied the user's own setting at start-up
    if threshold_bytes is None:
        threshold_bytes = int(os.environ.get("DOMAINSMITH_CPU_MMAP_THRESHOLD", "0") or 0)
    if threshold_bytes <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)) != 1:  # mallopt returns 1 on success
        return None
    return threshold_bytes


def configure_for_training(on_cuda: bool) -> int | None:
    """Called once before a training stage: apply DOMAINSMITH_CPU_MMAP_THRESHOLD when training runs on the CPU."""
    return None if on_cuda else pin_mmap_threshold()
