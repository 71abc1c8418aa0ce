"""`domainsmith plan`: put the data inspection, the compute and memory estimates and the advice together.

`plan_command` returns a JSON-serializable dict (the CLI prints it with --json, or renders it with
`render.render_plan`). Numbers come with the formulas and inputs that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..recipe import Recipe, SFTStage, load_recipe
from ..train.finetuning import parse_layers
from .advice import Situation, advise
from .compute import DEFAULT_MFU, FLOPS_PER_PARAM_TOKEN, compute_assumptions, estimate_compute
from .errors import PlanError
from .gpus import GPUSpec, detect_local_gpu, find_gpu, load_gpu_file
from .inspect import TOKEN_HEURISTIC, inspect_recipe_data
from .memory import METHODS, MemoryInputs, estimate_memory, memory_assumptions
from .shapes import ModelShape, guess_shape, shape_for_model
from .units import parse_count

DEFAULT_BATCH = 1
DEFAULT_SEQ_LEN = 2048


@dataclass
class PlanRequest:
    """Everything `domainsmith plan` takes. Left as None, a value comes from the recipe or a stated default."""

    recipe: Path | None = None
    params: str | float | None = None  # '7B', '7e9', '1.3B'
    tokens: str | float | None = None  # training tokens: '300B', '2T'
    gpu: str | None = None
    gpus: int | None = None
    mfu: float = DEFAULT_MFU
    price_per_gpu_hour: float | None = None
    method: str | None = None  # full | freeze | lora | qlora
    batch_size: int | None = None  # sequences per GPU per micro-step
    seq_len: int | None = None  # tokens per sequence
    gpu_file: Path | None = None
    knowledge_changes_often: bool = False
    needs_citations: bool = False
    budget_gpu_hours: float | None = None
    grad_checkpointing: bool = False
    detect_hardware: bool = True  # with a recipe and no --gpu, look at this machine's GPUs


def _first_sft(recipe: Recipe | None) -> SFTStage | None:
    if recipe is None:
        return None
    return next((s for s in recipe.stages if isinstance(s, SFTStage)), None)


def _resolve_shape(params: int | None, config_shape: ModelShape | None, notes: list[str]) -> ModelShape | None:
    """The recipe model's real shape, unless --params names a different size; else a guessed shape."""
    if params is None:
        return config_shape
    if config_shape is not None:
        if abs(config_shape.params - params) <= 0.05 * params:
            return replace(config_shape, params=params)
        notes.append(
            f"--params {params:.3g} differs from the recipe model's {config_shape.params:.3g}: sizing --params "
            "with a guessed shape"
        )
    return guess_shape(params)


def _training_tokens(req: PlanRequest, data: dict | None, recipe: Recipe | None, notes: list[str]) -> int | None:
    if req.tokens is not None:
        return parse_count(req.tokens, "--tokens")
    if data is None or not data["total_tokens"]:
        return None
    sft_stages = [s for s in (recipe.stages if recipe else []) if isinstance(s, SFTStage)]
    epochs = sum(s.epochs for s in sft_stages) or 1.0
    notes.append(
        f"training tokens = recipe data ({data['total_tokens']:,} tokens, {TOKEN_HEURISTIC}) * {epochs:g} epochs "
        "(all SFT stages); chat-template tokens not counted"
    )
    return int(data["total_tokens"] * epochs)


def _compute_block(params, tokens, gpu, gpus, req: PlanRequest) -> dict:
    if params is not None and tokens is not None and gpu is not None:
        return estimate_compute(params, tokens, gpu, gpus, req.mfu, req.price_per_gpu_hour)
    missing = [n for n, v in (("--params", params), ("--tokens", tokens), ("--gpu", gpu)) if v is None]
    flops = float(FLOPS_PER_PARAM_TOKEN) * params * tokens if params is not None and tokens is not None else None
    return {
        "flops": flops,
        "gpu_hours": None,
        "wall_days": None,
        "cost": None,
        "formulas": {"flops": "6 * P * T"},
        "missing": missing,
    }


def _memory_inputs(shape, method, gpus, req, stage: SFTStage | None, gpu: GPUSpec | None, notes) -> MemoryInputs:
    if stage is not None and req.seq_len is None:
        notes.append(
            f"sequence length = the recipe's max_seq_len ({stage.max_seq_len} tokens): an upper bound, batches are "
            "padded only to their longest example"
        )
    precision = "fp32" if stage is not None and stage.precision == "fp32" else "bf16"
    if precision == "bf16" and gpu is not None and not gpu.bf16:
        precision = "fp16"  # same bytes as bf16; the chip has no bf16
    return MemoryInputs(
        shape=shape,
        method=method,
        gpus=gpus,
        batch_size=req.batch_size if req.batch_size is not None else (stage.batch_size if stage else DEFAULT_BATCH),
        seq_len=req.seq_len if req.seq_len is not None else (stage.max_seq_len if stage else DEFAULT_SEQ_LEN),
        precision=precision,
        lora_rank=stage.lora.r if stage else 16,
        lora_modules=_lora_modules(stage),
        lora_layers=_lora_layers(stage, shape),
        freeze_layers=stage.freeze.trainable_layers if stage else 2,
        null_space=stage.null_space_directions if stage and stage.general_null_space is not None else None,
        grad_checkpointing=req.grad_checkpointing,
    )


def _lora_modules(stage: SFTStage | None) -> tuple[str, ...] | None:
    if stage is None or stage.lora.target_modules == "all-linear":
        return None
    targets = stage.lora.target_modules
    return (targets,) if isinstance(targets, str) else tuple(targets)


