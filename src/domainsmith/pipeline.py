"""The recipe's path end to end: train each stage (skipping what is up to date), evaluate every model variant on
the same items, and summarize before/after. Each step is a plain function the CLI calls.

Run dir layout: <run_dir>/<stage>/ (manifest.json, adapter/ or model/, loss.jsonl), <run_dir>/eval/<variant>.json
(cached per variant), <run_dir>/eval.json, <run_dir>/summary.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data.instructions import OnBadRecord
from .data.sources import LoadedSources, load_instruction_sources
from .errors import LeakageError
from .evaluate.leakage import find_overlaps
from .evaluate.qa_suite import QAItem, load_qa_items, paired_flips
from .files import atomic_write_json, file_sha256, json_sha256, read_json
from .manifest import begin_stage, complete_stage, stage_state
from .models import resolve_model
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
    return [
        {"path": str(s.path), "role": s.role, "format": s.format, "sha256": file_sha256(recipe.resolve(s.path))}
        for s in recipe.data
    ]


def _dir_identity(path: str) -> list:
    """Names, sizes and mtimes of a local model dir's files: cheap, and changes whenever the weights change."""
    p = Path(path)
    if not p.is_dir():
        return [path]  # a hub id: its name is all we know
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())


def base_variant(recipe: Recipe, log: Log = print) -> Variant:
    path = resolve_model(recipe.model, on_convert=log)
    return Variant("base", path, None, json_sha256({"model": recipe.model, "path": path, "files": _dir_identity(path)}))


def load_suites(recipe: Recipe) -> dict[str, list[QAItem]]:
    return {s.name: load_qa_items(recipe.resolve(s.path)) for s in recipe.eval.suites}


def read_training_data(recipe: Recipe, on_bad_record: OnBadRecord = "fail") -> LoadedSources | None:
    """Every data source, read and checked once (None when the recipe names no data)."""
    return load_instruction_sources(recipe, on_bad_record) if recipe.data else None


def check_no_leakage(
    recipe: Recipe, suites: dict[str, list[QAItem]], sources: LoadedSources | None, log: Log = print
) -> list[dict]:
    """Refuse eval items that appear in training data, unless the recipe explicitly allows it (then report them)."""
    if not suites or sources is None:
        return []
    overlaps = find_overlaps(suites, sources.conversations)
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


def train_recipe(
    recipe: Recipe, on_bad_record: OnBadRecord = "fail", log: Log = print, show_progress: bool = True
) -> list[Variant]:
    """Train every stage in order; a stage whose inputs are unchanged is reused, one that died is resumed."""
    sources = read_training_data(recipe, on_bad_record)
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
    from .train.sft import run_sft

    base = base_variant(recipe, log)
    variants = [base]
    input_path, parent_fp = base.model_path, base.fingerprint
    data_fp = _data_fingerprint(recipe) if recipe.stages else []
    for i, stage in enumerate(recipe.stages):
        is_last = i == len(recipe.stages) - 1
        # A later stage trains on this stage's full weights, so a LoRA stage followed by another is merged.
        stage = stage.model_copy(update={"merge": stage.merge or (stage.finetuning == "lora" and not is_last)})
        stage_dir = recipe.out_dir / stage.name
        inputs = {
            "model_path": input_path,
            "parent": parent_fp,
            "stage": stage.model_dump(mode="json"),
            "seed": recipe.seed,
            "data": data_fp,
        }
        fp = json_sha256(inputs)
        state = stage_state(stage_dir, fp)
        if state.status == "complete":
            log(f"stage '{stage.name}': up to date, reusing {stage_dir}")
            result = state.manifest["result"]
        elif not train:
            log(f"stage '{stage.name}': not trained with the current recipe (run `domainsmith train`); skipped")
            break
        else:
            verb = "resuming" if state.status == "running" else "training"
            log(f"stage '{stage.name}': {verb} ({stage.finetuning} {stage.type}) -> {stage_dir}")
            begin_stage(stage_dir, fp, inputs)
            sft = run_sft(recipe, stage, input_path, stage_dir, on_bad_record, show_progress, sources)
            result = {"artifact": sft.artifact, "metrics": sft.metrics}
            complete_stage(stage_dir, fp, inputs, result)
        artifact = stage_dir / result["artifact"]
        if result["artifact"] == "adapter":
            variants.append(Variant(stage.name, input_path, str(artifact), fp))
            next_input = str(stage_dir / "merged")
        else:
            variants.append(Variant(stage.name, str(artifact), None, fp))
            next_input = str(artifact)
        input_path, parent_fp = next_input, fp
    return variants


