"""Drift from the reference model during preference and RL training (dpo, grpo), with a ceiling that warns or stops.

Every `kl.every` optimizer steps (and at the last), the mean per-token KL(reference || policy) on a fixed set of
held-out sequences; the first measure over `kl.ceiling` is an event: a warning, or a stop that keeps the weights
trained so far. Each measure is appended to a JSONL file (the run's drift curve).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from transformers import TrainerCallback


class KLGuard(TrainerCallback):
    """Measures KL(reference || policy) on held-out sequences every N steps; warns or stops at the ceiling."""

    def __init__(self, stage, tokenizer, sequences, bf16: bool, log_path: Path, log, seed: int, reference=None):
        if len(sequences) > stage.kl.max_sequences:  # the same seeded subset at every measure, and on resume
            sequences = random.Random(seed).sample(sequences, stage.kl.max_sequences)
        self.stage, self.tokenizer, self.sequences, self.bf16 = stage, tokenizer, sequences, bf16
        self.log_path, self.log = log_path, log
        self.reference = reference  # else the trainer's ref_model (None with LoRA: the adapter switched off)
        self.trainer = None
        self.rows: list[dict] = []
        self.fired = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.stage.kl.every and state.global_step != state.max_steps:
            return
        from ..evaluate.kl_divergence import mean_token_kl

        reference = self.reference if self.reference is not None else getattr(self.trainer, "ref_model", None)
        kl = mean_token_kl(self.trainer.model, self.tokenizer, self.sequences, base_model=reference,
                           bf16=self.bf16)["kl_per_token"]  # fmt: skip
        row = {"step": state.global_step, "kl_per_token": kl}
        ceiling = self.stage.kl.ceiling
        if ceiling is not None and kl > ceiling and self.fired is None:
            self.fired = {**row, "ceiling": ceiling, "action": self.stage.kl.action}
            row["event"] = self.fired
            self.log(f"stage '{self.stage.name}': KL from the reference {kl:.4f} nats/token > ceiling "
                     f"{ceiling} at step {state.global_step}"
                     + ("; stopping" if self.stage.kl.action == "stop" else ""))  # fmt: skip
            if self.stage.kl.action == "stop":
                control.should_training_stop = True
        self.rows.append(row)
        if state.is_world_process_zero:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def resumed_measures(guard: KLGuard, log_path: Path) -> None:
    """After a resume the file holds the measures of every session (the callback only saw this one's)."""
    guard.rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    guard.fired = guard.fired or next((r["event"] for r in guard.rows if "event" in r), None)
