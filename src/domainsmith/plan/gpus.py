"""Built-in catalog of training accelerators: dense 16-bit peak TFLOP/s and memory, each with its source.

Peaks are *dense* tensor-core numbers (datasheets often print the 2:4-sparsity number, twice as large, with an
asterisk): MFU is always measured against the dense peak. Users add or override entries with a YAML/JSON file.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import PlanError


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_tflops: float  # dense 16-bit tensor-core peak: bf16 where the chip has it, else fp16 (see `bf16`)
    memory_gib: float  # marketed memory size; usable memory is 1-6% lower (ECC, driver reservations)
    bf16: bool  # False: the peak above is fp16 and training needs fp16 with loss scaling
    source: str

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


CATALOG: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        # Volta has no bf16: 125 TFLOP/s is its fp16 tensor-core peak (SXM2).
        GPUSpec(
            "V100",
            125.0,
            32,
            False,
            "NVIDIA V100 datasheet / 'Programming Tensor Cores in CUDA 9' (developer.nvidia.com): 125 Tensor "
            "TFLOP/s fp16 (SXM2), no bf16",
        ),
        GPUSpec(
            "A100-40G",
            312.0,
            40,
            True,
            "NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): BF16 312 dense / 624 sparse",
        ),
        GPUSpec("A100-80G", 312.0, 80, True, "NVIDIA A100 datasheet: BF16 312 dense / 624 sparse (80GB SXM4)"),
        # A800 is the China-market A100 with NVLink cut to 400 GB/s; tensor throughput is unchanged.
        GPUSpec("A800", 312.0, 80, True, "NVIDIA A800 80GB specs: BF16 311.87 dense / 623.74 sparse (hmc-tech)"),
        GPUSpec(
            "H100",
            989.4,
            80,
            True,
            "NVIDIA H100 SXM5 datasheet: BF16 1,979 TFLOP/s with sparsity, 989.4 dense (glennklockwood.com H100)",
        ),
        GPUSpec("H100-PCIe", 756.0, 80, True, "NVIDIA H100 PCIe datasheet: BF16 1,513 TFLOP/s with sparsity"),
        # H800 is the China-market H100 SXM: FP64 and NVLink (400 GB/s) are cut, bf16 tensor throughput is not.
        GPUSpec("H800", 989.4, 80, True, "NVIDIA H800 SXM datasheet: BF16 1,979 TFLOP/s with sparsity (as H100)"),
        GPUSpec(
            "H200",
            989.4,
            141,
            True,
            "NVIDIA H200 SXM datasheet: BF16 1,979 TFLOP/s with sparsity, 141 GB HBM3e (same die as H100)",
        ),
        GPUSpec(
            "L40S",
            362.05,
            48,
            True,
            "NVIDIA L40S datasheet: BFLOAT16 Tensor Core 362.05 dense / 733 sparse TFLOP/s, 48 GB GDDR6",
        ),
        # Consumer Ada runs bf16 with fp32 accumulation at half the fp16-accumulate rate; training needs fp32 acc.
        GPUSpec(
            "RTX4090",
            165.2,
            24,
            True,
            "NVIDIA Ada Lovelace architecture whitepaper: RTX 4090 peak BF16 tensor TFLOP/s with FP32 accumulate "
            "165.2 dense / 330.4 sparse",
        ),
        # 910B variants (B1-B4) differ; this is the figure a Chinese cloud vendor documents for its 910B fleet.
        GPUSpec(
            "Ascend-910B",
            280.0,
            64,
            True,
            "Gitee AI compute docs 'Ascend 910B': FP16 280 TFLOPS, BF16 supported, 64 GB HBM2e (variants B1-B4 "
            "range ~280-400; put yours in --gpu-file)",
        ),
    )
}

# Names people type for the same chip. Plain "A100" is deliberately absent: 40 GB and 80 GB differ in what fits.
_ALIASES = {
    "v100sxm2": "V100",
    "v10032g": "V100",
    "v10032gb": "V100",
    "a10040gb": "A100-40G",
    "a10080gb": "A100-80G",
    "a80080g": "A800",
    "a80080gb": "A800",
    "h100sxm": "H100",
    "h100sxm5": "H100",
    "h10080gb": "H100",
    "h100pcie": "H100-PCIe",
    "h800sxm": "H800",
    "h200sxm": "H200",
    "4090": "RTX4090",
    "geforcertx4090": "RTX4090",
    "910b": "Ascend-910B",
    "ascend910b": "Ascend-910B",
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class _GPUEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    peak_tflops: float = Field(gt=0, description="dense bf16 (or fp16) tensor peak, TFLOP/s")
    memory_gib: float = Field(gt=0)
    bf16: bool = True
    source: str = Field("user GPU file", description="where the numbers come from")


def load_gpu_file(path: Path | str) -> dict[str, GPUSpec]:
    """Read user GPUs from YAML or JSON: a mapping name -> {peak_tflops, memory_gib, bf16?, source?}."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: GPU file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: cannot parse GPU file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise PlanError(f"{path}: expected a mapping of GPU name -> {{peak_tflops, memory_gib, bf16, source}}")
    specs = {}
    for name, entry in data.items():
        try:
            parsed = _GPUEntry.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise PlanError(f"{path}: GPU '{name}': {problems}") from None
        source = parsed.source if parsed.source != "user GPU file" else f"user GPU file {path}"
        specs[str(name)] = GPUSpec(str(name), parsed.peak_tflops, parsed.memory_gib, parsed.bf16, source)
    return specs


