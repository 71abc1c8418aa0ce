"""Pretraining (`pt`: a fresh model from a config) and continued pretraining (`cpt`) on packed raw text, on
accelerate: one process on a CPU, DDP / DeepSpeed / FSDP under `accelerate launch` with no change.

The loop is ours (not the HF Trainer) because exact resume and spike rollback both need the data position in our
hands: batch k of the run is a pure function of (seed, k), so a checkpoint stores k and nothing about samplers.
- Every `save_steps` steps, and on SIGTERM, a checkpoint (model, optimizer, RNG states, trainer state) is written
  atomically; the same command resumes from the last one and continues the same loss trajectory.
- The spike guard checks each step's loss and gradient norm before the optimizer step. On a spike it restores
  the last checkpoint, skips every batch from that checkpoint up to and including the spike, optionally cuts the
  learning rate, and writes the event to events.jsonl.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DomainsmithError
from ..files import atomic_write_text
from .checkpoints import checkpoint_dirs, load_checkpoint, save_checkpoint
from .document_attention import document_attention
from .packing import PackedData, collate
from .schedules import lr_multiplier
from .spike_guard import SpikeGuard


class TrainingInterrupted(DomainsmithError):
    """Stopped by SIGTERM after writing a checkpoint; the same command resumes."""


@dataclass
class PretrainResult:
    artifact: str
    metrics: dict


def _batch_indices(packed: PackedData, cursor: int, global_batch: int, seed: int, shuffle: bool) -> np.ndarray:
    """The sequences of global batch number `cursor`: epoch-wise seeded permutations (or the packed order), last
    partial batch dropped."""
    per_epoch = packed.num_sequences // global_batch
    epoch, within = divmod(cursor, per_epoch)
    start, stop = within * global_batch, (within + 1) * global_batch
    if not shuffle:
        return np.arange(start, stop)
    return _epoch_order(packed.num_sequences, seed, epoch)[start:stop].copy()  # a copy: the cached order stays put


@functools.lru_cache(maxsize=1)
def _epoch_order(num_sequences: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's seeded order, drawn once per epoch rather than at every step (a large corpus packs into
    millions of sequences)."""
    return np.random.default_rng([seed, epoch]).permutation(num_sequences)