def stage_metrics(recipe: Recipe) -> dict[str, dict]:
    out = {}
    for stage in recipe.stages:
        path = recipe.out_dir / stage.name / "manifest.json"
        if path.is_file():
            out[stage.name] = read_json(path).get("result", {}).get("metrics", {})
    return out


def prepare_modes(recipe: Recipe, suites: dict[str, list[QAItem]], log: Log = print, show_progress: bool = True):
    """Build (incrementally) the KB and embed the ICL examples when eval.modes asks for them.

    Returns the loaded resources and a fingerprint per mode, so cached evaluations follow KB / example changes.
    The ICL examples go through the same leakage check as training data: a solved example may not be an eval item.
    """
    from .evaluate.modes import ModeResources

    res, fingerprints = ModeResources(), {"closed": None}
    modes, kb = recipe.eval.modes, recipe.kb
    if kb is not None:
        res.k, res.rag_budget = kb.k, kb.budget_tokens
    if "rag" in modes:
        from .kb import build_kb, open_kb

        report = build_kb(
            [recipe.resolve(p) for p in kb.documents],
            recipe.kb_dir,
            embedding_model=kb.embedding_model,
            show_progress=show_progress,
        )
        docs = report.to_json()["documents"]
        log(f"kb {recipe.kb_dir}: {report.chunks_total} chunks ({docs['added']} added, {docs['updated']} updated, "
            f"{docs['removed']} removed, {docs['unchanged']} unchanged documents)")  # fmt: skip
        res.kb = open_kb(recipe.kb_dir, kb.embedding_model)
        kb_fp = file_sha256(recipe.kb_dir / "kb.json")
        fingerprints["rag"] = {"kb": kb_fp, "k": kb.k, "budget": kb.budget_tokens}
    if "rag_gold" in modes:
        fingerprints["rag_gold"] = {"budget": res.rag_budget}
    if "icl" in modes:
        from .data.instructions import read_instructions
        from .evaluate.leakage import find_overlaps
        from .infer.few_shot import ExamplePool
        from .kb.embedding import embedder_for

        path = recipe.resolve(recipe.icl.examples)
        conversations = read_instructions(path).conversations  # read once: leakage check and example pool
        overlaps = find_overlaps(suites, conversations)
        if overlaps:
            first = overlaps[0]
            raise LeakageError(
                f"{len(overlaps)} eval item(s) appear among the ICL examples, e.g. suite '{first.suite}' item "
                f"'{first.item_id}' at {first.train_source}:{first.train_line}; an example would hand over the answer"
            )
        embedder = embedder_for(kb.embedding_model if kb else None)
        res.examples = ExamplePool.from_conversations(path, embedder, conversations)
        res.icl_k, res.icl_budget = recipe.icl.k, recipe.icl.budget_tokens
        fingerprints["icl"] = {"examples": file_sha256(path), "embedder": embedder.fingerprint,
                               "k": recipe.icl.k, "budget": recipe.icl.budget_tokens}  # fmt: skip
    return res, fingerprints


def variant_label(variant: Variant, mode: str) -> str:
    """'sft' for the closed-book model, 'sft+rag' for it with the KB, and so on."""
    return variant.name if mode == "closed" else f"{variant.name}+{mode}"


