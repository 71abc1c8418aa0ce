"""Evaluate every model variant in every mode on the same items, measure forgetting, compare, write eval.json.

A variant (base model, each trained stage) is scored on each suite in each mode (closed book, RAG, RAG with the
gold passage, few-shot); multiple-choice and perplexity suites score the model's own distribution, so they run in
closed mode only. Results are cached per (variant, mode) in <run_dir>/eval/<label>.json by the fingerprint of
everything they depend on. Forgetting is the paired flips on general suites plus the per-token KL divergence from
the base model on general prompts; every before/after difference carries a paired bootstrap 95% CI.
"""

from __future__ import annotations

from collections.abc import Callable

from .code_version import results_code_version
from .errors import LeakageError
from .evaluate.compare import compare_suites, strategy_matrix
from .evaluate.suites import LoadedSuites, suite_fingerprints
from .files import atomic_write_json, file_sha256, json_sha256, read_if_current
from .recipe import MCSuite, PerplexitySuite, QASuite, Recipe

Log = Callable[[str], None]

# Settings that change what a (variant, mode) evaluation computes; the rest (KL, bootstrap, harness) have their own.
_SCORING_EXCLUDE = {"modes", "kl_prompts", "bootstrap_resamples", "harness"}


def prepare_modes(recipe: Recipe, suites: LoadedSuites, log: Log = print, show_progress: bool = True):
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
        overlaps = find_overlaps(suites.questions(), conversations)
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


def variant_label(variant, mode: str) -> str:
    """'sft' for the closed-book model, 'sft+rag' for it with the KB, and so on."""
    return variant.name if mode == "closed" else f"{variant.name}+{mode}"


