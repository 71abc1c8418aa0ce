"""Training compute, time and cost: FLOPs = 6 * P * T, GPU-hours from the GPU's dense peak and an assumed MFU.

Every number that goes in comes back out next to the formula, so a reader can redo the arithmetic by hand.
"""

from __future__ import annotations

from .errors import PlanError
from .gpus import GPUSpec
from .units import fmt_number

FLOPS_PER_PARAM_TOKEN = 6  # forward 2 (multiply + add) + backward 4 (gradients w.r.t. inputs and weights)

DEFAULT_MFU = 0.4
MFU_SOURCE = (
    "assumption; PaLM reports 46.2% MFU on TPU v4 (Chowdhery et al. 2022), well-tuned GPU runs report ~35-55%, "
    "small or poorly tuned runs far less: measure yours"
)
SIX_PT_SOURCE = "Kaplan et al. 2020 (C ~ 6NT); ignores attention's O(seq^2) FLOPs and any activation recomputation"


def estimate_compute(
    params: int,
    tokens: int,
    gpu: GPUSpec,
    gpus: int = 1,
    mfu: float = DEFAULT_MFU,
    price_per_gpu_hour: float | None = None,
) -> dict:
    """FLOPs, GPU-hours, wall-clock days and cost of training `params` parameters on `tokens` tokens.

    gpu_hours = flops / (peak_flops_per_second * mfu) / 3600, exactly; wall_days assumes the GPUs scale perfectly
    and the run never stops (no restarts, evaluation or checkpoint time).
    """
    if gpus < 1:
        raise PlanError(f"--gpus must be at least 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise PlanError(f"--mfu is a fraction of the peak in (0, 1], got {mfu}")
    if price_per_gpu_hour is not None and price_per_gpu_hour < 0:
        raise PlanError(f"--price-per-gpu-hour must not be negative, got {price_per_gpu_hour}")
    flops = float(FLOPS_PER_PARAM_TOKEN) * params * tokens
    peak_flops_per_s = gpu.peak_tflops * 1e12
    gpu_hours = flops / (peak_flops_per_s * mfu) / 3600
    wall_days = gpu_hours / gpus / 24
    cost = gpu_hours * price_per_gpu_hour if price_per_gpu_hour is not None else None
    return {
        "flops": flops,
        "gpu_hours": gpu_hours,
        "wall_days": wall_days,
        "cost": cost,
        "gpu_years": gpu_hours / (24 * 365),
        "formulas": {
            "flops": "6 * P * T",
            "gpu_hours": "flops / (peak_tflops * 1e12 * mfu) / 3600",
            "wall_days": "gpu_hours / gpus / 24",
            "cost": "gpu_hours * price_per_gpu_hour",
        },
        "inputs": {
            "P": params,
            "T": tokens,
            "gpu": gpu.name,
            "peak_tflops": gpu.peak_tflops,
            "peak_precision": "bf16" if gpu.bf16 else "fp16 (no bf16 on this GPU)",
            "peak_source": gpu.source,
            "mfu": mfu,
            "gpus": gpus,
            "price_per_gpu_hour": price_per_gpu_hour,
        },
        "arithmetic": (
            f"6 * {params:.4g} * {tokens:.4g} = {flops:.4g} FLOPs; "
            f"{flops:.4g} / ({gpu.peak_tflops:g}e12 * {mfu:g}) / 3600 = {fmt_number(gpu_hours)} GPU-hours; "
            f"/ {gpus} GPUs / 24 = {fmt_number(wall_days)} days"
            + (f"; * {price_per_gpu_hour:g} per GPU-hour = {fmt_number(cost)}" if cost is not None else "")
        ),
    }


def compute_assumptions(method: str | None = None) -> dict:
    """The assumptions behind `estimate_compute`, with sources, for the plan's `assumptions` block."""
    notes = {
        "training_flops": f"FLOPs = 6 * P * T ({SIX_PT_SOURCE})",
        "peak": "dense tensor-core peak of the GPU (sparsity numbers halved), bf16 where the GPU has it",
        "mfu": f"model FLOPs utilisation: {MFU_SOURCE}",
        "wall_clock": "perfect scaling over GPUs, no restarts, evaluation or checkpoint time",
    }
    if method in ("lora", "qlora", "freeze"):
        notes["frozen_weights"] = (
            f"method={method}: frozen weights skip their weight-gradient matmuls (about 2PT of the 6PT), so 6PT is "
            "an upper bound; the forward and input-gradient FLOPs (about 4PT) remain"
        )
    return notes
