"""The recipe's path end to end: train each stage (skipping what is up to date), evaluate every model variant on
the same items (evaluation.py), and summarize before/after. Each step is a plain function the CLI calls.

Run dir layout: <run_dir>/<stage>/ (manifest.json, adapter/ or model/, loss.jsonl), <run_dir>/eval/<variant>.json
(cached per variant), <run_dir>/eval.json, <run_dir>/summary.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .code_version import results_code_version
from .data.instructions import OnBadRecord
from .data.sources import LoadedSources, load_instruction_sources
from .errors import LeakageError
from .evaluate.leakage import find_overlaps, find_text_overlaps
from .evaluate.suites import LoadedSuites, load_suites, path_fingerprint
from .evaluation import evaluate_recipe
from .files import atomic_write_json, file_sha256, json_sha256, read_json
from .manifest import begin_stage, complete_stage, other_build_warning, stage_state
from .models import resolve_model
from .precision import describe_precision
from .recipe import Recipe

Log = Callable[[str], None]


@dataclass
class Variant:
    """A model to evaluate: base weights plus an optional adapter, identified by the fingerprint of its inputs."""

    name: str
    model_path: str
    adapter: str | None
    fingerprint: str


def _data_fingerprint(recipe: Recipe) -> list[dict]:
    if recipe.prepare is not None:
        # Training reads the prepared shards: their stats.json fingerprint covers sources, settings and rules.
        stats = recipe.prepared_dir / "stats.json"
        return [{"prepared": json.loads(stats.read_text())["fingerprint"] if stats.is_file() else None}]
    return [
        {"path": str(s.path), "role": s.role, "format": s.format, "sha256": file_sha256(recipe.resolve(s.path))}
        for s in recipe.data
    ]


def dir_identity(path: str) -> list:
    """Names, sizes and mtimes of a local model dir's files: cheap, and changes whenever the weights change."""
    p = Path(path)
    if not p.is_dir():
        return [path]  # a hub id: its name is all we know
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())


def base_variant(recipe: Recipe, log: Log = print) -> Variant:
    path = resolve_model(recipe.model, on_convert=log)
    return Variant("base", path, None, json_sha256({"model": recipe.model, "path": path, "files": dir_identity(path)}))


def read_training_data(recipe: Recipe, on_bad_record: OnBadRecord = "fail", log: Log = print) -> LoadedSources | None:
    """Every data source, read and checked once (None when the recipe names no data). Under `accelerate launch`,
    rank 0 prepares the data while the others wait, then they read what it wrote."""
    if not recipe.data:
        return None
    with main_process_first():
        return load_instruction_sources(recipe, on_bad_record, log)


def main_process_first():
    """Under `accelerate launch` / torchrun: rank 0 runs the block first (preparing what it writes), then the other
    ranks run it (finding it done). A plain context in a single process."""
    import contextlib
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    import torch
    from accelerate import PartialState

    # cpu= must match the Accelerator created later: the first PartialState fixes the backend (gloo on CPU).
    return PartialState(cpu=not torch.cuda.is_available()).main_process_first()


def check_no_leakage(
    recipe: Recipe, suites: LoadedSuites, sources: LoadedSources | None, log: Log = print
) -> list[dict]:
    """Refuse eval items that appear in training data, unless the recipe explicitly allows it (then report them).

    Questions (QA, multiple choice) must not be training prompts; held-out texts (perplexity) must not share a
    13-word run with any training turn. An SFT stage's null_space_texts count as training data here.
    """
    conversations = (sources.conversations if sources is not None else []) + _stage_conversations(recipe)
    if not suites or not conversations:
        return []
    overlaps = find_overlaps(suites.questions(), conversations)
    overlaps += find_text_overlaps(suites.texts, conversations)
    rows = [o.__dict__ for o in overlaps]
    if overlaps and not recipe.eval.allow_train_overlap:
        first = overlaps[0]
        raise LeakageError(
            f"{len(overlaps)} eval item(s) also appear in training data, e.g. suite '{first.suite}' item "
            f"'{first.item_id}' ({first.question!r}) at {first.train_source}:{first.train_line}. Remove them from "
            "training, or set eval.allow_train_overlap: true to report them instead of refusing."
        )
    if overlaps:
        log(f"warning: {len(overlaps)} eval items overlap training data (allowed by the recipe)")
    return rows


