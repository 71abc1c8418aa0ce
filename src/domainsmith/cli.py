"""The `domainsmith` command: parse arguments, call the library, print. User errors exit 2 without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import JsonOpt, err, log, out, print_json, quiet_libraries, user_errors
from .cli_compare import compare
from .cli_data import data_app
from .cli_kb import kb_app
from .cli_mix import mix_app
from .cli_report import report
from .errors import DomainsmithError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build vertical-domain LLMs and measure them.")
models_app = typer.Typer(no_args_is_help=True, help="Model aliases and the conversion cache.")
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(data_app, name="data")
app.add_typer(mix_app, name="mix")
app.command("report")(report)
app.command("compare")(compare)

RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML")]
BadOpt = Annotated[
    str,
    typer.Option(
        "--on-bad-record",
        help="fail (default): stop at the first malformed record; skip: write it to rejects.jsonl and go on",
    ),
]


ModesOpt = Annotated[
    str | None,
    typer.Option(
        "--modes",
        help="comma-separated eval modes, replacing the recipe's eval.modes: closed, rag (the recipe's kb), "
        "rag_gold (each item's gold passage), icl (the recipe's icl examples)",
    ),
]


def _silent(message: str) -> None:
    pass


def _with_modes(recipe, modes: str | None):
    return recipe if modes is None else recipe.with_eval_modes([m.strip() for m in modes.split(",") if m.strip()])


def _bad_record_mode(value: str) -> str:
    if value not in ("fail", "skip"):
        raise DomainsmithError(f"--on-bad-record must be 'fail' or 'skip', got '{value}'")
    return value


def _summary_table(summary: dict) -> Table:
    table = Table(
        title="before / after on the same items",
        caption="change with its paired-bootstrap 95% CI; +/-: items learned / forgotten",
    )
    for col in ("suite", "metric", "n", "before", "after", "change [95% CI]", "+/-"):
        table.add_column(col, justify="left" if col in ("suite", "metric") else "right", no_wrap=col != "metric")
    for name, row in summary.items():
        if not isinstance(row, dict) or "before" not in row or not isinstance(row["before"], float | int):
            continue
        metric = row.get("metric", "accuracy")
        digits = 2 if metric == "perplexity" else 3
        delta = row["after"] - row["before"]
        better = delta >= 0 if metric != "perplexity" else delta <= 0
        ci = (row.get("diff") or {}).get("ci95")
        change = f"{delta:+.{digits}f}" + (f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else "")
        flips = row.get("flips")
        table.add_row(
            name,
            _short_metric(metric),
            str(row["n"]),
            f"{row['before']:.{digits}f}",
            f"{row['after']:.{digits}f}",
            f"[{'green' if better else 'red'}]{change}[/]",
            f"{flips['learned']}/{flips['forgotten']}" if flips else "-",
        )
    return table


def _short_metric(metric: str) -> str:
    return {"accuracy": "acc", "perplexity": "ppl"}.get(metric, metric)


def _strategy_table(rows: list[dict], recipe) -> Table:
    """Rows = strategies (variant x mode), columns = each suite's headline metric, drift and training cost.

    Suites no row has a score for (e.g. log-likelihood suites when only RAG ran) get no column.
    """
    from .evaluate.compare import HEADLINE

    suites = [s for s in recipe.eval.suites if any(row.get(s.name) is not None for row in rows)]
    table = Table(title=f"strategies ({recipe.out_dir / 'eval.json'}); ^ higher is better, v lower")
    table.add_column("strategy", no_wrap=True)
    for suite in suites:
        metric, higher = HEADLINE[suite.kind]
        header = f"{suite.name.replace('_', ' ')} {_short_metric(metric)} {'^' if higher else 'v'}"
        table.add_column(header, justify="right", overflow="fold")
    show_kl = any(row.get("kl_per_token") is not None for row in rows)
    if show_kl:
        table.add_column("KL/tok", justify="right")
    table.add_column("train s", justify="right")
    for row in rows:
        cells = ["-" if row.get(s.name) is None else f"{row[s.name]:.3f}" for s in suites]
        if show_kl:
            kl = row.get("kl_per_token")
            cells.append("-" if kl is None else f"{kl:.3f}")
        table.add_row(row["strategy"], *cells, f"{row['train_seconds']:.0f}")
    return table


@app.command()
@user_errors
def run(recipe: RecipeArg, json_out: JsonOpt = False, on_bad_record: BadOpt = "fail", modes: ModesOpt = None):
    """Train every stage, evaluate base and trained models on the same items, write summary.json."""
    from .pipeline import run_recipe
    from .recipe import load_recipe

    quiet_libraries()
    r = _with_modes(load_recipe(recipe), modes)
    summary = run_recipe(r, _bad_record_mode(on_bad_record), log, show_progress=not json_out)
    if json_out:
        print_json(summary)
    else:
        out.print(_summary_table(summary))
        if len(summary["strategies"]) > 2:
            out.print(_strategy_table([{"strategy": k, **v} for k, v in summary["strategies"].items()], r))
        out.print(f"summary: {r.out_dir / 'summary.json'}   details: {r.out_dir / 'eval.json'}")


@app.command()
@user_errors
def train(recipe: RecipeArg, json_out: JsonOpt = False, on_bad_record: BadOpt = "fail"):
    """Train the recipe's stages (up-to-date stages are reused; an interrupted stage resumes)."""
    from .pipeline import is_main_process, stage_metrics, train_recipe
    from .recipe import load_recipe

    quiet_libraries()
    r = load_recipe(recipe)
    main = is_main_process()  # under accelerate launch / torchrun only rank 0 talks
    variants = train_recipe(r, _bad_record_mode(on_bad_record), log if main else _silent, show_progress=not json_out)
    result = {"variants": [v.__dict__ for v in variants], "stages": stage_metrics(r)}
    if not main:
        return
    if json_out:
        print_json(result)
    else:
        for v in variants[1:]:
            m = result["stages"].get(v.name, {})
            out.print(
                f"{v.name}: {m.get('finetuning')} loss {m.get('train_loss', float('nan')):.4f}, "
                f"{m.get('steps')} steps, {m.get('train_seconds')} s -> {v.adapter or v.model_path}"
            )