def _score_suite(recipe, suite, mode, suites: LoadedSuites, model, tokenizer, resources, bf16, advance) -> dict:
    from .evaluate.modes import annotate, mode_prompts
    from .evaluate.qa_suite import score_qa

    batch = recipe.eval.batch_size
    if isinstance(suite, MCSuite):
        from .evaluate.multiple_choice import score_mc

        items, dev = suites.mc[suite.name]
        return {"kind": "mc", **score_mc(model, tokenizer, items, dev, suite.num_fewshot, batch, bf16, advance)}
    if isinstance(suite, PerplexitySuite):
        from .evaluate.perplexity import perplexity

        texts = suites.texts[suite.name]
        # Perplexity windows run up to 1024 tokens where QA prompts are short: fewer rows per forward.
        result = perplexity(model, tokenizer, texts, suite.max_length, suite.stride, max(1, batch // 8), bf16, advance)
        return {"kind": "perplexity", **result}
    items = suites.qa[suite.name]
    chats, contexts = mode_prompts(mode, items, tokenizer, resources, suite.system)
    result = score_qa(model, tokenizer, items, suite.match, recipe.eval.max_new_tokens, batch, bf16, advance,
                      chats=chats)  # fmt: skip
    if suite.judge is not None:
        _judge(recipe, suite, items, result, bf16)
    return {"kind": "qa", **annotate(mode, result, contexts, resources.k)}


def _judge(recipe: Recipe, suite: QASuite, items, result: dict, bf16: bool) -> None:
    """Add the judge model's verdict per item and its accuracy, beside the string match's."""
    from .evaluate.judge import judge_answers, load_judge

    adapter = str(recipe.resolve(suite.judge.adapter)) if suite.judge.adapter else None
    tokenizer, model = load_judge(suite.judge.model, adapter)
    records = result["items"]
    scores = judge_answers(model, tokenizer, items, [r["prediction"] for r in records], recipe.eval.batch_size, bf16)
    for record, p_yes in zip(records, scores, strict=True):
        record["judge_p_yes"] = round(p_yes, 4)
        record["judge_correct"] = p_yes >= suite.judge.threshold
    n = len(records)
    result["judge"] = {
        "model": suite.judge.model,
        "accuracy": sum(r["judge_correct"] for r in records) / n,
        "agrees_with_match": sum(r["judge_correct"] == r["correct"] for r in records) / n,
    }


def _suite_size(suite, suites: LoadedSuites) -> int:
    if isinstance(suite, MCSuite):
        return len(suites.mc[suite.name][0])
    if isinstance(suite, PerplexitySuite):
        return len(suites.texts[suite.name])
    return len(suites.qa[suite.name])


def _evaluate_variant(recipe, variant, suites: LoadedSuites, suite_fp: dict[str, str], log, show_progress, resources,
                      mode_fingerprints):  # fmt: skip
    """Score one variant on every suite in every mode; cached per mode in <run_dir>/eval/<label>.json."""
    from .model_loading import load_for_inference
    from .precision import use_bf16

    settings = recipe.eval.model_dump(mode="json", exclude=_SCORING_EXCLUDE)
    bf16 = use_bf16("auto")
    code = results_code_version()  # changed scoring code rescores
    loaded = None
    out = {}
    for mode in recipe.eval.modes:
        label = variant_label(variant, mode)
        inputs = {"variant": variant.fingerprint, "suites": suite_fp, "settings": settings, "bf16": bf16, "code": code}
        # Only the suites that run in this mode count: other suites' files and settings must not void this cache.
        running = [s for s in recipe.eval.suites if s.runs_in(mode)]
        inputs["suites"] = {s.name: suite_fp[s.name] for s in running}
        inputs["settings"] = {**settings, "suites": [s.model_dump(mode="json", exclude={"modes"}) for s in running]}
        if mode != "closed":
            inputs.update(mode=mode, mode_inputs=mode_fingerprints[mode])
        fp = json_sha256(inputs)
        cache = recipe.out_dir / "eval" / f"{label}.json"
        cached = read_if_current(cache, fp)
        if cached is not None:
            log(f"eval '{label}': up to date, reusing {cache}")
            out[label] = cached["suites"]
            continue
        if loaded is None:
            loaded = load_for_inference(variant.model_path, variant.adapter)
        tokenizer, model = loaded
        results = {}
        for suite in recipe.eval.suites:
            if not suite.runs_in(mode):
                continue
            if mode == "rag_gold" and not any(it.gold_passage for it in suites.qa[suite.name]):
                log(f"eval '{label}' {suite.name}: skipped (its items have no gold_passage)")
                continue
            with progress_bar(f"eval {label}:{suite.name}", _suite_size(suite, suites), show_progress) as advance:
                result = _score_suite(recipe, suite, mode, suites, model, tokenizer, resources, bf16, advance)
            result["role"] = suite.role
            results[suite.name] = result
            log(f"eval '{label}' {suite.name}: {_one_line(result, resources.k)}")
        atomic_write_json(cache, {"fingerprint": fp, "variant": {**variant.__dict__, "mode": mode}, "suites": results})
        out[label] = results
    return out


def _one_line(result: dict, k: int) -> str:
    kind = result["kind"]
    if kind == "perplexity":
        return f"perplexity {result['perplexity']:.3f} over {result['tokens']} tokens"
    if kind == "mc":
        return f"acc {result['acc']:.3f}, acc_norm {result['acc_norm']:.3f} (n={result['n']})"
    extra = f", recall@{k} {result['retrieval'][f'recall@{k}']:.3f}" if "retrieval" in result else ""
    return f"{result['accuracy']:.3f} ({result['correct']}/{result['n']}){extra}"


class progress_bar:
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


# Per-suite keys copied into eval.json's `variants` table (per-item records go to `items`).
_SUITE_SUMMARY_KEYS = (
    "kind", "accuracy", "correct", "n", "role", "retrieval", "citations", "abstained", "exact_match", "f1", "judge",
    "acc", "acc_norm", "correct_norm", "perplexity", "nll_per_token", "tokens", "documents",
)  # fmt: skip


def evaluate_recipe(
    recipe: Recipe,
    variants: list,
    log: Log = print,
    show_progress: bool = True,
    overlaps=None,
    suites: LoadedSuites | None = None,
    stage_costs: dict[str, dict] | None = None,
) -> dict:
    """Score every variant in every mode on every suite (same items); compare the first and last variants
    (before/after training), measure drift from the base model, lay out all (variant, mode) pairs as a strategy
    matrix with their training cost; write eval.json."""
    from .evaluate.forgetting import kl_from_base
    from .evaluate.suites import load_suites

    suites = suites if suites is not None else load_suites(recipe)
    resources, mode_fps = prepare_modes(recipe, suites, log, show_progress)
    suite_fp = suite_fingerprints(recipe)  # hashed once: every variant's cache keys use them
    scored: dict[str, dict] = {}
    modes_of: dict[str, tuple] = {}
    for v in variants:
        scored.update(_evaluate_variant(recipe, v, suites, suite_fp, log, show_progress, resources, mode_fps))
        modes_of.update({variant_label(v, m): (v, m) for m in recipe.eval.modes})
    # Before/after compares the first and last variants closed-book, or in the first mode evaluated.
    compared_mode = "closed" if "closed" in recipe.eval.modes else recipe.eval.modes[0]
    reference, final = variant_label(variants[0], compared_mode), variant_label(variants[-1], compared_mode)
    kl = kl_from_base(recipe, variants, suites, scored, log, show_progress)
    harness = _harness(recipe, variants, log)
    report = {
        "before_variant": reference,
        "after_variant": final,
        "comparisons": compare_suites(recipe, scored[reference], scored[final]),
        "variants": {
            label: {
                "model": modes_of[label][0].model_path,
                "adapter": modes_of[label][0].adapter,
                "mode": modes_of[label][1],
                "suites": {k: {x: r[x] for x in _SUITE_SUMMARY_KEYS if x in r} for k, r in results.items()},
            }
            for label, results in scored.items()
        },
        "forgetting": {"kl": kl, "prompts": recipe.eval.kl_prompts},
        "strategies": strategy_matrix(scored, reference, modes_of, stage_costs or {}, kl, harness),
        "harness": harness,
        "train_eval_overlap": overlaps or [],
        "items": {label: {k: r["items"] for k, r in s.items() if "items" in r} for label, s in scored.items()},
    }
    atomic_write_json(recipe.out_dir / "eval.json", report)
    return report


def _harness(recipe: Recipe, variants: list, log: Log) -> dict:
    """lm-evaluation-harness tasks per closed-book variant, cached in <run_dir>/eval/<label>.harness.json."""
    settings = recipe.eval.harness
    if settings is None:
        return {}
    from .evaluate.lm_harness import SHIPPED_TASKS_DIR, run_harness
    from .evaluate.suites import path_fingerprint
    from .precision import use_bf16

    task_dirs = [recipe.resolve(p) for p in settings.task_dirs]
    bf16 = use_bf16("auto")
    code = results_code_version()
    tasks_fp = [path_fingerprint(d) for d in [SHIPPED_TASKS_DIR, *task_dirs]]  # the shipped tasks are data, not code
    out = {}
    for v in variants:
        inputs = {"variant": v.fingerprint, "settings": settings.model_dump(mode="json"), "bf16": bf16,
                  "task_dirs": tasks_fp, "code": code}  # fmt: skip
        fp = json_sha256(inputs)
        cache = recipe.out_dir / "eval" / f"{v.name}.harness.json"
        cached = read_if_current(cache, fp)
        if cached is not None:
            log(f"harness '{v.name}': up to date, reusing {cache}")
            out[v.name] = cached["results"]
            continue
        log(f"harness '{v.name}': {', '.join(settings.tasks)}")
        results = run_harness(v.model_path, settings.tasks, adapter=v.adapter, task_dirs=task_dirs,
                              num_fewshot=settings.num_fewshot, limit=settings.limit,
                              batch_size=settings.batch_size, bf16=bf16)  # fmt: skip
        atomic_write_json(cache, {"fingerprint": fp, "results": results})
        out[v.name] = results
    return out


__all__ = ["evaluate_recipe", "prepare_modes", "progress_bar", "variant_label"]