def _stage_conversations(recipe: Recipe) -> list:
    """What stages read besides the recipe's data, as conversations for the leakage check: preference pairs
    (prompt + each reply), RL prompts (prompt + gold answer) and SFT null_space_texts (one user turn per text; never
    trained on, but they decide what the adapters may not change)."""
    from .data.instructions import Conversation
    from .data.preferences import read_preferences
    from .data.verifiable import read_verifiable
    from .evaluate.perplexity import load_texts

    out = []
    for stage in recipe.stages:
        for path in stage.pairs if stage.type in ("dpo", "rm") else []:
            for pair in read_preferences(recipe.resolve(path), "skip").pairs:
                for reply in (pair.chosen, pair.rejected):
                    messages = [*pair.prompt, {"role": "assistant", "content": reply}]
                    out.append(Conversation(messages, pair.source, pair.line))
        for path in stage.prompts if stage.type == "grpo" else []:
            for item in read_verifiable(recipe.resolve(path), "skip").prompts:
                messages = [*item.prompt, {"role": "assistant", "content": item.answers[0]}]
                out.append(Conversation(messages, item.source, item.line))
        for path in stage.null_space_texts if stage.type == "sft" else []:
            texts = load_texts(recipe.resolve(path))
            out += [Conversation([{"role": "user", "content": text}], str(path), i) for i, text in enumerate(texts, 1)]
    return out


def _own_data_inputs(recipe: Recipe, stage, stage_fps: dict[str, str]) -> dict:
    """What a stage reads besides the recipe's data: its files' contents (an SFT stage's null_space_texts, a
    preference or RL stage's pairs or prompts), and the fingerprints of the rm stages it takes rewards from (a
    retrained reward model retrains the policy)."""
    if stage.type == "sft":
        texts = [path_fingerprint(recipe.resolve(p)) for p in stage.null_space_texts]
        return {"null_space_texts": texts} if texts else {}
    if stage.type in ("dpo", "rm"):
        files = [*stage.pairs, *([stage.heldout] if stage.heldout else [])]
        return {"pairs": [file_sha256(recipe.resolve(f)) for f in files]}
    if stage.type != "grpo":
        return {}
    files = [*stage.prompts, *([stage.heldout] if stage.heldout else [])]
    files += [Path(r.function.rsplit(":", 1)[0]) for r in stage.rewards if r.function]
    return {
        "prompts": [file_sha256(recipe.resolve(f)) for f in files],
        "reward_models": {r.model: stage_fps.get(r.model) for r in stage.rewards if r.model},
    }


def train_recipe(
    recipe: Recipe, on_bad_record: OnBadRecord = "fail", log: Log = print, show_progress: bool = True
) -> list[Variant]:
    """Train every stage in order; a stage whose inputs are unchanged is reused, one that died is resumed."""
    sources = read_training_data(recipe, on_bad_record, log)
    check_no_leakage(recipe, load_suites(recipe), sources, log)
    return _walk_stages(recipe, log, True, on_bad_record, show_progress, sources)


def existing_variants(recipe: Recipe, log: Log = print) -> list[Variant]:
    """The base model plus every stage already trained with the recipe's current inputs (nothing is trained)."""
    return _walk_stages(recipe, log, train=False)


def _walk_stages(
    recipe: Recipe,
    log: Log,
    train: bool,
    on_bad_record: OnBadRecord = "fail",
    show_progress: bool = True,
    sources: LoadedSources | None = None,
) -> list[Variant]:
    from .train.dpo import run_dpo
    from .train.grpo import run_grpo
    from .train.pretrain_stage import run_pretrain
    from .train.reward_model import run_reward_model
    from .train.sft import run_sft

    base = base_variant(recipe, log)
    variants = [base]
    input_path, parent_fp = base.model_path, base.fingerprint
    data_fp = _data_fingerprint(recipe) if recipe.stages else []
    stage_fps: dict[str, str] = {}
    code = results_code_version()
    for i, stage in enumerate(recipe.stages):
        # A later stage trains on this stage's full weights, so a LoRA stage followed by another is merged. A
        # reward model is no chat model: nothing continues from it, and it continues from its input.
        followed = i < len(recipe.stages) - 1
        if stage.type != "rm":
            stage = stage.model_copy(update={"merge": stage.merge or (stage.finetuning == "lora" and followed)})
        stage_dir = recipe.out_dir / stage.name
        inputs = {
            "model_path": input_path,
            "parent": parent_fp,
            # null_space_texts count by content (_own_data_inputs); unset, they leave older fingerprints as they were
            "stage": stage.model_dump(mode="json", exclude={"null_space_texts"} if stage.type == "sft" else None),
            "seed": recipe.seed,
            "data": data_fp,
        }
        inputs.update(_own_data_inputs(recipe, stage, stage_fps))
        fp = json_sha256(inputs)
        stage_fps[stage.name] = fp
        state = stage_state(stage_dir, fp)
        if state.status == "complete":
            log(f"stage '{stage.name}': up to date, reusing {stage_dir}")
            _log_other_build(log, stage.name, stage_dir, state.manifest, code)
            result = state.manifest["result"]
        elif not train:
            log(f"stage '{stage.name}': not trained with the current recipe (run `domainsmith train`); skipped")
            if stage.type == "rm":  # nothing continues from a reward model: later stages may still be current
                continue
            break
        else:
            verb = "resuming" if state.status == "running" else "training"
            how = f"{stage.finetuning} {stage.type}, {describe_precision(stage.precision)}"
            log(f"stage '{stage.name}': {verb} ({how}) -> {stage_dir}")
            started_by = code
            if state.status == "running":
                _log_other_build(log, stage.name, stage_dir, state.manifest, code)
                started_by = state.manifest.get("code")
            if is_main_process():
                begin_stage(stage_dir, fp, inputs, code)
            if stage.type == "sft":
                trained = run_sft(recipe, stage, input_path, stage_dir, on_bad_record, show_progress, sources)
            elif stage.type == "dpo":
                trained = run_dpo(recipe, stage, input_path, stage_dir, on_bad_record, show_progress, log)
            elif stage.type == "grpo":
                trained = run_grpo(recipe, stage, input_path, stage_dir, on_bad_record, show_progress, log)
            elif stage.type == "rm":
                trained = run_reward_model(recipe, stage, input_path, stage_dir, on_bad_record, show_progress, log)
            else:
                trained = run_pretrain(recipe, stage, input_path, stage_dir, show_progress, log)
            result = {"artifact": trained.artifact, "metrics": trained.metrics}
            if is_main_process():
                complete_stage(stage_dir, fp, inputs, result, started_by)
        artifact = stage_dir / result["artifact"]
        if stage.type == "rm":
            continue
        if result["artifact"] == "adapter":
            variants.append(Variant(stage.name, input_path, str(artifact), fp))
            next_input = str(stage_dir / "merged")
        else:
            variants.append(Variant(stage.name, str(artifact), None, fp))
            next_input = str(artifact)
        input_path, parent_fp = next_input, fp
    return variants


