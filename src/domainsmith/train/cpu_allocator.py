"""Make CPU training's resident memory follow its live tensors (glibc malloc settings).

PyTorch's CPU allocator is plain malloc/free. glibc raises its mmap threshold to 32 MiB after the first large
free, so the activation-sized tensors of a training step then come from the heap; freed heap memory mostly
stays resident and fragments, and peak RSS grows well past the live peak (measured on the default model:
+35% for a LoRA step, benchmarks/plan_memory.py). Pinning the threshold at 1 MiB gives every tensor of 1 MiB
or more its own mapping, unmapped when freed, while small allocations stay on the heap. Measured: peak RSS
within 7% of the live-tensor estimate, which is what lets `domainsmith plan`'s memory estimate hold for CPU runs.

The price is page faults on fresh mappings: +20-25% step time in plan_memory.py's loop (full-vocabulary logits,
4 x 256 tokens); at most +3% in the demo's SFT, which computes logits only at answer tokens (666 s with this and
the KL term, 649 s before either). A 64 KiB threshold costs far more.

A user who set MALLOC_MMAP_THRESHOLD_ keeps their setting; DOMAINSMITH_CPU_MMAP_THRESHOLD=0 turns this off.
GPU runs are unaffected (the CUDA caching allocator owns device memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
DEFAULT_THRESHOLD_BYTES = 1 << 20


def pin_mmap_threshold(threshold_bytes: int | None = None) -> int | None:
    """Set glibc's mmap threshold for this process; return the value set, or None when nothing was changed."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None  # glibc already applied the user's own setting at start-up
    if threshold_bytes is None:
        threshold_bytes = int(os.environ.get("DOMAINSMITH_CPU_MMAP_THRESHOLD", DEFAULT_THRESHOLD_BYTES))
    if threshold_bytes <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)) != 1:  # mallopt returns 1 on success
        return None
    return threshold_bytes


def configure_for_training(on_cuda: bool) -> int | None:
    """Called once before a training stage: pin the threshold when training runs on the CPU."""
    return None if on_cuda else pin_mmap_threshold()
