"""`domainsmith data prepare|inspect`: parse, call domainsmith.data, print. User errors exit 2 without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import JsonOpt, err, log, out, print_json, quiet_libraries, user_errors
from .errors import DomainsmithError

data_app = typer.Typer(no_args_is_help=True, help="Data: clean, deduplicate, decontaminate and mix; inspect files.")


def _progress_bar(enabled: bool):
    """A rich bar over input bytes (cleaning), then the dedup/write phase; a no-op callback when disabled."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    if not enabled:
        return None, lambda phase, done, total: None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            label = {"clean": "clean + dedup keys", "dedup": "dedup, mix, write"}.get(phase, phase)
            tasks[phase] = bar.add_task(label, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    return bar, update


def _sources_table(stats: dict) -> Table:
    table = Table(title=f"data prepare -> {stats['out_dir']}", caption="records; tokens kept in parentheses")
    for col in ("source", "role", "in", "kept", "removed (by rule)", "rejected"):
        table.add_column(col, justify="left" if col in ("source", "role", "removed (by rule)") else "right")
    for row in stats["sources"]:
        removed = ", ".join(f"{rule} {e['records']}" for rule, e in row["removed"].items()) or "-"
        kept = f"{row['kept']['records']:,}" + (f" ({row['kept']['tokens']:,})" if stats.get("tokens") else "")
        table.add_row(escape(row["source"]), row["role"], f"{row['records_in']:,}", kept, removed, str(row["rejected"]))
    return table


def _print_summary(stats: dict) -> None:
    out.print(_sources_table(stats))
    d = stats["dedup"]
    out.print(
        f"dedup: {d['exact_duplicates']:,} exact, {d['near_duplicates']:,} near duplicates in {d['near_clusters']:,} "
        f"clusters (Jaccard >= {d['threshold']}, character {d['ngram']}-grams"
        + (f", {d['banding']['bands']} bands x {d['banding']['rows']} rows" if d.get("banding") else "")
        + ")"
    )
    dc = stats["decontamination"]
    out.print(f"decontamination: {dc['hits']} records share a {dc['ngram']}-word run with the eval sets")
    if stats["mix"]:
        for role, r in stats["mix"]["roles"].items():
            out.print(
                f"mix: {role} {stats['mix']['realized_share'][role]:.1%} of tokens "
                f"(target {stats['mix']['target_share'][role]:.1%}), {r['action']}"
            )
    o = stats["output"]
    share = ", ".join(f"{r} {s:.1%}" for r, s in o["token_share"].items()) if stats.get("tokens") else "not counted"
    out.print(f"output: {o['records']:,} records in {len(o['shards'])} {o['format']} shard(s); token share {share}")
    if not stats["accounting"]["balanced"]:
        err.print("[bold red]accounting does not balance[/] (records in != kept + removed + rejected): a bug")


@data_app.command("prepare")
@user_errors
def prepare(
    recipe_path: Annotated[Path, typer.Argument(help="recipe YAML with data: sources and a prepare: section")],
    on_bad_record: Annotated[
        str,
        typer.Option(
            "--on-bad-record",
            help="fail (default): stop at the first malformed record; skip: write it to rejects.jsonl and go on",
        ),
    ] = "fail",
    mix_from: Annotated[
        Path | None,
        typer.Option(help="mix at the domain share a mix_search.json recommends (replaces prepare.mix's shares)"),
    ] = None,
    json_out: JsonOpt = False,
):
    """Clean, deduplicate, decontaminate and mix every data source; write shards, stats.json and rejects.jsonl."""
    from .data.prepare import prepare_data
    from .recipe import load_recipe

    if on_bad_record not in ("fail", "skip"):
        raise DomainsmithError(f"--on-bad-record must be 'fail' or 'skip', got '{on_bad_record}'")
    quiet_libraries()
    recipe = load_recipe(recipe_path)
    if mix_from is not None:
        from .mixsearch.apply import mix_from_search

        recipe = mix_from_search(recipe, mix_from)
        mix = recipe.prepare.mix
        log(f"mix from {mix_from}: domain {mix.domain:.1%}, general {mix.general:.1%}. train and run prepare with "
            f"the recipe's own mix: put `mix: {{domain: {mix.domain}, general: {mix.general}}}` under prepare: in "
            "the recipe to train on this one")  # fmt: skip
    bar, update = _progress_bar(not json_out)
    if bar is not None:
        with bar:
            stats = prepare_data(recipe, on_bad_record, progress=update, log=log)
    else:
        stats = prepare_data(recipe, on_bad_record, log=log)
    if json_out:
        print_json(stats)
    else:
        _print_summary(stats)


@data_app.command("inspect")
@user_errors
def inspect(
    path: Annotated[Path, typer.Argument(help="a data file, or a folder of them")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto, alpaca, sharegpt, messages, text, jsonl or parquet")
    ] = "auto",
    text_field: Annotated[str, typer.Option(help="field holding the text of jsonl / parquet text records")] = "text",
    model: Annotated[
        str | None, typer.Option(help="count tokens with this model's tokenizer (alias, dir or hub id)")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="records longer than this are listed as problems")] = 4096,
    json_out: JsonOpt = False,
):
    """Format, record count, token-length histogram, language mix and problems (with file and line)."""
    from .data.inspect_file import inspect_data_file

    valid = ("auto", "alpaca", "sharegpt", "messages", "text", "jsonl", "parquet")
    if fmt not in valid:
        raise DomainsmithError(f"--format must be one of {', '.join(valid)}, got '{fmt}'")
    tokenizer = None
    if model is not None:
        quiet_libraries()
        from .model_loading import load_tokenizer
        from .models import resolve_model

        tokenizer = load_tokenizer(resolve_model(model, on_convert=log))
    report = inspect_data_file(path, fmt, text_field, tokenizer, max_tokens)
    if json_out:
        print_json(report)
        return
    shapes = ", ".join(f"{k} {v:,}" for k, v in report["shapes"].items()) or "none"
    out.print(
        f"{escape(report['path'])}: {report['files']} file(s), {report['records']:,} records ({shapes}), "
        f"{report['blank_lines']} blank lines, encodings {report['encodings']}"
    )
    t = report["tokens"]
    out.print(f"tokens ({t['counted_with']}): total {t['total']:,}, mean {t['mean']}, max {t['max']:,}")
    hist = Table(title="tokens per record")
    hist.add_column("tokens")
    hist.add_column("records", justify="right")
    for row in t["histogram"]:
        if row["records"]:
            hist.add_row(row["tokens"], f"{row['records']:,}")
    out.print(hist)
    langs = ", ".join(f"{k} {v:.1%}" for k, v in list(report["languages"].items())[:8])
    out.print(f"languages: {langs or 'none'}")
    for kind, entry in report["problems"].items():
        if entry["count"]:
            out.print(f"[yellow]{kind}[/]: {entry['count']:,}")
            for row in entry["first"][:5]:
                out.print(f"  {escape(row['where'])}: {escape(row['reason'])}", soft_wrap=True)
