"""`domainsmith kb build|search`: parse, call domainsmith.kb, print. User errors exit 2 without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import JsonOpt, err, out, print_json, quiet_libraries, user_errors
from .errors import DomainsmithError

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge base: ingest documents, hybrid (dense + BM25) search.")

KbOpt = Annotated[Path, typer.Option("--kb", help="knowledge-base directory")]
EmbeddingOpt = Annotated[
    str | None,
    typer.Option(
        "--embedding-model",
        help="local sentence-transformers model dir (default: the KB's own, or all-MiniLM-L6-v2 for a new KB)",
    ),
]


@kb_app.command("build")
@user_errors
def build(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (recursive): .md .txt .html .pdf .jsonl")],
    kb: KbOpt,
    on_bad_record: Annotated[
        str,
        typer.Option(
            "--on-bad-record",
            help="fail (default): stop, write nothing; skip: leave bad documents out, list them in DIR/rejects.jsonl",
        ),
    ] = "fail",
    embedding_model: EmbeddingOpt = None,
    child_tokens: Annotated[int, typer.Option(help="embedding-model tokens per searchable chunk, at most")] = 128,
    parent_tokens: Annotated[int, typer.Option(help="embedding-model tokens per passage returned, at most")] = 512,
    json_out: JsonOpt = False,
):
    """Add new and changed documents to the KB, remove vanished ones; unchanged ones are not re-embedded."""
    from .kb import ChunkingConfig, build_kb

    quiet_libraries()
    try:
        chunking = ChunkingConfig(child_tokens=child_tokens, parent_tokens=parent_tokens)
    except ValueError as exc:
        raise DomainsmithError(f"--child-tokens/--parent-tokens: {exc}") from None
    report = build_kb(
        paths,
        kb,
        embedding_model=embedding_model,
        on_bad_record=on_bad_record,  # validated by build_kb
        chunking=chunking,
        show_progress=not json_out,
    )
    for bad in report.rejected:
        err.print(f"[yellow]skipped[/] {escape(bad.where)}: {escape(bad.reason)}", highlight=False, soft_wrap=True)
    if json_out:
        print_json(report.to_json())
        return
    out.print(
        f"{kb}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.unchanged} unchanged documents; {report.chunks_embedded} chunks embedded, "
        f"{report.chunks_total} in the KB ({report.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


@kb_app.command("search")
@user_errors
def search(
    query: Annotated[str, typer.Argument(help="the question or keywords")],
    kb: KbOpt,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="number of chunks to return")] = 5,
    embedding_model: EmbeddingOpt = None,
    reranker: Annotated[
        Path | None, typer.Option("--reranker", help="local cross-encoder model dir to rerank the top candidates")
    ] = None,
    json_out: JsonOpt = False,
):
    """Hybrid search: dense + BM25 fused by reciprocal rank, best first."""
    from .kb import open_kb

    quiet_libraries()
    hits = open_kb(kb, embedding_model, reranker_model=reranker).search(query, k)
    if json_out:
        print_json([hit.to_json() for hit in hits])
        return
    table = Table(title=f"{len(hits)} hits for {escape(query)!r}", show_lines=True)
    for column in ("#", "score", "source", "heading", "text"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left", overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", escape(hit.source), escape(hit.heading_path), escape(hit.text))
    out.print(table)