def _param_groups(model, stage) -> list[dict]:
    """AdamW groups: no weight decay on norms and biases; embeddings and LM head at `embedding_lr_ratio` x lr."""
    groups: dict[tuple[float, float], list] = {}
    embedding_ids = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            embedding_ids |= {id(p) for p in module.parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # ZeRO-3 builds the model partitioned (flat placeholders); ds_shape is the parameter's real shape.
        decay = 0.0 if len(getattr(p, "ds_shape", p.shape)) < 2 else stage.weight_decay
        scale = stage.embedding_lr_ratio if id(p) in embedding_ids and stage.embedding_lr_ratio else 1.0
        groups.setdefault((decay, scale), []).append(p)
    return [
        {"params": ps, "weight_decay": decay, "lr": stage.learning_rate * scale, "lr_scale": scale}
        for (decay, scale), ps in groups.items()
    ]


class _Logs:
    """metrics.jsonl and events.jsonl (main process), rows after a resumed step dropped so none appear twice; the
    same scalars as TensorBoard event files in <stage>/tensorboard (`tensorboard --logdir runs/<name>`)."""

    def __init__(self, stage_dir: Path, enabled: bool, resumed_step: int) -> None:
        self.metrics, self.events, self.enabled = stage_dir / "metrics.jsonl", stage_dir / "events.jsonl", enabled
        self.board = None
        if enabled:
            from tensorboardX import SummaryWriter

            # purge_step: a resumed run overwrites the steps it repeats instead of drawing them twice.
            self.board = SummaryWriter(str(stage_dir / "tensorboard"), purge_step=resumed_step + 1)
        if enabled and self.metrics.is_file():
            rows = [ln for ln in self.metrics.read_text().splitlines() if json.loads(ln)["step"] <= resumed_step]
            atomic_write_text(self.metrics, "".join(r + "\n" for r in rows))

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

    def _append(self, path: Path, row: dict) -> None:
        if self.enabled:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def metric(self, row: dict) -> None:
        self._append(self.metrics, row)
        if self.board is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.board.add_scalar(f"train/{key}", row[key], row["step"])

    def event(self, row: dict) -> None:
        self._append(self.events, row)
        if self.board is not None:
            self.board.add_text("spike_guard", json.dumps(row), row["step"])


class _Sigterm:
    """Remember a SIGTERM instead of dying mid-step; the loop checkpoints and stops at the next step boundary."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, a SIGTERM kills as usual
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.received = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_packed(
    accelerator,
    model,
    packed: PackedData,
    stage,
    stage_dir: Path,
    seed: int,
    show_progress: bool = True,
    log=print,
) -> tuple:
    """Run (or resume) the optimizer steps of `stage` on `packed`; return (prepared model, metrics). `model` comes
    in unprepared."""
    import torch

    if accelerator.gradient_accumulation_steps != stage.grad_accum:
        raise DomainsmithError(
            f"stage '{stage.name}': the accelerator accumulates {accelerator.gradient_accumulation_steps} "
            f"micro-batches but the stage says grad_accum {stage.grad_accum}: build it with make_accelerator"
        )
    stage_dir.mkdir(parents=True, exist_ok=True)
    world = accelerator.num_processes
    global_batch = stage.batch_size * stage.grad_accum * world
    per_epoch = packed.num_sequences // global_batch
    if per_epoch == 0:
        raise DomainsmithError(
            f"stage '{stage.name}': {packed.num_sequences} packed sequences of {packed.seq_len} tokens are fewer "
            f"than one global batch ({global_batch} = batch_size x grad_accum x processes)"
        )
    total = stage.max_steps or math.ceil(stage.epochs * per_epoch)
    warmup = stage.warmup_steps if stage.warmup_steps is not None else round(stage.warmup_ratio * total)
    optimizer = torch.optim.AdamW(
        _param_groups(model, stage), lr=stage.learning_rate, betas=(stage.adam_beta1, stage.adam_beta2)
    )
    _fill_deepspeed_auto(accelerator, stage)
    model, optimizer = accelerator.prepare(model, optimizer)
    guard_cfg = stage.spike_guard
    guard = SpikeGuard(guard_cfg.window, guard_cfg.k_sigma, guard_cfg.min_history) if guard_cfg.enabled else None
    ckpt_root = stage_dir / "checkpoints"
    state = {"step": 0, "cursor": 0, "lr_scale": 1.0, "guard": {}, "skipped": [], "tokens": 0}
    existing = checkpoint_dirs(ckpt_root)
    if existing:
        state = load_checkpoint(accelerator, existing[-1])
        log(f"resuming from {existing[-1].name} (step {state['step']}, data batch {state['cursor']})")
    if guard is not None:
        guard.load_state_dict(state["guard"])
    logs = _Logs(stage_dir, accelerator.is_main_process, state["step"])
    if guard is not None and not existing:
        save_checkpoint(accelerator, ckpt_root, 0, {**state, "guard": guard.state_dict()}, stage.keep_checkpoints)
        if getattr(accelerator, "is_fsdp2", False):
            # Saving FSDP2's optimizer state materializes Adam's step counters; left in place they make the first
            # update count as the second (a smaller step than DDP takes). Empty state is what a fresh run has.
            optimizer.optimizer.state.clear()

    rollbacks, events = 0, []
    started = time.time()
    tokens_at_start = state["tokens"]
    progress = _progress(show_progress and accelerator.is_main_process, stage.name, total, state["step"])
    rank = accelerator.process_index
    # Document packing on CPU: attention per document instead of a dense block-diagonal mask over the row.
    per_document = document_attention(accelerator.unwrap_model(model), enabled=packed.mode == "document")
    with _Sigterm() as sigterm, progress as bar, contextlib.closing(logs), per_document:
        while state["step"] < total:
            batch_ids = _batch_indices(packed, state["cursor"], global_batch, seed, stage.shuffle)
            model.train()
            # The LR is set before the micro-batches: under DeepSpeed the engine steps inside the last backward.
            multiplier = lr_multiplier(state["step"], total, warmup, stage.schedule, stage.min_lr_ratio,
                                       stage.decay_ratio) * state["lr_scale"]  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = stage.learning_rate * group["lr_scale"] * multiplier
            loss_sum = torch.zeros((), device=accelerator.device)
            for m in range(stage.grad_accum):
                lo = (m * world + rank) * stage.batch_size
                rows = [packed.sequence(int(i)) for i in batch_ids[lo : lo + stage.batch_size]]
                batch = {k: v.to(accelerator.device) for k, v in collate(rows, packed.mode).items()}
                # accumulate(): no gradient sync before the last micro-batch (DDP), the accumulation boundary
                # (DeepSpeed); accelerator.backward divides the loss by grad_accum.
                with accelerator.accumulate(model), accelerator.autocast():
                    loss = model(**batch, use_cache=False).loss
                    accelerator.backward(loss)
                loss_sum += loss.detach() / stage.grad_accum
            loss_value = accelerator.reduce(loss_sum, reduction="mean").item()
            grad_norm = _clip_or_read_grad_norm(accelerator, model, stage.max_grad_norm)
            reason = guard.check(loss_value, grad_norm) if guard is not None else None
            if reason is not None:
                optimizer.zero_grad(set_to_none=True)
                rollbacks += 1
                event = _roll_back(accelerator, ckpt_root, state, guard, stage, reason, loss_value, log)
                events.append(event)
                logs.event(event)
                if rollbacks > guard_cfg.max_rollbacks:
                    raise DomainsmithError(
                        f"stage '{stage.name}': {rollbacks} loss spikes; stopping (spike_guard.max_rollbacks). "
                        f"Lower the learning rate or inspect the skipped batches in {stage_dir / 'events.jsonl'}"
                    )
                state["lr_scale"] = event["lr_scale"]
                save_checkpoint(accelerator, ckpt_root, state["step"], {**state, "guard": guard.state_dict()},
                                stage.keep_checkpoints)  # fmt: skip
                continue
            optimizer.step()  # a no-op under DeepSpeed, whose engine stepped in the last backward
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["cursor"] += 1
            state["tokens"] += global_batch * packed.seq_len
            elapsed = time.time() - started
            row = {"step": state["step"], "loss": loss_value, "lr": stage.learning_rate * multiplier,
                   "grad_norm": grad_norm, "tokens": state["tokens"],
                   "tokens_per_s": round((state["tokens"] - tokens_at_start) / max(elapsed, 1e-9), 1)}  # fmt: skip
            logs.metric(row)
            if world > 1:  # every rank's view of the (all-reduced) loss: they must agree, or decisions diverge
                with open(stage_dir / f"metrics.rank{rank}.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state["step"], "loss": loss_value, "grad_norm": grad_norm}) + "\n")
            bar.advance(row)
            stop = _any_rank(accelerator, sigterm.received)
            if state["step"] % stage.save_steps == 0 or stop or state["step"] == total:
                guard_state = guard.state_dict() if guard is not None else {}
                save_checkpoint(accelerator, ckpt_root, state["step"], {**state, "guard": guard_state},
                                stage.keep_checkpoints)  # fmt: skip
            if stop:
                raise TrainingInterrupted(
                    f"stage '{stage.name}': stopped by SIGTERM after step {state['step']} (checkpoint written); "
                    "run the same command again to resume"
                )
    return model, {
        "steps": state["step"],
        "train_loss": _last_loss(stage_dir) if accelerator.is_main_process else None,
        "tokens": state["tokens"],
        "train_seconds": round(time.time() - started, 1),
        "rollbacks": len(events),
        "skipped_batches": state["skipped"],
        "lr_scale": state["lr_scale"],
    }


def make_accelerator(stage, bf16: bool):
    """The Accelerator a pt/cpt stage runs on: gradient accumulation by our micro-batch loop, not a dataloader."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import GradientAccumulationPlugin

    # AcceleratorState is a process-wide singleton that refuses another precision once set, and an earlier stage
    # of the same run (a bf16 SFT Trainer, say) may have set it. Each stage picks its own precision: start from a
    # fresh one. PartialState (the launcher's process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    plugin = GradientAccumulationPlugin(num_steps=stage.grad_accum, sync_with_dataloader=False)
    return Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        cpu=not torch.cuda.is_available(),
        gradient_accumulation_plugin=plugin,
    )


