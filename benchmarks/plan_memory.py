"""Peak memory of a real short LoRA and full SFT run of the default model on CPU, against the planner's estimate.

    .venv/bin/python benchmarks/plan_memory.py                      # batch 4 x 256 tokens, 3 optimizer steps each
    .venv/bin/python benchmarks/plan_memory.py --batch-size 2 --seq-len 512 --steps 2

Each run happens in its own subprocess so their memory does not mix: a baseline process (imports, a tiny model's
forward/backward/AdamW step to start the runtime), a LoRA run and a full fine-tuning run of SmolLM2-135M-Instruct,
trained the way domainsmith's SFT stage trains (bf16 autocast where the CPU has it, LoRA base weights in bf16,
fused AdamW, gradient clipping, zero_grad(set_to_none=True)) on random token ids of exactly --seq-len tokens.
Peak RSS is the child's own ru_maxrss. The estimate is `domainsmith.plan.memory.estimate_setup(..., "ddp")` for
one process, with the measured baseline as its overhead. Writes benchmarks/results/plan_memory.json.

Every run is measured under three glibc malloc settings, because RSS is not the same thing as live tensors:
- `default`: what domainsmith's training stages do on CPU by default: leave glibc as shipped. Its mmap threshold
  grows to 32 MiB after the first large free, so activation-sized tensors come from the heap, and freed heap
  memory mostly stays resident (retained and fragmented): peak RSS runs past the live peak.
- `bounded_rss`: DOMAINSMITH_CPU_MMAP_THRESHOLD=1048576, the opt-in of domainsmith.train.cpu_allocator: every
  tensor of 1 MiB or more is its own mapping, unmapped when freed, so RSS follows the live tensors the planner
  counts, at a step-time cost in page faults (seconds_per_step shows it).
- `mmap_64k`: MALLOC_MMAP_THRESHOLD_=65536, nearly every tensor mapped: RSS follows live tensors most closely,
  at a larger step-time cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "plan_memory.json"
GIB = 2**30


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _train_steps(model, params, args, bf16: bool, vocab: int) -> tuple[list[int], float]:
    """A few optimizer steps as domainsmith's SFT stage does them; RSS after each step and seconds per step."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(0)
    rss, started = [], time.time()
    for _ in range(args.steps):
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rss.append(_current_rss_bytes())
    return rss, (time.time() - started) / args.steps


def child(mode: str, args) -> dict:
    """Run inside the subprocess: 'baseline', 'lora' or 'full'. Returns what the parent records."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from domainsmith.precision import use_bf16
    from domainsmith.train.cpu_allocator import configure_for_training

    configure_for_training(on_cuda=False)  # as the SFT stage does on CPU: applies DOMAINSMITH_CPU_MMAP_THRESHOLD
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    bf16 = use_bf16("auto")
    if mode == "baseline":
        # Start the same runtime (autocast kernels, fused AdamW, thread pools) on a model of negligible size.
        tiny = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
        tiny = get_peft_model(tiny, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        tiny.train()
        params = [p for p in tiny.parameters() if p.requires_grad]
        _train_steps(tiny, params, argparse.Namespace(**{**vars(args), "steps": 2, "seq_len": 32}), bf16, 256)
        return {"peak_rss_bytes": _peak_rss_bytes(), "bf16": bf16}
    lora = mode == "lora"
    dtype = torch.bfloat16 if (lora and bf16) else torch.float32  # as domainsmith's sft stage loads the base
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)
    if lora:
        config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0,
                            target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    rss_after_load = _current_rss_bytes()
    vocab = model.config.vocab_size if not lora else model.base_model.model.config.vocab_size
    rss, seconds = _train_steps(model, params, args, bf16, vocab)
    return {
        "peak_rss_bytes": _peak_rss_bytes(),
        "rss_after_load_bytes": rss_after_load,
        "rss_after_each_step_bytes": rss,
        "seconds_per_step": round(seconds, 2),
        "trainable_params": sum(p.numel() for p in params),
        "bf16": bf16,
    }


MALLOC_MODES = {
    "default": {},
    "bounded_rss": {"DOMAINSMITH_CPU_MMAP_THRESHOLD": "1048576"},
    "mmap_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"},
}


def run_child(mode: str, args, malloc: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model-dir", args.model_dir, "--batch-size",
           str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--lora-rank",
           str(args.lora_rank), "--threads", str(args.threads)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "DOMAINSMITH_CPU_MMAP"))}
    env.update({"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **MALLOC_MODES[malloc]})
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate(method: str, args, bf16: bool, overhead_bytes: int) -> dict:
    """The planner's single-process ("ddp" on 1 device) peak for the same model, method, batch and precision."""
    from domainsmith.plan.memory import MemoryInputs, estimate_setup, trainable_params
    from domainsmith.plan.shapes import shape_from_config

    config_path = Path(args.model_dir) / "config.json"
    shape = shape_from_config(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    inputs = MemoryInputs(
        shape=shape,
        method=method,
        gpus=1,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        precision="bf16" if bf16 else "fp32",
        lora_rank=args.lora_rank,
        overhead_bytes=overhead_bytes,
        overhead_source="measured: peak RSS of the baseline process (imports + runtime start-up)",
    )
    return {**estimate_setup(inputs, "ddp"), "trainable_params_estimated": trainable_params(inputs)}


def measure(method: str, args, malloc: str, baseline: dict) -> dict:
    """One training run in its own process, next to the planner's estimate for the same setup."""
    measured = run_child(method, args, malloc)
    predicted = estimate(method, args, measured["bf16"], baseline["peak_rss_bytes"])
    ratio = predicted["peak_bytes"] / measured["peak_rss_bytes"]
    return {
        "measured_peak_rss_gib": round(measured["peak_rss_bytes"] / GIB, 3),
        "estimated_peak_gib": round(predicted["peak_bytes"] / GIB, 3),
        "ratio_estimated_over_measured": round(ratio, 3),
        "within_25_percent": abs(ratio - 1) <= 0.25,
        "estimate": {k: v for k, v in predicted.items() if k.endswith("_gib") or k == "peak_phase"},
        "trainable_params_measured": measured["trainable_params"],
        "trainable_params_estimated": predicted["trainable_params_estimated"],
        "rss_after_load_gib": round(measured["rss_after_load_bytes"] / GIB, 3),
        "rss_after_each_step_gib": [round(b / GIB, 3) for b in measured["rss_after_each_step_bytes"]],
        "seconds_per_step": measured["seconds_per_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["baseline", "lora", "full"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, args)) + "\n")
        return

    from domainsmith.models import resolve_model

    args.model_dir = resolve_model(args.model)
    results, baselines = {}, {}
    for malloc in MALLOC_MODES:
        baseline = run_child("baseline", args, malloc)
        baselines[malloc] = round(baseline["peak_rss_bytes"] / GIB, 3)
        results[malloc] = {m: measure(m, args, malloc, baseline) for m in ("lora", "full")}
    import peft
    import torch
    import transformers

    result = {
        "what": "peak RSS of short CPU training runs vs the planner's single-process estimate",
        "setup": {
            "model": args.model,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "steps": args.steps,
            "lora_rank": args.lora_rank,
            "threads": args.threads,
            "bf16_autocast": baseline["bf16"],
            "malloc_modes": {k: v or "glibc as shipped" for k, v in MALLOC_MODES.items()},
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "baseline_process_peak_rss_gib": baselines,
        "summary": {
            malloc: {m: runs[m]["ratio_estimated_over_measured"] for m in runs} for malloc, runs in results.items()
        },
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
