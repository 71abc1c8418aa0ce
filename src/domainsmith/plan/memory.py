"""Per-GPU training memory for DDP, ZeRO-1/2/3, ZeRO-3 + CPU offload and FSDP: weights, gradients, optimizer
states and activations, for full, freeze, LoRA and QLoRA fine-tuning.

Model states follow DeepSpeed's own accounting for ZeRO (deepspeed/runtime/zero/stage_1_and_2.py and stage3.py,
`estimate_zero{2,3}_model_states_mem_needs`; https://deepspeed.readthedocs.io/en/latest/memory.html): per
trainable parameter 2 bytes of 16-bit weights, 2 of 16-bit gradients, 4 of fp32 gradients, 4 of fp32 master
weights and 8 of Adam moments. PyTorch DDP with autocast keeps fp32 weights, fp32 gradients and Adam moments.

Activations are counted tensor by tensor from what autograd saves in a Llama-style block (the method of
Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", applied to RMSNorm,
RoPE, SDPA/flash attention and a gated MLP), in bytes per token per layer:
  fp32 weights, fp32 compute        32h + 8kv + 16f
  fp32 weights under bf16 autocast  30h + 4kv +  8f   (fp32 residual stream and norms, bf16 casts per matmul)
  bf16 weights (DeepSpeed, FSDP)    20h + 4kv +  8f   (norms upcast to fp32 internally)
  LoRA on bf16 weights + autocast   24h + 4kv +  8f   (frozen matmuls save nothing; PEFT casts each input)
  LoRA on fp32 weights              24h + 8kv + 16f
plus 8 bytes (two fp32 rsqrt) and 4 bytes per head (attention log-sum-exp). h = hidden size, kv = key/value
width, f = MLP width. The output layer adds three fp32 copies of the logits per token (logits, log-softmax,
their gradient: 12 * vocab bytes) at the start of the backward pass.

`general_null_space` (LoRA) adds, before training, an fp32 second moment `d_in x d_in` of every distinct adapter
input, all held while the frozen model reads the general data (twice as many with `domain_ratio`), plus the float64
workspace of one decomposition; and through training a basis of at most `d_in x d_in / 2` fp32 values per distinct
input (train/null_space.py). It runs in one process or under DDP only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import PlanError
from .shapes import ModelShape
from .units import GIB, gib

Method = Literal["full", "freeze", "lora", "qlora"]
Precision = Literal["bf16", "fp16", "fp32"]
NullSpace = Literal["lowest_general", "domain_ratio"]
METHODS: tuple[str, ...] = ("full", "freeze", "lora", "qlora")
SETUPS: dict[str, str] = {
    "ddp": "DDP (PyTorch, autocast; 1 GPU = plain training)",
    "zero1": "DeepSpeed ZeRO-1",
    "zero2": "DeepSpeed ZeRO-2",
    "zero3": "DeepSpeed ZeRO-3",
    "zero3_offload_optimizer": "ZeRO-3 + CPU offload (optimizer)",
    "zero3_offload": "ZeRO-3 + CPU offload (optimizer + params)",
    "fsdp": "PyTorch FSDP (FULL_SHARD, bf16 params)",
}
DEEPSPEED_SOURCE = (
    "DeepSpeed estimate_zero2/3_model_states_mem_needs (deepspeed/runtime/zero/stage_1_and_2.py, stage3.py; "
    "deepspeed.readthedocs.io/en/latest/memory.html)"
)
# 4-bit NF4 weights with double-quantized block constants: 4.127 bits per parameter (Dettmers et al. 2023, QLoRA).
QLORA_BYTES_PER_PARAM = 4.127 / 8
# DeepSpeed's CPU-side estimates multiply by this buffer factor (its `additional_buffer_factor` default).
DS_CPU_BUFFER_FACTOR = 1.5
# What autograd saves per token per decoder layer: (bytes per hidden unit, per kv unit, per MLP unit).
ACTIVATION_PROFILES: dict[str, tuple[int, int, int]] = {
    "fp32": (32, 8, 16),
    "autocast": (30, 4, 8),
    "bf16": (20, 4, 8),
    "lora_bf16": (24, 4, 8),
    "lora_fp32": (24, 8, 16),
}
LORA_MODULES_PER_LAYER = 7  # q, k, v, o, gate, up, down


@dataclass(frozen=True)
class MemoryInputs:
    """One training setup to size. Batch size and sequence length are per GPU and per micro-step."""

    shape: ModelShape
    method: Method = "full"
    gpus: int = 1
    gpus_per_node: int = 8
    batch_size: int = 1  # sequences per GPU per micro-step
    seq_len: int = 2048  # tokens per sequence
    precision: Precision = "bf16"  # bf16 / fp16: mixed precision (same bytes); fp32: no 16-bit copies
    lora_rank: int = 16
    lora_modules: tuple[str, ...] | None = None  # Llama-style module names; None = all linear modules
    lora_layers: tuple[int, ...] | None = None  # blocks with adapters; None = all
    freeze_layers: int = 2  # method=freeze trains the last N blocks (domainsmith's default)
    null_space: NullSpace | None = None  # a LoRA stage's general_null_space directions, if it has one
    grad_checkpointing: bool = False
    overhead_bytes: float = GIB  # not in tensors: CUDA context, library workspaces (or a measured CPU baseline)
    overhead_source: str = "assumption: ~1 GiB CUDA context + cuBLAS/NCCL workspaces; measure with torch.cuda"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise PlanError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise PlanError(f"precision must be bf16, fp16 or fp32, got '{self.precision}'")
        for name in ("gpus", "gpus_per_node", "batch_size", "seq_len", "lora_rank"):
            if getattr(self, name) < 1:
                raise PlanError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        known = self.shape.linear_dims()
        unknown = [m for m in self.lora_modules or () if m not in known]
        if unknown:
            raise PlanError(f"LoRA target modules {unknown} are not Llama-style names the planner knows: {list(known)}")


def trainable_params(inputs: MemoryInputs) -> int:
    """Parameters that get gradients and optimizer states under the method."""
    shape = inputs.shape
    if inputs.method in ("lora", "qlora"):
        return shape.lora_params(inputs.lora_rank, inputs.lora_modules, _lora_layer_count(inputs))
    if inputs.method == "freeze":
        return min(inputs.freeze_layers, shape.layers) * shape.layer_params
    return shape.params


# Adapted modules that read one tensor share one moment and one basis (train/null_space.py).
_SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
# float64 d x d matrices alive at once while one input's basis is decomposed (moment copies, eigenvectors, products).
_DECOMPOSITION_WORKSPACE = {"lowest_general": 3, "domain_ratio": 8}


def null_space_widths(inputs: MemoryInputs) -> list[int]:
    """d_in of each distinct adapter input in one block."""
    dims = inputs.shape.linear_dims()
    adapted = set(inputs.lora_modules or dims)
    return [dims[group[0]][0] for group in _SHARED_INPUTS if adapted & set(group)]


def has_null_space(inputs: MemoryInputs) -> bool:
    """A LoRA stage with general_null_space (full and freeze ignore it: the recipe refuses that combination)."""
    return inputs.null_space is not None and inputs.method in ("lora", "qlora")


def null_space_bytes(inputs: MemoryInputs) -> dict[str, float]:
    """general_null_space's bytes on the adapter's GPU: `setup` while the bases are computed (moments and the
    decomposition workspace), `bases` kept through training. Zero without a null space."""
    if not has_null_space(inputs):
        return {"setup": 0.0, "bases": 0.0}
    widths = null_space_widths(inputs)
    layers = _lora_layer_count(inputs)
    moment_sets = 2 if inputs.null_space == "domain_ratio" else 1
    moments = 4 * sum(d * d for d in widths) * layers * moment_sets
    workspace = 8 * _DECOMPOSITION_WORKSPACE[inputs.null_space] * max(widths) ** 2
    return {"setup": moments + workspace, "bases": 4 * sum(d * (d // 2) for d in widths) * layers}


def _lora_layer_count(inputs: MemoryInputs) -> int:
    return inputs.shape.layers if inputs.lora_layers is None else len(inputs.lora_layers)


def _lora_backward_layers(inputs: MemoryInputs) -> int:
    """Blocks from the lowest adapted one up: those below it see no tensor that needs a gradient."""
    return inputs.shape.layers - (min(inputs.lora_layers) if inputs.lora_layers else 0)


def _lora_module_count(inputs: MemoryInputs) -> int:
    return len(inputs.lora_modules) if inputs.lora_modules is not None else LORA_MODULES_PER_LAYER


def _frozen_bytes_per_param(inputs: MemoryInputs, setup: str) -> float:
    if inputs.method == "qlora":
        return QLORA_BYTES_PER_PARAM
    if inputs.precision == "fp32":
        return 4.0
    # domainsmith (and PyTorch AMP) keep a freeze-tuned model in fp32; LoRA bases and DeepSpeed models in bf16.
    return 4.0 if (setup == "ddp" and inputs.method == "freeze") else 2.0


def _activation_profile(inputs: MemoryInputs, setup: str) -> str:
    mixed = inputs.precision != "fp32"
    if inputs.method in ("lora", "qlora"):
        return "lora_bf16" if mixed else "lora_fp32"
    if not mixed:
        return "fp32"
    return "autocast" if setup == "ddp" else "bf16"


def activation_bytes(inputs: MemoryInputs, setup: str) -> dict:
    """Saved activations of one micro-batch on one GPU, with the numbers that went in."""
    shape = inputs.shape
    profile = _activation_profile(inputs, setup)
    a_h, a_kv, a_f = ACTIVATION_PROFILES[profile]
    small = 2 * 4 + 4 * shape.heads
    per_layer = a_h * shape.hidden + a_kv * shape.kv_dim + a_f * shape.ffn + small
    if inputs.method in ("lora", "qlora"):
        per_layer += _lora_module_count(inputs) * inputs.lora_rank * (4 if profile == "lora_fp32" else 2)
    # Blocks below the first trainable one see no tensor that needs a gradient, so autograd saves nothing there.
    if inputs.method == "freeze":
        active_layers = min(inputs.freeze_layers, shape.layers)
    elif inputs.method in ("lora", "qlora"):
        active_layers = _lora_backward_layers(inputs)
    else:
        active_layers = shape.layers
    tokens = inputs.batch_size * inputs.seq_len
    if inputs.grad_checkpointing:
        # Only each block's input is kept (fp32 residual stream under autocast); one block is recomputed at a time.
        input_bytes = 4 if profile in ("autocast", "fp32", "lora_fp32") else 2
        layers_bytes = (active_layers * input_bytes * shape.hidden + per_layer) * tokens
        layer_formula = "tokens * (layers * input_bytes * h + per_layer)  [gradient checkpointing]"
    else:
        layers_bytes = active_layers * per_layer * tokens
        layer_formula = "tokens * layers * per_layer"
    head_bytes = (12 * shape.hidden + 12 * shape.vocab) * tokens  # final norm (fp32, 3 tensors) + 3 fp32 logits
    return {
        "bytes": layers_bytes + head_bytes,
        "profile": profile,
        "per_layer_per_token_bytes": per_layer,
        "per_layer_formula": f"{a_h}*h + {a_kv}*kv + {a_f}*f + 8 + 4*heads"
        + (f" + {_lora_module_count(inputs)}*r*bytes" if inputs.method in ("lora", "qlora") else ""),
        "active_layers": active_layers,
        "tokens_per_micro_batch": tokens,
        "layers_bytes": layers_bytes,
        "logits_bytes": head_bytes,
        "formula": f"{layer_formula} + tokens * (12*h + 12*vocab)",
    }


def _setup_states(inputs: MemoryInputs, setup: str, pt: int, pf: int) -> dict:
    """Weights, gradients and optimizer bytes on one GPU (and on the CPU for offload), per setup."""
    n = inputs.gpus
    mixed = inputs.precision != "fp32"
    fz = _frozen_bytes_per_param(inputs, setup)
    largest = inputs.shape.largest_module_params
    # DeepSpeed bytes per trainable parameter (its own comment: 2 params16 + 2 grads16 + 4 grads32 + 4 params32 + 8).
    w16, g16, g32, master = (2, 2, 4, 4) if mixed else (4, 4, 0, 0)
    adam = 8
    nodes = -(-n // inputs.gpus_per_node)
    cpu = 0.0
    transient = 0.0
    if setup == "ddp":
        weights = 4 * pt + fz * pf
        grads = 4 * pt + (4 * pt if n > 1 else 0)  # DDP's gradient buckets are a second copy across GPUs
        optim = adam * pt
        if mixed:
            transient = 2 * pt  # autocast caches a bf16 copy of each trainable weight until backward uses it
        formula = "weights 4*Pt + frozen*Pf; grads 4*Pt (+4*Pt DDP buckets if N>1); optimizer 8*Pt"
    elif setup == "zero1":
        weights = w16 * pt + fz * pf
        grads = g16 * pt + g32 * pt / n
        optim = (master + adam) * pt / n
        formula = "weights 2*Pt + frozen*Pf; grads 2*Pt + 4*Pt/N; optimizer 12*Pt/N"
    elif setup == "zero2":
        weights = w16 * pt + fz * pf
        grads = (g16 + g32) * pt / n
        optim = (master + adam) * pt / n
        formula = "weights 2*Pt + frozen*Pf; grads 6*Pt/N; optimizer 12*Pt/N  (= 2P + 18P/N for full)"
    elif setup == "zero3":
        # 16-bit gradients only live in the gathered layer's buffer before reduce-scatter: DeepSpeed's 4L + 18P/N.
        weights = (w16 * pt + fz * pf) / n + 2 * largest
        grads = g32 * pt / n + 2 * largest
        optim = (master + adam) * pt / n
        formula = "weights (2*Pt + frozen*Pf)/N + 2L; grads 4*Pt/N + 2L; optimizer 12*Pt/N  (= 4L + 18P/N)"
    elif setup == "zero3_offload_optimizer":
        weights = (w16 * pt + fz * pf) / n + 2 * largest
        grads = 2 * largest
        optim = 0.0
        cpu = (g32 + master + adam) * pt / nodes * DS_CPU_BUFFER_FACTOR
        formula = "weights (2*Pt + frozen*Pf)/N + 2L; grads 2L; optimizer on CPU  (= 4L + 2P/N)"
    elif setup == "zero3_offload":
        weights = 2 * largest
        grads = 2 * largest
        optim = 0.0
        cpu = ((w16 + g32 + master + adam) * pt + fz * pf) / nodes * DS_CPU_BUFFER_FACTOR
        formula = "weights 2L; grads 2L; parameters and optimizer on CPU  (= 4L)"
    elif setup == "fsdp":
        shape = inputs.shape
        gathered = 2 * (2 * shape.layer_params + shape.embedding_params)  # this block + prefetched next + root
        weights = (4 * pt + fz * pf) / n + gathered
        grads = 4 * pt / n + 2 * max(shape.layer_params, shape.embedding_params)
        optim = adam * pt / n
        formula = "weights (4*Pt + frozen*Pf)/N + 2*(2*layer + embeddings); grads 4*Pt/N + 2*unit; optim 8*Pt/N"
    else:
        raise PlanError(f"unknown setup '{setup}'; known: {', '.join(SETUPS)}")
    return {
        "weights": weights,
        "grads": grads,
        "optim": optim,
        "transient": transient,
        "cpu": cpu,
        "formula": formula,
    }


def estimate_setup(inputs: MemoryInputs, setup: str, gpu_memory_gib: float | None = None) -> dict:
    """Peak memory of one GPU (or of the CPU process) for `setup`, split into its parts, and whether it fits."""
    inputs.validate()
    pt = trainable_params(inputs)
    pf = inputs.shape.params - pt if inputs.method != "full" else 0
    states = _setup_states(inputs, setup, pt, pf)
    acts = activation_bytes(inputs, setup)
    # Single-process PyTorch frees gradients between steps (zero_grad(set_to_none=True)), so the peak is the larger
    # of "activations at the start of backward" and "all gradients at the optimizer step". Sharded and DDP setups
    # keep gradient buffers alive: their parts add up.
    grads_persist = not (setup == "ddp" and inputs.gpus == 1)
    early_grads = 0.0
    if not grads_persist and inputs.method == "full":
        early_grads = 4 * inputs.shape.vocab * inputs.shape.hidden  # the output layer's gradient comes first
    null_space = null_space_bytes(inputs)
    persistent = states["weights"] + states["optim"] + (states["grads"] if grads_persist else 0) + null_space["bases"]
    act_phase = acts["bytes"] + states["transient"] + early_grads
    grad_phase = 0.0 if grads_persist else states["grads"]
    # Before the first step (no gradients or optimizer states yet) the null-space moments share the GPU with the
    # weights alone.
    null_space_phase = states["weights"] + null_space["setup"] + inputs.overhead_bytes if null_space["setup"] else 0.0
    peak = max(persistent + max(act_phase, grad_phase) + inputs.overhead_bytes, null_space_phase)
    refused = None
    if has_null_space(inputs) and setup != "ddp":
        refused = "general_null_space runs in one process or under DDP"
    fits = None if gpu_memory_gib is None else bool(peak <= gpu_memory_gib * GIB) and refused is None
    return {
        "setup": setup,
        "label": SETUPS[setup],
        "weights_gib": gib(states["weights"]),
        "gradients_gib": gib(states["grads"]),
        "optimizer_gib": gib(states["optim"]),
        "model_states_gib": gib(states["weights"] + states["grads"] + states["optim"]),
        "activations_gib": gib(acts["bytes"]),
        "transient_gib": gib(states["transient"] + early_grads),
        "overhead_gib": gib(inputs.overhead_bytes),
        "peak_gib": gib(peak),
        "fits": fits,
        "cpu_gib_per_node": gib(states["cpu"]) if states["cpu"] else None,
        "null_space_gib": gib(null_space["bases"]),
        "null_space_setup_gib": gib(null_space_phase),
        "refused": refused,
        "peak_phase": "null_space_setup"
        if null_space_phase == peak and null_space_phase
        else ("gradients" if grad_phase > act_phase else "activations"),
        "gradients_freed_between_steps": not grads_persist,
        "states_formula": states["formula"],
        "model_states_bytes": states["weights"] + states["grads"] + states["optim"],
        "peak_bytes": peak,
    }


def estimate_memory(inputs: MemoryInputs, gpu_memory_gib: float | None = None, setups=None) -> dict:
    """Every setup's per-GPU memory for one method, the numbers that went in, and which setups fit."""
    inputs.validate()
    names = list(setups or SETUPS)
    rows = [estimate_setup(inputs, s, gpu_memory_gib) for s in names]
    pt = trainable_params(inputs)
    acts = activation_bytes(inputs, "ddp")
    shape = inputs.shape
    return {
        "method": inputs.method,
        "precision": inputs.precision,
        "gpus": inputs.gpus,
        "gpu_memory_gib": gpu_memory_gib,
        "per_gpu": rows,
        "fits": [r["setup"] for r in rows if r["fits"]],
        "numbers": {
            "P": shape.params,
            "Pt_trainable": pt,
            "Pf_frozen": shape.params - pt if inputs.method != "full" else 0,
            "L_largest_module": shape.largest_module_params,
            "N_gpus": inputs.gpus,
            "batch_size": inputs.batch_size,
            "seq_len": inputs.seq_len,
            "tokens_per_micro_batch": acts["tokens_per_micro_batch"],
            "h": shape.hidden,
            "kv": shape.kv_dim,
            "f": shape.ffn,
            "layers": shape.layers,
            "vocab": shape.vocab,
            "lora_rank": inputs.lora_rank if inputs.method in ("lora", "qlora") else None,
            "lora_modules": (list(inputs.lora_modules) if inputs.lora_modules else "all-linear")
            if inputs.method in ("lora", "qlora")
            else None,
            "lora_layers": _lora_layer_count(inputs) if inputs.method in ("lora", "qlora") else None,
            "grad_checkpointing": inputs.grad_checkpointing,
            "null_space": inputs.null_space if has_null_space(inputs) else None,
        },
        "formulas": {
            "bytes_per_trainable_param": "DeepSpeed mixed precision: 2 weights16 + 2 grads16 + 4 grads32 + 4 master32 "
            "+ 8 Adam = 20; PyTorch DDP + autocast: 4 weights32 + 4 grads32 + 8 Adam (+2 bf16 autocast copy)",
            "frozen_bytes_per_param": "bf16 2, fp32 4, QLoRA NF4 4.127 bits",
            "null_space": "before training: 4*sum(d_in^2) per block (x2 with domain_ratio) + 8*(3 or 8)*max(d_in)^2; "
            "through training: 4*sum(d_in*d_in/2) per block; d_in over distinct adapter inputs (q/k/v, o, gate/up, "
            "down)",
            "activations": acts["formula"],
            "activation_per_layer_per_token": "see `activation_profiles`",
            "peak": "weights + optimizer + gradients + activations + overhead; 1 GPU without sharding: "
            "weights + optimizer + max(activations + autocast copies, gradients) + overhead",
        },
        "activation_profiles": {k: f"{a}*h + {b}*kv + {c}*f bytes" for k, (a, b, c) in ACTIVATION_PROFILES.items()},
        "sources": {
            "model_states": DEEPSPEED_SOURCE,
            "activations": "autograd saved-tensor count per op (method of Korthikanti et al. 2022) for HF Llama "
            "blocks with SDPA attention, checked with torch.autograd.graph.saved_tensors_hooks",
            "qlora": "Dettmers et al. 2023 (QLoRA): NF4 + double quantization = 4.127 bits per parameter",
            "overhead": inputs.overhead_source,
        },
    }