@app.command("eval")
@user_errors
def eval_cmd(recipe: RecipeArg, json_out: JsonOpt = False, modes: ModesOpt = None):
    """Evaluate the base model and every trained stage on the recipe's suites, in every eval mode; write eval.json
    and rewrite summary.json to match."""
    from .pipeline import evaluate_trained
    from .recipe import load_recipe

    quiet_libraries()
    r = _with_modes(load_recipe(recipe), modes)
    report = evaluate_trained(r, log, show_progress=not json_out)
    if json_out:
        print_json({k: v for k, v in report.items() if k != "items"})
        return
    out.print(_strategy_table(report["strategies"], r))


@app.command()
@user_errors
def plan(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML: inspect its data and model (optional)")] = None,
    params: Annotated[str | None, typer.Option("--params", help="model parameters: 7e9, 7B, 1.3B, 175B")] = None,
    tokens: Annotated[str | None, typer.Option("--tokens", help="training tokens: 300B, 2T, 1e12")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU from the catalog: H100, A100-80G, 910B ...")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="number of GPUs (default 1, or detected)")] = None,
    mfu: Annotated[float, typer.Option("--mfu", help="model FLOPs utilisation, a fraction of the peak")] = 0.4,
    price_per_gpu_hour: Annotated[
        float | None, typer.Option("--price-per-gpu-hour", help="price of one GPU-hour, any currency")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="full | freeze | lora | qlora")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="sequences per GPU per micro-step")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="tokens per sequence")] = None,
    gpu_file: Annotated[
        Path | None, typer.Option("--gpu-file", help="YAML/JSON: NAME: {peak_tflops, memory_gib, bf16, source}")
    ] = None,
    knowledge_changes_often: Annotated[
        bool, typer.Option("--knowledge-changes-often", help="the domain knowledge changes often")
    ] = False,
    must_cite: Annotated[bool, typer.Option("--must-cite", help="answers must cite their sources")] = False,
    budget_gpu_hours: Annotated[
        float | None, typer.Option("--budget-gpu-hours", help="GPU-hours you can spend")
    ] = None,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="size activations with gradient checkpointing")
    ] = False,
    json_out: JsonOpt = False,
):
    """Plan before spending GPUs: strategy advice, training FLOPs / GPU-hours / cost, per-GPU memory."""
    from .plan import PlanRequest, plan_command, render_plan

    result = plan_command(
        PlanRequest(
            recipe=recipe,
            params=params,
            tokens=tokens,
            gpu=gpu,
            gpus=gpus,
            mfu=mfu,
            price_per_gpu_hour=price_per_gpu_hour,
            method=method,
            batch_size=batch_size,
            seq_len=seq_len,
            gpu_file=gpu_file,
            knowledge_changes_often=knowledge_changes_often,
            needs_citations=must_cite,
            budget_gpu_hours=budget_gpu_hours,
            grad_checkpointing=grad_checkpointing,
        )
    )
    if json_out:
        print_json(result)
    else:
        render_plan(result, out)


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="alias, HF model dir, .gguf file or hub id")]
AdapterOpt = Annotated[Path | None, typer.Option("--adapter", "-a", help="PEFT adapter dir")]