def find_gpu(name: str, extra: dict[str, GPUSpec] | None = None) -> GPUSpec:
    """Look a GPU up by name (case, spaces and dashes ignored); user entries win over built-in ones."""
    table = {**CATALOG, **(extra or {})}
    by_key = {_key(n): spec for n, spec in table.items()}
    wanted = _key(name)
    if wanted in by_key:
        return by_key[wanted]
    if wanted in _ALIASES and _key(_ALIASES[wanted]) in by_key:
        return by_key[_key(_ALIASES[wanted])]
    if wanted == "a100":
        raise PlanError("GPU 'A100' is ambiguous: use A100-40G or A100-80G (what fits differs)")
    close = difflib.get_close_matches(wanted, list(by_key) + list(_ALIASES), n=1, cutoff=0.4)
    hint = ""
    if close:
        spec = by_key.get(close[0]) or by_key[_key(_ALIASES[close[0]])]
        hint = f" Closest: '{spec.name}'."
    raise PlanError(
        f"unknown GPU '{name}'.{hint} Known: {', '.join(sorted(table))}. Add your own with --gpu-file "
        "(YAML/JSON: NAME: {peak_tflops: ..., memory_gib: ..., bf16: true, source: ...})."
    )


def detect_local_gpu() -> dict:
    """What this machine has: CUDA devices (matched to the catalog where possible) or the CPU."""
    import os

    info: dict = {"cpu_cores": os.cpu_count()}
    try:
        info["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["ram_gib"] = None
    try:
        import torch
    except ImportError:
        return {**info, "gpus": [], "catalog_match": None}
    if not torch.cuda.is_available():
        return {**info, "gpus": [], "catalog_match": None}
    devices = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    gpus = [{"name": d.name, "memory_gib": round(d.total_memory / 2**30, 1)} for d in devices]
    match = None
    for candidate in _catalog_guesses(devices[0].name, devices[0].total_memory / 2**30):
        try:
            match = find_gpu(candidate).name
            break
        except PlanError:
            continue
    return {**info, "gpus": gpus, "catalog_match": match}


def _catalog_guesses(device_name: str, memory_gib: float) -> list[str]:
    """'NVIDIA A100-SXM4-80GB' -> ['A100-80G', ...]: the catalog names the device name contains."""
    key = _key(device_name)
    guesses = []
    if "a100" in key:
        guesses.append("A100-80G" if memory_gib > 60 else "A100-40G")
    for name in CATALOG:
        base = _key(name.split("-")[0])
        if base and base in key:
            guesses.append("H100-PCIe" if name == "H100" and "pcie" in key else name)
    return guesses