def _log_other_build(log: Log, name: str, stage_dir: Path, manifest: dict, code: str) -> None:
    warning = other_build_warning(name, stage_dir, manifest, code)
    if warning:
        log(warning)


def is_main_process() -> bool:
    """False on every rank but the first under `accelerate launch` / torchrun: only rank 0 writes manifests."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def stage_metrics(recipe: Recipe) -> dict[str, dict]:
    out = {}
    for stage in recipe.stages:
        path = recipe.out_dir / stage.name / "manifest.json"
        if path.is_file():
            out[stage.name] = read_json(path).get("result", {}).get("metrics", {})
    return out


def summarize(recipe: Recipe, report: dict) -> dict:
    """summary.json: per suite before/after/n/difference with its CI, the strategy matrix, each stage's metrics."""
    keys = ("before", "after", "n", "role", "kind", "metric", "flips", "diff")
    summary = {name: {k: c[k] for k in keys if k in c} for name, c in report["comparisons"].items()}
    summary["variants"] = {"before": report["before_variant"], "after": report["after_variant"]}
    summary["strategies"] = {row["strategy"]: {k: v for k, v in row.items() if not k.endswith(("_flips", "strategy"))}
                             for row in report["strategies"]}  # fmt: skip
    summary["forgetting_kl"] = {name: kl["kl_per_token"] for name, kl in report["forgetting"]["kl"].items()}
    summary["stages"] = stage_metrics(recipe)
    atomic_write_json(recipe.out_dir / "summary.json", summary)
    return summary


def evaluate_trained(recipe: Recipe, log: Log = print, show_progress: bool = True) -> dict:
    """`eval` without training: the base model and every stage already trained with the current recipe. Rewrites
    summary.json too, so it agrees with eval.json (e.g. after `--modes` added strategies)."""
    suites = load_suites(recipe)
    overlaps = check_no_leakage(recipe, suites, read_training_data(recipe, log=log) if suites else None, log)
    variants = existing_variants(recipe, log)
    report = evaluate_recipe(recipe, variants, log, show_progress, overlaps, suites, stage_metrics(recipe))
    summarize(recipe, report)
    return report


def run_recipe(recipe: Recipe, on_bad_record: OnBadRecord = "fail", log: Log = print, show_progress: bool = True):
    """Everything the recipe describes: train (reusing what is up to date), evaluate, summarize.

    Data and eval items are read once and shared by the leakage check, training and evaluation.
    """
    suites = load_suites(recipe)
    sources = read_training_data(recipe, on_bad_record, log)
    overlaps = check_no_leakage(recipe, suites, sources, log)
    variants = _walk_stages(recipe, log, True, on_bad_record, show_progress, sources)
    report = evaluate_recipe(recipe, variants, log, show_progress, overlaps, suites, stage_metrics(recipe))
    return summarize(recipe, report)