def _evaluate_variant(
    recipe: Recipe,
    variant: Variant,
    suites: dict[str, list[QAItem]],
    log: Log,
    show_progress: bool,
    resources=None,
    mode_fingerprints: dict | None = None,
) -> dict[str, dict]:
    """Score one variant on every suite in every mode; cached per mode in <run_dir>/eval/<label>.json."""
    from .evaluate.modes import ModeResources, annotate, mode_prompts
    from .evaluate.qa_suite import score_qa
    from .model_loading import load_for_inference
    from .precision import use_bf16

    resources = resources or ModeResources()
    mode_fingerprints = mode_fingerprints or {"closed": None}
    settings = recipe.eval.model_dump(mode="json", exclude={"modes"})
    bf16 = use_bf16("auto")
    suite_fp = {s.name: file_sha256(recipe.resolve(s.path)) for s in recipe.eval.suites}
    loaded = None
    out = {}
    for mode in recipe.eval.modes:
        label = variant_label(variant, mode)
        inputs = {"variant": variant.fingerprint, "suites": suite_fp, "settings": settings, "bf16": bf16}
        if mode != "closed":  # closed-book keys stay as before modes existed, so old caches still apply
            inputs.update(mode=mode, mode_inputs=mode_fingerprints[mode])
        fp = json_sha256(inputs)
        cache = recipe.out_dir / "eval" / f"{label}.json"
        if cache.is_file():
            cached = read_json(cache)
            if cached.get("fingerprint") == fp:
                log(f"eval '{label}': up to date, reusing {cache}")
                out[label] = cached["suites"]
                continue
        if loaded is None:
            loaded = load_for_inference(variant.model_path, variant.adapter)
        tokenizer, model = loaded
        results = {}
        for suite in recipe.eval.suites:
            items = suites[suite.name]
            if mode == "rag_gold" and not any(it.gold_passage for it in items):
                log(f"eval '{label}' {suite.name}: skipped (its items have no gold_passage)")
                continue
            chats, contexts = mode_prompts(mode, items, tokenizer, resources, suite.system)
            with _progress(f"eval {label}:{suite.name}", len(items), show_progress) as advance:
                result = score_qa(model, tokenizer, items, suite.match, recipe.eval.max_new_tokens,
                                  recipe.eval.batch_size, bf16, advance, chats=chats)  # fmt: skip
            result = annotate(mode, result, contexts, resources.k)
            result["role"] = suite.role
            results[suite.name] = result
            extra = ""
            if "retrieval" in result:
                extra = f", recall@{resources.k} {result['retrieval'][f'recall@{resources.k}']:.3f}"
            log(f"eval '{label}' {suite.name}: {result['accuracy']:.3f} ({result['correct']}/{result['n']}){extra}")
        atomic_write_json(cache, {"fingerprint": fp, "variant": {**variant.__dict__, "mode": mode}, "suites": results})
        out[label] = results
    return out


class _progress:
    """A rich progress bar over items, or a no-op."""

    def __init__(self, description: str, total: int, enabled: bool):
        self.description, self.total, self.enabled = description, total, enabled

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()


_SUITE_SUMMARY_KEYS = ("accuracy", "correct", "n", "role", "retrieval", "citations", "abstained")