@app.command()
@user_errors
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    model: ModelOpt = "smollm2-135m-instruct",
    adapter: AdapterOpt = None,
    mode: Annotated[
        str, typer.Option(help="closed: the model alone; rag: with --kb sources; icl: with --examples as few-shot")
    ] = "closed",
    kb: Annotated[Path | None, typer.Option("--kb", help="knowledge base dir (domainsmith kb build)")] = None,
    examples: Annotated[Path | None, typer.Option(help="instruction file of solved examples (--mode icl)")] = None,
    k: Annotated[int, typer.Option("-k", help="rag: chunks to retrieve; icl: examples at most")] = 5,
    budget_tokens: Annotated[int, typer.Option(help="generator tokens for sources / examples")] = 1024,
    system: Annotated[str | None, typer.Option(help="system prompt (default: the model template's own)")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 256,
    json_out: JsonOpt = False,
):
    """Answer one question (greedy decoding): closed book, from a knowledge base with citations, or few-shot."""
    from .infer.answer import answer_question

    if mode not in ("closed", "rag", "icl"):
        raise typer.BadParameter(f"--mode must be closed, rag or icl, got '{mode}'")
    quiet_libraries()
    result = answer_question(
        question, model, adapter, mode=mode, kb_dir=kb, examples=examples, k=k, budget_tokens=budget_tokens,
        system=system, max_new_tokens=max_new_tokens, on_convert=log,
    )  # fmt: skip
    if json_out:
        print_json(result)
        return
    out.print(result["answer"], highlight=False, markup=False)
    for c in result.get("citations", []):
        out.print(escape(f"[{c['number']}] {c['source']}"), style="dim", highlight=False)


@app.command()
@user_errors
def chat(
    model: ModelOpt = "smollm2-135m-instruct",
    adapter: AdapterOpt = None,
    system: Annotated[str | None, typer.Option(help="system prompt (default: the model template's own)")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per reply at most")] = 512,
):
    """Interactive chat with streaming replies. Empty line or Ctrl-D quits; /reset clears the history."""
    from .infer.generation import stream_reply
    from .model_loading import load_for_inference

    quiet_libraries()
    tok, lm = load_for_inference(model, adapter, on_convert=log)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    start = list(history)
    err.print("[dim]chat: empty line or Ctrl-D quits, /reset clears history[/]")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if not line.strip():
            break
        if line.strip() == "/reset":
            history = list(start)
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("bot> ")
        reply = []
        for piece in stream_reply(lm, tok, history, max_new_tokens, temperature):
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply.append(piece)
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply).strip()})


@models_app.command("list")
@user_errors
def models_list(json_out: JsonOpt = False):
    """Show model aliases, whether their weights package is installed and whether they are converted."""
    from .models import alias_status, domainsmith_home

    rows = alias_status()
    if json_out:
        print_json({"home": str(domainsmith_home()), "aliases": rows})
        return
    table = Table(title=f"model aliases (cache: {domainsmith_home()})")
    for col in ("alias", "installed", "converted", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["alias"],
            "yes" if row["package_installed"] else f"no: {row['install']}",
            "yes" if row["converted"] else "no (converted on first use)",
            row["description"],
        )
    out.print(table)


@models_app.command("convert")
@user_errors
def models_convert(name: Annotated[str, typer.Argument(help="alias or .gguf file")]):
    """Convert an alias or GGUF file to an HF model dir in the cache now (otherwise done on first use)."""
    from .models import resolve_model

    quiet_libraries()
    out.print(resolve_model(name, on_convert=log))


if __name__ == "__main__":
    app()
