"""SFT throughput: domainsmith's SFT stage (packing, target-only logits) against a plain transformers Trainer + PEFT
baseline that pads every batch, on the demo's instruction data, side by side in one run.

    .venv/bin/python benchmarks/train_throughput.py                 # demo data, 1 epoch each
    .venv/bin/python benchmarks/train_throughput.py --examples 120  # a quicker look

Both sides: the default model (SmolLM2-135M-Instruct), the demo's LoRA (r 16, alpha 32, MLP only), learning rate
2e-3, batch size 2, max_seq_len 512, the same tokenized examples (the model's chat template, loss on assistant
tokens only), precision as domainsmith picks it for this machine. Each side runs in its own subprocess.
Reported: non-pad tokens per second of training (the Trainer's train() only: no loading or tokenizing), and
achieved model FLOP/s (LoRA: 4 x parameters per token, forward plus the backward for activations; the frozen
weights get no weight gradients) as a fraction of this machine's measured matmul peak, bf16 and fp32.
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "train_throughput.json"
DEMO = REPO / "examples" / "demo" / "data"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["gate_proj", "up_proj", "down_proj"]}
HYPER = {"learning_rate": 2e-3, "batch_size": 2, "max_seq_len": 512, "epochs": 1}


def _conversations(limit: int | None) -> list:
    from domainsmith.data.instructions import read_instructions

    convs = []
    for name in ("domain_train.jsonl", "general_replay.jsonl"):
        convs += read_instructions(DEMO / name).conversations
    return convs[:limit] if limit else convs


def _examples(limit: int | None):
    """The demo's domain + general instruction data, tokenized exactly as domainsmith's SFT stage does."""
    from domainsmith.data.chat_format import tokenize_conversations
    from domainsmith.model_loading import load_tokenizer
    from domainsmith.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(path)
    convs = _conversations(limit)
    examples, stats = tokenize_conversations(tok, convs, HYPER["max_seq_len"], ["domain"] * len(convs))
    return path, tok, examples, stats


def _ours(limit: int | None) -> dict:
    from domainsmith.recipe import parse_recipe
    from domainsmith.train.sft import run_sft

    path, _, _, stats = _examples(limit)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"messages": c.messages}) + "\n" for c in _conversations(limit)))
        recipe = parse_recipe({
            "name": "bench", "model": path, "run_dir": tmp, "data": [{"path": str(data)}],
            "stages": [{"type": "sft", "finetuning": "lora", "lora": LORA, "packing": True, "save_steps": 10**6,
                        "warmup_ratio": 0.0, **HYPER}],
        })  # fmt: skip
        result = run_sft(recipe, recipe.stages[0], path, Path(tmp) / "sft", show_progress=False)
    m = result.metrics
    return {"train_seconds": m["train_seconds"], "tokens": stats.tokens, "examples": stats.examples,
            "steps": m["steps"], "rows": m["packed_rows"], "attention": m["packed_attention"],
            "precision": m["precision"], "parameters": m["parameters"]["total"]}  # fmt: skip


def _baseline(limit: int | None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from domainsmith.precision import use_bf16

    path, tok, examples, stats = _examples(limit)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=LORA["target_modules"],
                        task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, config)
    bf16 = use_bf16("auto")
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, use_cpu=not torch.cuda.is_available(), per_device_train_batch_size=HYPER["batch_size"],
            learning_rate=HYPER["learning_rate"], num_train_epochs=HYPER["epochs"], bf16=bf16, report_to="none",
            save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0,
        )  # fmt: skip
        dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))  # fmt: skip
        started = time.time()
        out = trainer.train()
        seconds = time.time() - started
    return {"train_seconds": round(seconds, 1), "tokens": stats.tokens, "examples": stats.examples,
            "steps": out.global_step, "precision": "bf16" if bf16 else "fp32",
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip


def _matmul_peak() -> dict:
    """GFLOP/s of large square matmuls on all cores, bf16 and fp32 (best of 10): the machine's practical peak."""
    import torch

    from domainsmith.precision import matmul_gflops

    out = {
        name: round(matmul_gflops(dtype, size=2048, repeats=10), 2)
        for name, dtype in (("bf16", "bfloat16"), ("fp32", "float32"))
    }
    return {"gflops": out, "threads": torch.get_num_threads(), "size": 2048}


def _child(side: str, limit: int | None) -> None:
    result = {"ours": _ours, "baseline": _baseline}[side](limit) if side != "peak" else _matmul_peak()
    print("RESULT " + json.dumps(result))


def _run_child(side: str, limit: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", side] + (["--examples", str(limit)] if limit else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=None, help="first N demo conversations (default: all)")
    parser.add_argument("--child", choices=["ours", "baseline", "peak"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.examples)
        return
    load_before = os.getloadavg()[0]
    peak = _run_child("peak", None)
    sides = {side: _run_child(side, args.examples) for side in ("baseline", "ours")}
    for r in sides.values():
        r["non_pad_tokens_per_s"] = round(r["tokens"] / r["train_seconds"], 1)
        flops = 4 * r["parameters"] * r["non_pad_tokens_per_s"]  # LoRA: frozen weights, no weight gradients
        r["model_gflops"] = round(flops / 1e9, 2)
        r["fraction_of_peak"] = {k: round(flops / 1e9 / v, 3) for k, v in peak["gflops"].items()}
    speedup = sides["ours"]["non_pad_tokens_per_s"] / sides["baseline"]["non_pad_tokens_per_s"]
    result = {
        "what": "SFT tokens/s: domainsmith (packing, target-only logits) vs transformers Trainer + PEFT, padded",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": round(load_before, 2)},
        "hyperparameters": {**HYPER, "lora": LORA, "model": "smollm2-135m-instruct"},
        "matmul_peak": peak,
        "sides": sides,
        "speedup_non_pad_tokens_per_s": round(speedup, 2),
        "target_speedup_met": speedup >= 1.3,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    for name, r in sides.items():
        print(f"{name:9s} {r['non_pad_tokens_per_s']:8.1f} non-pad tokens/s  {r['steps']} steps  "
              f"{r['model_gflops']} GFLOP/s = {r['fraction_of_peak']} of peak")  # fmt: skip
    print(f"speedup {speedup:.2f}x (target 1.3x); matmul peak {peak['gflops']} GFLOP/s")


if __name__ == "__main__":
    main()