def _fill_deepspeed_auto(accelerator, stage) -> None:
    """DeepSpeed's "auto" batch values are normally read off a prepared dataloader; this loop has none, so the
    stage's own values go in (micro-batch size, accumulation steps, clipping)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    values = {
        "train_micro_batch_size_per_gpu": stage.batch_size,
        "gradient_accumulation_steps": stage.grad_accum,
        "gradient_clipping": stage.max_grad_norm,
        "train_batch_size": stage.batch_size * stage.grad_accum * accelerator.num_processes,
    }
    for key, value in values.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
        elif key != "gradient_clipping" and config[key] != value:
            # The loop's batches and accumulation come from the stage; a different fixed value in the JSON would
            # make DeepSpeed step at other boundaries than the loop (silently wrong updates).
            raise DomainsmithError(
                f"stage '{stage.name}': the DeepSpeed config fixes {key} = {config[key]} but the stage gives "
                f'{value}: set it to "auto" or to the stage\'s value'
            )


def _clip_or_read_grad_norm(accelerator, model, max_norm: float) -> float:
    """Clip and return the global gradient norm; under DeepSpeed the engine clipped it already, so read it.
    A spike found after DeepSpeed's step is still undone: the rollback restores the checkpoint before it."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        norm = accelerator.deepspeed_engine_wrapped.get_global_grad_norm()
    else:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm) if norm is not None else 0.0