def _lora_layers(stage: SFTStage | None, shape) -> tuple[int, ...] | None:
    if stage is None or stage.lora.layers is None:
        return None
    return tuple(parse_layers(stage.lora.layers, shape.layers))


def _validate(req: PlanRequest) -> None:
    """Refuse impossible numbers up front, whether or not the part of the plan that uses them runs."""
    for flag, value in (("--gpus", req.gpus), ("--batch-size", req.batch_size), ("--seq-len", req.seq_len)):
        if value is not None and value < 1:
            raise PlanError(f"{flag} must be at least 1, got {value}")
    if not 0 < req.mfu <= 1:
        raise PlanError(f"--mfu is a fraction of the GPU's peak in (0, 1], got {req.mfu}")
    for flag, value in (("--price-per-gpu-hour", req.price_per_gpu_hour), ("--budget-gpu-hours", req.budget_gpu_hours)):
        if value is not None and value < 0:
            raise PlanError(f"{flag} must not be negative, got {value}")


def plan_command(req: PlanRequest) -> dict:
    """Run the planner: inspect the recipe (if any), estimate compute and memory, advise. JSON-serializable."""
    _validate(req)
    notes: list[str] = []
    extra_gpus = load_gpu_file(req.gpu_file) if req.gpu_file else None
    gpu = find_gpu(req.gpu, extra_gpus) if req.gpu else None

    recipe = load_recipe(req.recipe) if req.recipe else None
    data = inspect_recipe_data(recipe) if recipe else None
    stage = _first_sft(recipe)
    hardware = detect_local_gpu() if (recipe is not None and req.detect_hardware) else None
    gpus = req.gpus
    if gpu is None and hardware and hardware.get("catalog_match"):
        gpu = find_gpu(hardware["catalog_match"], extra_gpus)
        gpus = gpus or len(hardware["gpus"])
        notes.append(f"GPU detected on this machine: {len(hardware['gpus'])} x {gpu.name}")
    gpus = gpus or 1

    params = parse_count(req.params, "--params") if req.params is not None else None
    config_shape = shape_for_model(recipe.model) if recipe else None
    if recipe is not None and config_shape is None and params is None:
        notes.append(f"model '{recipe.model}' has no local config.json yet: pass --params to size it")
    shape = _resolve_shape(params, config_shape, notes)
    params = shape.params if shape else None
    tokens = _training_tokens(req, data, recipe, notes)

    method = req.method or (stage.finetuning if stage else "full")
    if method not in METHODS:
        raise PlanError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")

    compute = _compute_block(params, tokens, gpu, gpus, req)
    memory: dict = {"missing": ["--params (or a recipe whose model has a local config.json)"]}
    fits_by_method = None
    if shape is not None:
        inputs = _memory_inputs(shape, method, gpus, req, stage, gpu, notes)
        gpu_mem = gpu.memory_gib if gpu else None
        memory = estimate_memory(inputs, gpu_mem)
        if gpu is not None:
            fits_by_method = {m: estimate_memory(replace(inputs, method=m), gpu_mem)["fits"] for m in METHODS}
            memory["fits_by_method"] = fits_by_method

    situation = _situation(req, data, shape, tokens, gpu, gpus, fits_by_method, notes)
    return {
        "mode": "recipe" if recipe else "flags",
        "recipe": str(req.recipe) if req.recipe else None,
        "model": shape.as_dict() if shape else None,
        "gpu": gpu.as_dict() if gpu else None,
        "gpus": gpus,
        "hardware": hardware,
        "data": data,
        "compute": compute,
        "memory": memory,
        "advice": advise(situation),
        "assumptions": {
            **compute_assumptions(method),
            **memory_assumptions(),
            "model_shape": shape.source if shape else None,
            "tokens": TOKEN_HEURISTIC if data else "as given by --tokens",
            "notes": notes,
        },
    }


def _situation(req, data, shape, tokens, gpu, gpus, fits_by_method, notes) -> Situation:
    """Translate the inspected data and estimates into the advisor's inputs."""
    roles = (data or {}).get("by_role", {})
    domain, general = roles.get("domain", {}), roles.get("general", {})
    scratch_tokens = (data or {}).get("total_tokens") if data else tokens
    scratch_hours = None
    if shape is not None and scratch_tokens and gpu is not None:
        scratch_hours = estimate_compute(shape.params, scratch_tokens, gpu, gpus, req.mfu)["gpu_hours"]
    return Situation(
        params=shape.params if shape else None,
        context_tokens=shape.context if shape else None,
        data_known=data is not None,
        domain_text_tokens=domain.get("text_tokens", 0),
        domain_instruction_samples=domain.get("instruction_samples", 0),
        domain_instruction_tokens=domain.get("instruction_tokens", 0),
        general_instruction_samples=general.get("instruction_samples", 0),
        general_tokens=general.get("instruction_tokens", 0) + general.get("text_tokens", 0),
        knowledge_changes_often=req.knowledge_changes_often,
        needs_citations=req.needs_citations,
        budget_gpu_hours=req.budget_gpu_hours,
        pretraining_tokens=scratch_tokens,
        from_scratch_gpu_hours=scratch_hours,
        fits_by_method=fits_by_method,
        gpu_name=gpu.name if gpu else None,
        gpu_has_bf16=gpu.bf16 if gpu else None,
        grad_checkpointing=req.grad_checkpointing,
        notes=list(notes),
    )