def memory_assumptions() -> dict:
    """The assumptions behind the memory numbers, for the plan's `assumptions` block."""
    return {
        "optimizer": "AdamW with two fp32 moments per trainable parameter",
        "model_states": f"ZeRO byte accounting of {DEEPSPEED_SOURCE}",
        "activations": "HF Llama-style blocks, SDPA/flash attention (no seq^2 score matrix), packed sequences "
        "without padding mask; gradient checkpointing off unless asked",
        "logits": "3 fp32 copies of the logits per token at the start of backward (logits, log-softmax, gradient)",
        "fsdp": "approximation: one FSDP unit per decoder block, next block prefetched, root (embeddings) unsharded",
        "fit": "fits = peak <= the GPU's marketed memory (GiB); usable memory is 1-6% lower",
        "overhead": "~1 GiB per GPU outside tensors (CUDA context, workspaces): an assumption, not a measurement",
        "allocator": "counts live tensor bytes, not allocator slack. On CPU, glibc's default malloc keeps freed "
        "activation memory resident (peak RSS up to 1.34x the estimate in benchmarks/plan_memory.py); "
        "DOMAINSMITH_CPU_MMAP_THRESHOLD=1048576 makes RSS follow live tensors (within 7%) at a step-time cost "
        "(train/cpu_allocator.py)",
    }