def _roll_back(accelerator, ckpt_root: Path, state: dict, guard, stage, reason: str, loss: float, log) -> dict:
    """Restore the last checkpoint and move the data position past the spike; return the event."""
    spike_cursor, spike_step = state["cursor"], state["step"] + 1
    threshold = guard.threshold()
    last = checkpoint_dirs(ckpt_root)[-1]
    restored = load_checkpoint(accelerator, last)
    skipped = [restored["cursor"], spike_cursor]  # data batches [from, to], inclusive
    state.update(restored)
    state["cursor"] = spike_cursor + 1
    state["skipped"] = [*restored.get("skipped", []), skipped]
    guard.load_state_dict(restored["guard"])
    lr_scale = restored["lr_scale"] * stage.spike_guard.lr_cut
    event = {
        "step": spike_step,
        "loss": loss if math.isfinite(loss) else str(loss),
        "threshold": threshold,
        "reason": reason,
        "action": f"rolled back to {last.name}, skipped data batches {skipped[0]}-{skipped[1]}"
        + (f", learning rate x{stage.spike_guard.lr_cut:g}" if stage.spike_guard.lr_cut != 1 else ""),
        "batches_skipped": skipped[1] - skipped[0] + 1,
        "lr_scale": lr_scale,
    }
    log(f"spike guard: step {spike_step}: {reason}; {event['action']}")
    return event


def _any_rank(accelerator, flag: bool) -> bool:
    import torch

    value = torch.tensor(1.0 if flag else 0.0, device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _last_loss(stage_dir: Path) -> float | None:
    path = stage_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["loss"] if lines else None


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def advance(self, row: dict) -> None:
        pass


class _Bar(_NoBar):
    """A rich progress bar with loss, tokens/s and ETA."""

    def __init__(self, name: str, total: int, done: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(f"{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task(name, total=total, completed=done, info="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def advance(self, row: dict) -> None:
        info = f"loss {row['loss']:.3f}  {row['tokens_per_s']:,.0f} tok/s"
        self.progress.update(self.task, completed=row["step"], info=info)


def _progress(enabled: bool, name: str, total: int, done: int):
    return _Bar(name, total, done) if enabled else _NoBar()


def remove_checkpoints(stage_dir: Path) -> None:
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