def evaluate_recipe(
    recipe: Recipe,
    variants: list[Variant],
    log: Log = print,
    show_progress: bool = True,
    overlaps=None,
    suites: dict[str, list[QAItem]] | None = None,
) -> dict:
    """Score every variant in every mode on every suite (same items); compare the first and last variants
    closed-book (before/after training) and lay out all (variant, mode) pairs as a strategy matrix; write eval.json."""
    suites = suites if suites is not None else load_suites(recipe)
    resources, mode_fps = prepare_modes(recipe, suites, log, show_progress)
    scored: dict[str, dict] = {}
    modes_of: dict[str, tuple[Variant, str]] = {}
    for v in variants:
        scored.update(_evaluate_variant(recipe, v, suites, log, show_progress, resources, mode_fps))
        modes_of.update({variant_label(v, m): (v, m) for m in recipe.eval.modes})
    # Before/after compares the first and last variants closed-book, or in the first mode evaluated.
    compared_mode = "closed" if "closed" in recipe.eval.modes else recipe.eval.modes[0]
    reference, final = variant_label(variants[0], compared_mode), variant_label(variants[-1], compared_mode)
    comparisons = {}
    for suite in recipe.eval.suites:
        before, after = scored[reference][suite.name], scored[final][suite.name]
        comparisons[suite.name] = {
            "role": suite.role,
            "before": before["accuracy"],
            "after": after["accuracy"],
            "n": before["n"],
            "flips": paired_flips(before, after),
        }
    report = {
        "before_variant": reference,
        "after_variant": final,
        "comparisons": comparisons,
        "variants": {
            label: {
                "model": modes_of[label][0].model_path,
                "adapter": modes_of[label][0].adapter,
                "mode": modes_of[label][1],
                "suites": {k: {x: r[x] for x in _SUITE_SUMMARY_KEYS if x in r} for k, r in results.items()},
            }
            for label, results in scored.items()
        },
        "strategies": strategy_matrix(scored, reference),
        "train_eval_overlap": overlaps or [],
        "items": {label: {k: r["items"] for k, r in s.items()} for label, s in scored.items()},
    }
    atomic_write_json(recipe.out_dir / "eval.json", report)
    return report


def strategy_matrix(scored: dict[str, dict], reference: str) -> list[dict]:
    """One row per (variant, mode): accuracy per suite, and items learned / forgotten against the reference."""
    rows = []
    for label, results in scored.items():
        row = {"strategy": label}
        for suite, r in results.items():
            row[suite] = r["accuracy"]
            if label != reference and suite in scored[reference]:
                row[f"{suite}_flips"] = paired_flips(scored[reference][suite], r)
        rows.append(row)
    return rows


def summarize(recipe: Recipe, report: dict) -> dict:
    """summary.json: per suite before/after/n, plus each stage's training metrics."""
    summary = {
        name: {"before": c["before"], "after": c["after"], "n": c["n"], "role": c["role"], "flips": c["flips"]}
        for name, c in report["comparisons"].items()
    }
    summary["variants"] = {"before": report["before_variant"], "after": report["after_variant"]}
    summary["strategies"] = {row["strategy"]: {k: v for k, v in row.items() if not k.endswith(("_flips", "strategy"))}
                             for row in report["strategies"]}  # fmt: skip
    summary["stages"] = stage_metrics(recipe)
    atomic_write_json(recipe.out_dir / "summary.json", summary)
    return summary


def evaluate_trained(recipe: Recipe, log: Log = print, show_progress: bool = True) -> dict:
    """`eval` without training: the base model and every stage already trained with the current recipe."""
    suites = load_suites(recipe)
    overlaps = check_no_leakage(recipe, suites, read_training_data(recipe) if suites else None, log)
    return evaluate_recipe(recipe, existing_variants(recipe, log), log, show_progress, overlaps, suites)


def run_recipe(recipe: Recipe, on_bad_record: OnBadRecord = "fail", log: Log = print, show_progress: bool = True):
    """Everything the recipe describes: train (reusing what is up to date), evaluate, summarize.

    Data and eval items are read once and shared by the leakage check, training and evaluation.
    """
    suites = load_suites(recipe)
    sources = read_training_data(recipe, on_bad_record)
    overlaps = check_no_leakage(recipe, suites, sources, log)
    variants = _walk_stages(recipe, log, True, on_bad_record, show_progress, sources)
    report = evaluate_recipe(recipe, variants, log, show_progress, overlaps, suites)
    return summarize(recipe, report)
